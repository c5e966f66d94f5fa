"""Memory and CPU throughput of the Wan 2.1 VAE (vin_jax/autoencoder/wan_vae.py) over video length.

The published Wan 2.1 config (base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4], num_res_blocks 2, attn_scales [],
temperal_downsample [False, True, True]) with random weights, fp32. Encode and decode are compiled
(jit(...).lower(...).compile()) at 1 + 4k frames for each k; XLA's memory_analysis() temp bytes must be flat in k,
since the tiles after the first are a lax.scan that carries only the causal cache (k = 1 is lower: a scan of one
step is inlined). Then the frames per second of one short length, measured on this machine. Run (under a minute on
2 CPU cores):

  JAX_PLATFORMS=cpu python benchmarks/wan_vae_memory.py [--ks 1,4,16,64] [--size 64] [--speed-k 4]
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from vin_jax.autoencoder import wan_vae  # noqa: E402

WAN21 = {"_class_name": "AutoencoderKLWan", "base_dim": 96, "z_dim": 16, "dim_mult": [1, 2, 4, 4],
         "num_res_blocks": 2, "attn_scales": [], "temperal_downsample": [False, True, True]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--ks", default="1,4,16,64", help="video lengths 1 + 4k, comma-separated k")
  parser.add_argument("--size", type=int, default=64, help="frame height and width in pixels")
  parser.add_argument("--speed-k", type=int, default=4, help="k of the length whose throughput is measured")
  args = parser.parse_args()
  ks = [int(k) for k in args.ks.split(",")]

  module = wan_vae.build(wan_vae.module_config_from_hf(WAN21), nnx.Rngs(0))
  graphdef, state = nnx.split(module)
  num_params = sum(x.size for x in jax.tree.leaves(nnx.state(module, nnx.Param)))
  f, tf, z_dim = module.spatial_factor, module.temporal_factor, module.latent_channels
  encode = jax.jit(lambda s, x: nnx.merge(graphdef, s).encode_moments(x)[0])
  decode = jax.jit(lambda s, z: nnx.merge(graphdef, s).decode(z))
  size = args.size
  video = lambda k: jax.ShapeDtypeStruct((1, 1 + 4 * k, size, size, 3), jnp.float32)
  latents = lambda k: jax.ShapeDtypeStruct((1, 1 + 4 * k // tf, size // f, size // f, z_dim), jnp.float32)
  print(f"Wan 2.1 VAE, {num_params / 1e6:.1f}M parameters, fp32, {size}x{size} frames, {jax.devices()[0].platform}")
  print(f"{'k':>4} {'frames':>6} | {'encode temp MiB':>15} {'compile s':>9} | {'decode temp MiB':>15} "
        f"{'compile s':>9} | {'video MiB':>9}")
  compiled = {}
  for k in ks:
    row = []
    for name, fn, spec in (("encode", encode, video(k)), ("decode", decode, latents(k))):
      start = time.perf_counter()
      exe = fn.lower(state, spec).compile()
      row += [exe.memory_analysis().temp_size_in_bytes / 2 ** 20, time.perf_counter() - start]
      compiled[name, k] = exe
    video_mib = (1 + 4 * k) * size * size * 3 * 4 / 2 ** 20
    print(f"{k:>4} {1 + 4 * k:>6} | {row[0]:>15.1f} {row[1]:>9.1f} | {row[2]:>15.1f} {row[3]:>9.1f} | "
          f"{video_mib:>9.2f}")

  k = args.speed_k
  for name, spec in (("encode", video(k)), ("decode", latents(k))):
    exe = compiled.get((name, k)) or (encode if name == "encode" else decode).lower(state, spec).compile()
    x = jax.random.uniform(jax.random.key(0), spec.shape, jnp.float32, -1.0, 1.0)
    jax.block_until_ready(exe(state, x))   # warm-up
    start = time.perf_counter()
    jax.block_until_ready(exe(state, x))
    seconds = time.perf_counter() - start
    print(f"{name} {1 + 4 * k} frames at {size}x{size}: {seconds:.2f} s, {(1 + 4 * k) / seconds:.1f} frames/s "
          f"({jax.device_count()} {jax.devices()[0].platform} device, {os.cpu_count()} cores)")


if __name__ == "__main__":
  main()
