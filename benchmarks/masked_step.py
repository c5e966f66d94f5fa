"""Train-step wall time with masked training (train.mask_ratio, MaskDiT/STIV) against unmasked, side by side:
the same model, batch and optimizer, both steps compiled first, then called in alternation so that the
machine's load hits both alike; medians. XLA's FLOPs of each compiled step are printed beside them.

  JAX_PLATFORMS=cpu python benchmarks/masked_step.py [--config configs/micro.py] [--ratio 0.5] [--repeats 10]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from vin_jax import config as config_lib  # noqa: E402
from vin_jax import train as train_lib  # noqa: E402
from vin_jax.model import ModelDef  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", default="configs/micro.py")
  parser.add_argument("--ratio", type=float, default=0.5)
  parser.add_argument("--chunks", type=int, default=None, help="chunks per training video (default: longest bucket)")
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args(argv)
  path, _, variant = args.config.partition(":")
  config = config_lib.load_config_file(path, variant or None)
  config.train.mask_ratio = args.ratio
  config_lib.validate(config, num_devices=1)
  n = args.chunks or max(config.data.bucket_chunks)
  model_def, optimizer = ModelDef(config), train_lib.make_optimizer(config)
  state = train_lib.init_state(model_def, optimizer, jax.random.key(0))
  rng = np.random.default_rng(0)
  frames = config_lib.pixel_frames_per_chunk(config) * n
  batch = {"frames": rng.integers(0, 256, (config.data.batch_size, frames, config.data.height, config.data.width, 3),
                                  dtype=np.uint8),
           "text_tokens": rng.integers(1, 200, (config.data.batch_size, config.text.max_length), dtype=np.int32)}
  steps, flops = {}, {}
  for name, masked in (("unmasked", False), (f"masked {args.ratio:g}", True)):
    fn = jax.jit(train_lib.make_train_step(model_def, config, optimizer, masked=masked))
    compiled = fn.lower(state, batch, jax.random.key(1)).compile()
    cost = compiled.cost_analysis()
    flops[name] = float((cost[0] if isinstance(cost, (list, tuple)) else cost).get("flops", 0.0))
    steps[name] = compiled
    jax.block_until_ready(compiled(state, batch, jax.random.key(1)))   # warm-up
  times = {name: [] for name in steps}
  for _ in range(args.repeats):
    for name, compiled in steps.items():
      start = time.perf_counter()
      jax.block_until_ready(compiled(state, batch, jax.random.key(1)))
      times[name].append(time.perf_counter() - start)
  base = statistics.median(times["unmasked"])
  print(f"{args.config}, batch {config.data.batch_size}, {n} chunks of {config.chunking.chunk_frames} latent frames, "
        f"{args.repeats} interleaved calls each, {jax.devices()[0].platform}")
  print("| step | median s | / unmasked | XLA GFLOP | / unmasked |")
  print("|---|---|---|---|---|")
  for name in steps:
    t = statistics.median(times[name])
    print(f"| {name} | {t:.3f} | {t / base:.2f} | {flops[name] / 1e9:.1f} | {flops[name] / flops['unmasked']:.2f} |")


if __name__ == "__main__":
  main()
