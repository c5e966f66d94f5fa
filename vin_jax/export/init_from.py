"""`train --init_from=PATH`: start a fresh run from another run's weights, wherever names and shapes match.

PATH is an export directory or a workdir (its latest checkpoint; `--weights` picks EMA or raw weights). Every
parameter of the fresh state whose dotted name and shape are in the source is loaded; the DiT's patch
embedding and output layer of an image model (temporal patch 1) are inflated along time to a video model's
temporal patch (`INFLATABLE`, STIV's progressive training); the others keep their fresh init. The optimizer state stays fresh and the EMA starts at the loaded params. The report (loaded /
new / shape_mismatch / unused, with shapes) is printed, logged and written to WORKDIR/init_from.json.
Only a fresh start is initialised: a workdir with a checkpoint resumes and ignores --init_from.
Names are per layer on both sides (a source's are, see `restore`; a model with model.scan_layers is matched
unstacked and stacked again), so weights move between scanned and unrolled models, and to a deeper one.
"""
from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
import numpy as np
from absl import logging

from vin_jax import video_io
from vin_jax.export import ExportError, config_json, files, names, reader, restore
from vin_jax.model import layout

REPORT_FILE = "init_from.json"
# Tensors over the DiT's patch vector (pt ph pw c, time slowest) that a model with a longer temporal patch
# inflates along time (STIV's progressive training): {name: (axis, divide by the factor)}. The patch embedding
# averages the pt copies, so a video of identical frames embeds as one image; the output layer repeats its
# rows, so each frame gets the image's prediction.
INFLATABLE = {"dit.patch_embed.kernel": (0, True), "dit.final.kernel": (1, False), "dit.final.bias": (0, False)}


def inflated(name: str, tensor: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
  """`tensor` inflated along time to `shape` (see INFLATABLE), or None when `name` is not inflatable or the
  shapes are not a whole-number temporal inflation of each other."""
  if name not in INFLATABLE or len(shape) != tensor.ndim:
    return None
  axis, divide = INFLATABLE[name]
  same_elsewhere = all(a == b for i, (a, b) in enumerate(zip(tensor.shape, shape)) if i != axis)
  if not same_elsewhere or shape[axis] <= tensor.shape[axis] or shape[axis] % tensor.shape[axis]:
    return None
  factor = shape[axis] // tensor.shape[axis]
  reps = [1] * tensor.ndim
  reps[axis] = factor
  out = np.tile(np.asarray(tensor, np.float32), reps)
  return out / factor if divide else out


@dataclasses.dataclass
class Source:
  path: str
  kind: str          # "export" | "workdir"
  step: int
  weights: str       # "ema" | "params"
  tensors: dict      # {dotted name: host array}


def check_source(path: str | pathlib.Path) -> str:
  """"export" or "workdir"; ExportError if PATH is neither (cheap: looks at file names only)."""
  path = pathlib.Path(path)
  if not path.is_dir():
    raise ExportError(f"--init_from={path} does not exist")
  if files.is_export(path):
    return "export"
  if (path / "checkpoints").is_dir():
    if not config_json.config_path(path).is_file():
      raise ExportError(f"--init_from={path} is a workdir without config.json: its model is unknown")
    return "workdir"
  raise ExportError(f"--init_from={path} is neither an export ({files.INFO_FILE}, {files.SINGLE_FILE}) nor a "
                    "workdir (checkpoints/, config.json)")


def read_source(path: str | pathlib.Path, *, weights: str = "ema") -> Source:
  """The source's weights on the host. An export holds one set of weights (its export_info says which)."""
  kind = check_source(path)
  if kind == "export":
    tensors, info = files.read_weights(path)
    return Source(str(path), kind, int(info.get("step", 0)), str(info.get("weights", "?")), tensors)
  source_config = config_json.load_config(path)
  tensors, step = restore.restore_weights(source_config, path, weights=weights)
  return Source(str(path), kind, step, weights, tensors)


def merge(fresh_params, source: Source):
  """(params with every name-and-shape match taken from `source`, placed on the fresh leaves' shardings
  and cast to their dtypes, report). `fresh_params` is a tree of jax arrays, in either layer layout."""
  fresh_layers = layout.per_layer(fresh_params)
  fresh = names.flatten(fresh_layers)
  rows = {"loaded": [], "inflated": [], "new": [], "shape_mismatch": [], "unused": []}
  merged = {}
  for name, leaf in fresh.items():
    shape = tuple(leaf.shape)
    if name not in source.tensors:
      rows["new"].append({"name": name, "shape": list(shape)})
      merged[name] = leaf
      continue
    source_shape = tuple(source.tensors[name].shape)
    if source_shape != shape:
      grown = inflated(name, source.tensors[name], shape)
      if grown is not None:
        rows["inflated"].append({"name": name, "shape": list(shape), "source_shape": list(source_shape)})
        merged[name] = reader.to_device(grown.astype(leaf.dtype), leaf.sharding)
        continue
      rows["shape_mismatch"].append({"name": name, "shape": list(shape), "source_shape": list(source_shape)})
      merged[name] = leaf
      continue
    rows["loaded"].append({"name": name, "shape": list(shape)})
    merged[name] = reader.to_device(np.asarray(source.tensors[name]).astype(leaf.dtype), leaf.sharding)
  for name, tensor in source.tensors.items():
    if name not in fresh:
      rows["unused"].append({"name": name, "source_shape": list(tensor.shape)})
  report = {"source": source.path, "kind": source.kind, "source_step": source.step, "weights": source.weights,
            "counts": {k: len(v) for k, v in rows.items()}, **rows}
  return layout.convert(names.unflatten_like(fresh_layers, merged), fresh_params), report


def initialize_state(state: dict, init_from: str, workdir: str | pathlib.Path, *, resumed: bool,
                     weights: str = "ema") -> dict:
  """The train state to start from: `state` itself when `resumed` (with a note), else `state` with its params
  and EMA merged from `init_from` and its optimizer state fresh. Call on every process."""
  main_process = jax.process_index() == 0
  if resumed:
    if main_process:
      print(f"note: {workdir} has a checkpoint; resuming from it and ignoring --init_from={init_from}", flush=True)
    return state
  source = read_source(init_from, weights=weights)
  params, report = merge(state["params"], source)
  state = {**state, "params": params, "ema": loaded_ema(params, state["ema"], report)}
  if main_process:
    table = format_report(report)
    print(table, flush=True)
    logging.info("init_from:\n%s", table)
    with video_io.atomic_output(pathlib.Path(workdir) / REPORT_FILE) as tmp:
      pathlib.Path(tmp).write_text(json.dumps(report, indent=2))
  return state


def loaded_ema(params, fresh_ema, report: dict):
  """The EMA starts at the loaded params: its own copies of the loaded leaves, the fresh EMA's elsewhere."""
  ema_layers = layout.per_layer(fresh_ema)
  ema_fresh = names.flatten(ema_layers)
  loaded = {row["name"] for row in report["loaded"] + report.get("inflated", [])}
  ema = {name: (jax.device_put(leaf, leaf.sharding, may_alias=False) if name in loaded else ema_fresh[name])
         for name, leaf in names.flatten(layout.per_layer(params)).items()}
  return layout.convert(names.unflatten_like(ema_layers, ema), fresh_ema)


def format_report(report: dict) -> str:
  """The report as a table: one row per tensor (status, name, shape, source shape)."""
  c = report["counts"]
  lines = [f"init_from {report['source']} ({report['kind']}, step {report['source_step']}, {report['weights']} "
           f"weights): {c['loaded']} loaded, {c.get('inflated', 0)} inflated along time, {c['new']} new (fresh "
           f"init), {c['shape_mismatch']} skipped for a shape mismatch (fresh init), {c['unused']} in the source only"]
  rows = [(status, r["name"], r.get("shape"), r.get("source_shape", r.get("shape") if status == "loaded" else None))
          for status in ("loaded", "inflated", "new", "shape_mismatch", "unused") for r in report.get(status, [])]
  width = max([len(r[1]) for r in rows] + [4])
  lines.append(f"  {'status':<14}  {'name':<{width}}  {'shape':<16}  source shape")
  for status, name, shape, source_shape in rows:
    shown = lambda s: "-" if s is None else str(tuple(s))
    lines.append(f"  {status:<14}  {name:<{width}}  {shown(shape):<16}  {shown(source_shape)}")
  return "\n".join(lines)
