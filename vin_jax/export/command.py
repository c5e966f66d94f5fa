"""The command-line side of export and import: the `export` command, and the config implied by
`sample --params=OUT` / `export --workdir=DIR` when no --config is given."""
from __future__ import annotations

import pathlib
import sys

from vin_jax.export import ExportError, config_json

DEFAULT_MAX_SHARD_BYTES = 4 * 2 ** 30   # files.DEFAULT_MAX_SHARD_BYTES (this module stays light: no JAX import)

EXPORTED_CONFIG = pathlib.Path(__file__).resolve().parents[2] / "configs" / "exported.py"


def _scan(argv: list[str], flag_values) -> tuple[dict[str, str], list[str]]:
  """({flag name: value} of the --name=value / --name value flags, positional arguments) of argv[1:]."""
  values, positional = {}, []
  i = 1
  while i < len(argv):
    arg = argv[i]
    if arg == "--":
      positional.extend(argv[i + 1:])
      break
    if arg.startswith("-") and len(arg) > 1:
      name, sep, value = arg.lstrip("-").partition("=")
      if not sep and name in flag_values and not flag_values[name].boolean and i + 1 < len(argv):
        value, i = argv[i + 1], i + 1
      values[name] = value
    else:
      positional.append(arg)
    i += 1
  return values, positional


def implied_config_argv(argv: list[str], flag_values) -> list[str]:
  """`argv` with --config=configs/exported.py:PATH inserted when there is no --config and PATH is implied:
  `sample --params=OUT` reads OUT/config.json, `export --workdir=DIR` DIR/config.json. Overrides then apply
  as to any config file. The stored config (implied or given as configs/exported.py:PATH) is read once here,
  so that a missing or broken one fails with one line instead of config_flags' wrapped traceback."""
  values, positional = _scan(argv, flag_values)
  command = positional[0] if positional else None
  path = None
  if "config" in values:
    file, _, arg = values["config"].partition(":")
    if pathlib.Path(file).name == EXPORTED_CONFIG.name:
      path = arg
  elif values.get("params"):
    path = values["params"]
    argv = [argv[0], f"--config={EXPORTED_CONFIG}:{path}", *argv[1:]]
  elif command == "export" and values.get("workdir"):
    path = values["workdir"]
    argv = [argv[0], f"--config={EXPORTED_CONFIG}:{path}", *argv[1:]]
  if path is not None:
    try:
      config_json.load_config(path)
    except ExportError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  return argv


def export_command(config, workdir: str, out: str | None, *, weights: str, dtype: str, force: bool,
                   max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> dict:
  """Exports WORKDIR's latest checkpoint to OUT and prints one line about it (process 0)."""
  import jax
  from vin_jax.export import writer
  if not out:
    raise ExportError("export needs --out=OUTDIR")
  info = writer.export_checkpoint(config, workdir, out, weights=weights, dtype=dtype, force=force,
                                  max_shard_bytes=max_shard_bytes)
  if jax.process_index() == 0:
    print(f"exported the {weights} weights of step {info['step']} ({info['num_params']:,} parameters, {dtype}, "
          f"{info['total_bytes'] / 2 ** 20:.2f} MiB in {len(info['files'])} file(s)) to {pathlib.Path(out).absolute()} "
          f"in {info['export_seconds']:.1f}s")
  return info
