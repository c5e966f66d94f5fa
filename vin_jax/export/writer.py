"""`python -m vin_jax.main export`: a workdir's checkpoint -> an export directory (see `files` for its layout).

Every process restores and gathers the weights (`restore`); process 0 writes them into a temporary directory
next to OUT and renames it to OUT at the end, so a failed or killed export never leaves a half-written OUT
(a killed one leaves only the hidden `.OUT.tmp-*` directory). An existing OUT is replaced only with `force`.
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import pathlib
import shutil
import tempfile
import time

import jax
import numpy as np

from vin_jax.export import ExportError, files, restore


def vin_jax_version() -> str:
  try:
    return importlib.metadata.version("vin_jax")
  except importlib.metadata.PackageNotFoundError:
    return "unknown"


@contextlib.contextmanager
def atomic_directory(out: pathlib.Path, *, replace: bool):
  """Yields an empty temporary directory next to `out`; renames it to `out` when the body succeeds (an
  existing `out` is swapped out first if `replace`) and removes it when the body raises."""
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
  try:
    yield tmp
    os.chmod(tmp, 0o755)   # mkdtemp makes it private; the export should read like any other directory
    if out.exists():
      if not replace:
        raise ExportError(f"{out} appeared while exporting; pass --force to replace it")
      old = pathlib.Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
      os.replace(out, old / out.name)
      os.replace(tmp, out)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise


def export_checkpoint(config, workdir: str | pathlib.Path, out: str | pathlib.Path, *, weights: str = "ema",
                      dtype: str = "float32", force: bool = False, step: int | None = None,
                      max_shard_bytes: int = files.DEFAULT_MAX_SHARD_BYTES) -> dict:
  """Writes the `weights` ("ema" | "params") of WORKDIR's latest (or `step`) checkpoint of `config`'s model to
  OUT in `dtype` ("float32" | "bfloat16"). Call on every process. Returns export_info (also on process 0's disk)."""
  if dtype not in files.DTYPES:
    raise ExportError(f"--dtype={dtype!r} must be one of {tuple(files.DTYPES)}")
  if weights not in restore.WEIGHTS:
    raise ExportError(f"--weights={weights!r} must be one of {restore.WEIGHTS}")
  out = pathlib.Path(out).absolute()
  workdir = pathlib.Path(workdir).absolute()
  if _on_process_0(out.exists()) and not force:
    raise ExportError(f"--out={out} exists: pass --force to replace it")
  start = time.time()
  host, step = restore.restore_weights(config, workdir, weights=weights, step=step)
  cast = {name: np.asarray(x).astype(files.DTYPES[dtype]) for name, x in host.items()}
  info = {
      "source_workdir": str(workdir), "step": step, "weights": weights, "dtype": dtype,
      "num_params": int(sum(x.size for x in cast.values())), "num_tensors": len(cast),
      "total_bytes": int(sum(x.nbytes for x in cast.values())), "vin_jax_version": vin_jax_version(),
      "format": "safetensors", "max_shard_bytes": int(max_shard_bytes),
  }
  error = None
  if jax.process_index() == 0:
    try:
      with atomic_directory(out, replace=force) as tmp:
        (tmp / files.CONFIG_FILE).write_text(config.to_json_best_effort(indent=2))
        metadata = {"format": "vin_jax", "dtype": dtype, "weights": weights, "step": str(step)}
        info["files"] = files.write_weights(tmp, cast, max_shard_bytes=max_shard_bytes, metadata=metadata)
        info["export_seconds"] = round(time.time() - start, 3)
        (tmp / files.INFO_FILE).write_text(json.dumps(info, indent=2))
    except BaseException as e:  # tell the other processes before raising
      error = e
  if not _on_process_0(error is None):
    raise error if error is not None else ExportError(f"process 0 failed to write the export {out}")
  return info


def _on_process_0(flag: bool) -> bool:
  """Process 0's `flag` on every process (all agree on whether to go on)."""
  if jax.process_count() == 1:
    return flag
  from jax.experimental import multihost_utils
  return bool(multihost_utils.broadcast_one_to_all(np.int32(flag)))
