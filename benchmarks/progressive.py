"""STIV's progressive training at tiny scale: the video model's training loss when it starts from a
text-to-image model (`configs/tiny.py:image`, then `train --init_from`, patch embedding inflated along time)
against the same video training from scratch. One table; each run is a workdir under --workdir, so an
interrupted benchmark resumes where it stopped.

  JAX_PLATFORMS=cpu python benchmarks/progressive.py --workdir=runs/progressive [--image_steps 400] [--steps 300]
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from vin_jax import config as config_lib  # noqa: E402
from vin_jax import train as train_lib  # noqa: E402


def losses(workdir: pathlib.Path) -> np.ndarray:
  rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  return np.asarray([r["loss"] for r in rows if "loss" in r], np.float64)


def run(variant: str | None, workdir: pathlib.Path, data_dir: pathlib.Path, steps: int, init_from=None) -> np.ndarray:
  config = config_lib.load_config_file("configs/tiny.py", variant)
  config.train.steps, config.train.log_every = steps, 1
  config.train.warmup_steps = min(config.train.warmup_steps, steps // 4)
  config.train.checkpoint_every = steps
  config_lib.validate(config)
  train_lib.train(config, str(workdir), data_dir=str(data_dir), init_from=init_from, init_weights="params")
  return losses(workdir)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", required=True)
  parser.add_argument("--image_steps", type=int, default=400)
  parser.add_argument("--steps", type=int, default=300, help="video training steps, both arms")
  parser.add_argument("--window", type=int, default=50, help="steps averaged at the start and the end")
  args = parser.parse_args(argv)
  root = pathlib.Path(args.workdir)
  data_dir = root / "data"
  image = run("image", root / "image", data_dir, args.image_steps)
  arms = {"from scratch": run(None, root / "scratch", data_dir, args.steps),
          "from the image model": run(None, root / "progressive", data_dir, args.steps, init_from=str(root / "image"))}
  k = args.window
  print(f"tiny video model, {args.steps} steps; image model: {args.image_steps} steps, final loss "
        f"{image[-k:].mean():.4f}")
  print(f"| start | loss, steps 1-{k} | loss, last {k} steps (mean +- s.e.) |")
  print("|---|---|---|")
  for name, curve in arms.items():
    tail = curve[-k:]
    print(f"| {name} | {curve[:k].mean():.4f} | {tail.mean():.4f} +- {tail.std(ddof=1) / np.sqrt(len(tail)):.4f} |")


if __name__ == "__main__":
  main()
