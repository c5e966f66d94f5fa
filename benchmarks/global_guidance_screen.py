"""Screen (#18, not a config option): guidance on the global tokens when sampling an ablation's VIN model.

Each sampling step's window prediction becomes p(no tokens) + w * (p(tokens) - p(no tokens)), two model
calls, by wrapping `sampler.guided_prediction`; then the runner samples and evaluates the full_model row of
an ablation work directory whose VIN model is trained (nothing is trained here). Beyond the paper. Run:

  GG=3 python benchmarks/global_guidance_screen.py W STEPS   # W: configs/micro.py:hidden's; STEPS: its train.steps
  python benchmarks/per_chunk_identity.py W
"""
from __future__ import annotations

import dataclasses
import os
import sys

from vin_jax import ablation
from vin_jax import config as config_lib
from vin_jax.diffusion import sampler


def with_global_guidance(scale: float):
  """Replaces sampler.guided_prediction by its global-token-guided version (scale 1: unchanged)."""
  plain = sampler.guided_prediction

  def guided(model, x, t, text, settings, *, axis_name=None):
    pred = plain(model, x, t, text, settings, axis_name=axis_name)
    if not settings.use_global or scale == 1.0:
      return pred
    without = plain(model, x, t, text, dataclasses.replace(settings, use_global=False), axis_name=axis_name)
    return without + scale * (pred - without)

  sampler.guided_prediction = guided


def main():
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  with_global_guidance(float(os.environ.get("GG", "3")))
  config = config_lib.load_config_file("configs/micro.py", "hidden")
  config_lib.override(config, {"train.steps": int(sys.argv[2]), "ablation.rows": "full_model"})
  ablation.run(config, sys.argv[1])


if __name__ == "__main__":
  main()
