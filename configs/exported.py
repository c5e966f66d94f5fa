"""The run config stored with an export or a workdir: --config=configs/exported.py:PATH.

PATH is an export directory (OUT/config.json), a workdir (WORKDIR/config.json) or a .json file. Overrides
apply as with any config file (`--config.sampling.num_steps=10`). `sample --params=OUT` and
`export --workdir=DIR` without --config use this file for you.
"""
from vin_jax.export import config_json


def get_config(arg=None):
  if not arg:
    raise FileNotFoundError("configs/exported.py needs a path: --config=configs/exported.py:EXPORT_DIR")
  return config_json.load_config(arg)
