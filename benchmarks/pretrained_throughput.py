"""Throughput of the pretrained parts on this machine's CPU: the SD VAE (encode and decode, frame by frame, as
`precompute` and `sample` run it) at the tiny and the paper resolution, and T5 v1.1 encoders on captions.

Architectures are the published ones (sd-vae-ft-ema: 83.7M parameters; T5 v1.1 small/base/large encoders),
with random weights: throughput does not depend on their values, and nothing is downloaded. T5-XXL's encoder
(4.8B parameters, 19 GB in fp32) does not fit beside the benchmark in this machine's 24 GB; it is left out.
Each row is timed after one warm-up call (compilation), as the median of --repeats calls. Run:

  python benchmarks/pretrained_throughput.py [--repeats 3] [--dtype float32,bfloat16]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from vin_jax.autoencoder import per_frame, sd_vae  # noqa: E402
from vin_jax.text import conditioning, t5  # noqa: E402

# diffusers' config.json of stabilityai/sd-vae-ft-ema (the fields the port reads).
SD_VAE = {"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3, "latent_channels": 4,
          "block_out_channels": [128, 256, 512, 512], "layers_per_block": 2, "norm_num_groups": 32,
          "act_fn": "silu", "down_block_types": ["DownEncoderBlock2D"] * 4,
          "up_block_types": ["UpDecoderBlock2D"] * 4, "sample_size": 256, "scaling_factor": 0.18215}
# transformers' config.json of google/t5-v1_1-{small,base,large} (encoder fields).
T5 = {
    "small": dict(d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_heads=6),
    "base": dict(d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_heads=12),
    "large": dict(d_model=1024, d_kv=64, d_ff=2816, num_layers=24, num_heads=16),
}
RESOLUTIONS = {"tiny": (16, 16), "paper": (192, 320)}


def timed(fn, repeats: int) -> float:
  jax.block_until_ready(fn())   # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def vae_rows(repeats: int, dtypes) -> list[tuple]:
  rows = []
  config = sd_vae.module_config_from_hf(SD_VAE)
  for dtype in dtypes:
    module = sd_vae.build(config, nnx.Rngs(0), dtype=jnp.dtype(dtype))
    for name, (h, w) in RESOLUTIONS.items():
      frames = 8 if name == "paper" else 64
      ae = per_frame.PerFrameAutoencoder(module, scale=0.18215, shift=0.0, frames_per_batch=min(frames, 8))
      video = np.random.default_rng(0).integers(0, 256, (1, frames, h, w, 3), dtype=np.uint8)
      latents = ae.encode(video)
      encode = timed(lambda: ae.encode(video), repeats)
      decode = timed(lambda: ae.decode(latents), repeats)
      rows.append((f"SD VAE {name} {h}x{w}", dtype, frames, frames / encode, frames / decode))
  return rows


def t5_rows(repeats: int, dtypes, batch: int = 8, length: int = 120) -> list[tuple]:
  rows = []
  for size, dims in T5.items():
    config = t5.module_config_from_hf({"model_type": "t5", "vocab_size": 32128, "feed_forward_proj": "gated-gelu",
                                       "relative_attention_num_buckets": 32, "layer_norm_epsilon": 1e-6, **dims})
    for dtype in dtypes:
      module = t5.build(config, nnx.Rngs(0), dtype=jnp.dtype(dtype))
      graphdef, state = nnx.split(module)
      tokens = jnp.asarray(np.random.default_rng(0).integers(3, 32000, (batch, length)), jnp.int32)
      mask = jnp.ones((batch, length), bool)
      seconds = timed(lambda: conditioning._t5_forward(graphdef, state, tokens, mask), repeats)
      rows.append((f"T5 v1.1 {size} encoder, {length} tokens", dtype, batch, batch / seconds, None))
  return rows


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--dtype", default="float32,bfloat16")
  parser.add_argument("--only", choices=["vae", "t5", "all"], default="all")
  args = parser.parse_args()
  dtypes = args.dtype.split(",")
  print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, {os.cpu_count()} CPU cores")
  print(f"| {'part':<34} | {'dtype':<8} | {'batch':>5} | {'encode /s':>10} | {'decode /s':>10} |")
  print(f"|{'-' * 36}|{'-' * 10}|{'-' * 7}|{'-' * 12}|{'-' * 12}|")
  rows = (vae_rows(args.repeats, dtypes) if args.only in ("vae", "all") else []) + \
         (t5_rows(args.repeats, dtypes) if args.only in ("t5", "all") else [])
  for part, dtype, batch, enc, dec in rows:
    dec_text = f"{dec:10.2f}" if dec is not None else f"{'':>10}"
    print(f"| {part:<34} | {dtype:<8} | {batch:>5} | {enc:10.2f} | {dec_text} |", flush=True)
  print("units: frames per second (SD VAE), captions per second (T5)")


if __name__ == "__main__":
  main()
