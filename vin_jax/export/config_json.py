"""A run's config.json (`config.to_json_best_effort`, written by `train` and `export`) -> a ConfigDict.

JSON has no tuples and writes 1.0-valued floats that a hand edit may turn into ints, so the values are laid
onto `configs/base.py`, which gives every field its type: lists become tuples where the field is a tuple,
ints become floats where it is a float, and a value of another type fails naming the field. Fields the JSON
lacks (added to base.py after the run) keep base.py's default; fields base.py lacks (removed since, or
added by a custom config) are kept, lists as tuples.
"""
from __future__ import annotations

import pathlib

import ml_collections

from vin_jax.export import ExportError, files

BASE_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "base.py"
CONFIG_FILE = "config.json"


def config_path(path: str | pathlib.Path) -> pathlib.Path:
  """PATH itself if it is a .json file, else PATH/config.json (an export or a workdir)."""
  path = pathlib.Path(path)
  return path if path.suffix == ".json" and not path.is_dir() else path / CONFIG_FILE


def load_config(path: str | pathlib.Path) -> ml_collections.ConfigDict:
  """The ConfigDict stored at `path` (a config.json, or a directory holding one); ExportError if unreadable."""
  file = config_path(path)
  if not file.is_file():
    raise ExportError(f"no run config {file}: give an export directory or workdir that has a {CONFIG_FILE}")
  values = files.read_json(file, "the run config")
  return config_from_dict(values, source=str(file))


def config_from_dict(values: dict, *, source: str = "config.json") -> ml_collections.ConfigDict:
  """`values` (parsed JSON) laid onto configs/base.py's fields and types."""
  from vin_jax import config as config_lib
  config = config_lib.load_config_file(BASE_CONFIG)
  _lay_onto(config, values, prefix="", source=source)
  return config


def _lay_onto(node: ml_collections.ConfigDict, values: dict, *, prefix: str, source: str) -> None:
  for key, value in values.items():
    field = f"{prefix}{key}"
    if key not in node:
      node[key] = _untyped(value)
    elif isinstance(node[key], ml_collections.ConfigDict):
      if not isinstance(value, dict):
        raise ExportError(f"{source}: field {field} must be a group of fields, got {value!r}")
      _lay_onto(node[key], value, prefix=f"{field}.", source=source)
    else:
      node[key] = _typed(node[key], value, field, source)


def _typed(default, value, field: str, source: str):
  """`value` converted to the type of `default`, the base config's value of `field`."""
  def bad():
    return ExportError(f"{source}: field {field}={value!r} must be a {type(default).__name__} like the base "
                       f"config's {default!r}")
  if isinstance(default, bool):
    if not isinstance(value, bool):
      raise bad()
    return value
  if isinstance(default, int):
    if isinstance(value, bool) or not isinstance(value, int):
      raise bad()
    return value
  if isinstance(default, float):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
      raise bad()
    return float(value)
  if isinstance(default, str):
    if not isinstance(value, str):
      raise bad()
    return value
  if isinstance(default, (tuple, list)):
    if not isinstance(value, list):
      raise bad()
    kinds = {type(d) for d in default}
    if len(kinds) == 1 and default:
      element = next(iter(default))
      return tuple(_typed(element, v, f"{field}[{i}]", source) for i, v in enumerate(value))
    return tuple(_untyped(v) for v in value)
  if default is None:
    return _untyped(value)
  raise bad()


def _untyped(value):
  """A JSON value for a field the base config lacks: objects become ConfigDicts, lists tuples."""
  if isinstance(value, dict):
    return ml_collections.ConfigDict({k: _untyped(v) for k, v in value.items()})
  if isinstance(value, list):
    return tuple(_untyped(v) for v in value)
  return value
