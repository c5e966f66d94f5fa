"""Checkpoint export and import: safetensors weights + the run's config.json, and `train --init_from`.

  config_json   rebuild a ConfigDict from a run's config.json (the type schema is configs/base.py)
  names         nested param dicts <-> flat dotted names ("dit.blocks.3.attn.q.kernel")
  files         the export directory's files: safetensors shards, the index, export_info.json, checks
  restore       the EMA or raw weights of a workdir's checkpoint, gathered to the host, on any mesh
  writer        `python -m vin_jax.main export`: workdir -> export directory, atomically
  reader        an export directory -> params for a config (`sampling.load_exported`)
  init_from     `train --init_from`: a fresh state with every weight whose name and shape match loaded

Loading never unpickles: safetensors and JSON only.
"""


class ExportError(ValueError):
  """An export or import cannot proceed; the message names the file, tensor or flag at fault."""
