"""Reference points for the sample metrics: real sprite videos from the data set and uniform-noise videos,
written as sample directories (samples.npz + sample_info.json) that `vin_jax.main evaluate --samples=`
reads like a model's samples.

  python benchmarks/reference_videos.py --config=configs/tiny.py --data_dir=runs/demo/data --out=runs/reference
  python -m vin_jax.main evaluate --samples=runs/reference/data
  python -m vin_jax.main evaluate --samples=runs/reference/noise
"""
import argparse
import json
import os
import pathlib

import numpy as np

from vin_jax import config as config_lib
from vin_jax.data import builder


def write(out_dir: pathlib.Path, frames: np.ndarray, config) -> None:
  out_dir.mkdir(parents=True, exist_ok=True)
  np.savez_compressed(out_dir / "samples.npz", frames=frames)
  info = {"fps": config.data.fps, "chunk_pixel_frames": config_lib.pixel_frames_per_chunk(config)}
  (out_dir / "sample_info.json").write_text(json.dumps(info))


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/tiny.py")
  parser.add_argument("--data_dir", required=True)
  parser.add_argument("--out", required=True)
  parser.add_argument("--num", type=int, default=8)
  args = parser.parse_args()
  config = config_lib.load_config_file(args.config)
  source = builder.data_source(config, args.data_dir, "validation")
  real = np.stack([source[i]["frames"] for i in range(args.num)])
  noise = np.random.RandomState(0).randint(0, 256, real.shape).astype(np.uint8)
  write(pathlib.Path(args.out) / "data", real, config)
  write(pathlib.Path(args.out) / "noise", noise, config)
  print(f"wrote {os.path.join(args.out, 'data')} and {os.path.join(args.out, 'noise')}: {real.shape}")


if __name__ == "__main__":
  main()
