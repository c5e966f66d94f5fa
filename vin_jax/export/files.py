"""The files of an export directory, and every check made when reading them back.

  config.json                        the run config (`config.to_json_best_effort`)
  model.safetensors                  all weights, when they fit in one shard, or
  model-00001-of-0000N.safetensors   shards of at most `max_shard_bytes` (a larger tensor gets its own) plus
  model.safetensors.index.json       {"metadata": {"total_size": bytes}, "weight_map": {name: file}} (Hugging Face)
  export_info.json                   source workdir, step, weights, dtype, parameter count, vin_jax version, and
                                     the size and sha256 of every weights file

Reading verifies sizes and checksums (a truncated or edited file fails naming it), that the index and the
files agree, and that every tensor has the export's dtype. Only safetensors and JSON are parsed: no pickle.
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

import ml_dtypes
import numpy as np

from vin_jax.export import ExportError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
INFO_FILE = "export_info.json"
CONFIG_FILE = "config.json"
DEFAULT_MAX_SHARD_BYTES = 4 * 2 ** 30
DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
_SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16"}   # safetensors' codes for DTYPES


def shard_name(index: int, count: int) -> str:
  return f"model-{index:05d}-of-{count:05d}.safetensors"


def is_export(directory: str | pathlib.Path) -> bool:
  directory = pathlib.Path(directory)
  return (directory / INFO_FILE).is_file() or (directory / SINGLE_FILE).is_file() or (directory / INDEX_FILE).is_file()


def plan_shards(nbytes: dict[str, int], max_shard_bytes: int) -> list[list[str]]:
  """Names grouped into shards in order, each at most `max_shard_bytes` unless one tensor alone is larger."""
  if max_shard_bytes <= 0:
    raise ExportError(f"max_shard_bytes={max_shard_bytes} must be > 0")
  shards: list[list[str]] = [[]]
  size = 0
  for name, n in nbytes.items():
    if shards[-1] and size + n > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(name)
    size += n
  return shards


def write_weights(directory: pathlib.Path, tensors: dict[str, np.ndarray], *, max_shard_bytes: int,
                  metadata: dict[str, str]) -> dict[str, dict]:
  """Writes `tensors` {name: array} as safetensors into `directory` (one file, or shards and the index).

  Returns {file name: {"bytes": size, "sha256": hex digest}} for export_info.json.
  """
  from safetensors.numpy import save_file
  shards = plan_shards({name: int(t.nbytes) for name, t in tensors.items()}, max_shard_bytes)
  names = [SINGLE_FILE] if len(shards) == 1 else [shard_name(i + 1, len(shards)) for i in range(len(shards))]
  files = {}
  weight_map = {}
  for file_name, shard in zip(names, shards):
    save_file({name: np.ascontiguousarray(tensors[name]) for name in shard}, directory / file_name, metadata=metadata)
    os.chmod(directory / file_name, 0o644)   # safetensors writes it private; an export reads like any other file
    files[file_name] = file_digest(directory / file_name)
    weight_map.update({name: file_name for name in shard})
  if len(shards) > 1:
    index = {"metadata": {"total_size": sum(int(t.nbytes) for t in tensors.values())}, "weight_map": weight_map}
    (directory / INDEX_FILE).write_text(json.dumps(index, indent=2))
  return files


def file_digest(path: pathlib.Path) -> dict:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(2 ** 24), b""):
      digest.update(block)
  return {"bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def read_json(path: pathlib.Path, what: str) -> dict:
  if not path.is_file():
    raise ExportError(f"{path} is missing: not a complete export ({what})")
  try:
    value = json.loads(path.read_text())
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise ExportError(f"cannot read {path}: {e}") from None
  if not isinstance(value, dict):
    raise ExportError(f"{path} must hold a JSON object ({what})")
  return value


def read_info(directory: str | pathlib.Path) -> dict:
  """export_info.json, with its "files" and "dtype" fields checked."""
  path = pathlib.Path(directory) / INFO_FILE
  info = read_json(path, "export_info.json describes the export")
  if info.get("dtype") not in DTYPES:
    raise ExportError(f"{path}: dtype={info.get('dtype')!r} must be one of {tuple(DTYPES)}")
  files = info.get("files")
  if not isinstance(files, dict) or not files or not all(
      isinstance(v, dict) and isinstance(v.get("bytes"), int) and isinstance(v.get("sha256"), str)
      for v in files.values()):
    raise ExportError(f"{path}: 'files' must map each weights file to its 'bytes' and 'sha256'")
  return info


def weight_map(directory: pathlib.Path, info: dict) -> dict[str, str]:
  """{tensor name: file} from the index, or None when the export is one model.safetensors."""
  index_path = directory / INDEX_FILE
  if not index_path.exists():
    if SINGLE_FILE not in info["files"]:
      raise ExportError(f"{directory} has neither {SINGLE_FILE} nor {INDEX_FILE}, but export_info.json lists "
                        f"{sorted(info['files'])}: the index is missing")
    return None
  index = read_json(index_path, "the shard index")
  mapping = index.get("weight_map")
  if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
    raise ExportError(f"{index_path}: 'weight_map' must map tensor names to file names")
  for file_name in sorted(set(mapping.values())):
    if os.path.basename(file_name) != file_name or not file_name.endswith(".safetensors"):
      raise ExportError(f"{index_path}: shard {file_name!r} must be a .safetensors file name in the export directory")
    if file_name not in info["files"]:
      raise ExportError(f"{index_path}: shard {file_name} is not listed in {INFO_FILE}")
  return mapping


def read_weights(directory: str | pathlib.Path) -> tuple[dict[str, np.ndarray], dict]:
  """({name: array in the export's dtype}, export_info) after every integrity check; ExportError names the
  file or tensor at fault."""
  from safetensors import SafetensorError, safe_open
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ExportError(f"export directory {directory} does not exist")
  info = read_info(directory)
  mapping = weight_map(directory, info)
  files = sorted(set(mapping.values())) if mapping is not None else [SINGLE_FILE]
  dtype = info["dtype"]
  tensors: dict[str, np.ndarray] = {}
  for file_name in files:
    path = directory / file_name
    if not path.is_file():
      raise ExportError(f"weights file {path} is missing (listed in {INDEX_FILE if mapping else INFO_FILE})")
    expected = info["files"].get(file_name)
    if expected is None:
      raise ExportError(f"weights file {path} is not listed in {INFO_FILE}")
    actual = file_digest(path)
    if actual["bytes"] != expected["bytes"]:
      raise ExportError(f"weights file {path} has {actual['bytes']} bytes, {INFO_FILE} says {expected['bytes']}: "
                        "truncated or overwritten")
    if actual["sha256"] != expected["sha256"]:
      raise ExportError(f"weights file {path} does not match its sha256 in {INFO_FILE}: corrupted or edited")
    try:
      with safe_open(path, framework="np") as f:
        for name in f.keys():
          code = f.get_slice(name).get_dtype()
          if _SAFETENSORS_DTYPES.get(code) != dtype:
            raise ExportError(f"tensor {name!r} in {path} has dtype {_SAFETENSORS_DTYPES.get(code, code)}, the "
                              f"export's dtype is {dtype}")
          if name in tensors:
            raise ExportError(f"tensor {name!r} appears in more than one weights file ({path})")
          if mapping is not None and mapping.get(name) != file_name:
            raise ExportError(f"tensor {name!r} is in {path}, but {INDEX_FILE} places it in {mapping.get(name)}")
          tensors[name] = f.get_tensor(name)
    except SafetensorError as e:
      raise ExportError(f"weights file {path} is not a valid safetensors file: {e}") from None
  if mapping is not None:
    absent = sorted(set(mapping) - set(tensors))
    if absent:
      raise ExportError(f"{INDEX_FILE} lists {len(absent)} tensors that no shard holds, e.g. {absent[0]!r} in "
                        f"{mapping[absent[0]]}")
  return tensors, info
