"""Bytes each device moves per collective kind, read from the compiled (SPMD-partitioned) HLO of the
sharded train step and of one sampler step, at two video lengths on 4 chunk-devices.

What it shows: no all-gather of video-sized arrays; all-reduce bytes that do not grow with the video
(the VIN's partial-attention combine is O(G * d) per layer); collective-permute bytes equal to the halo
(L context frames one way, their predictions back). Run:

  python benchmarks/communication.py [--chunks 4,16] [--devices 4] [--context_mode recompute,shared]

In shared mode (chunking.context_mode) the collective-permutes are each layer's key/value halo (L frames of
keys and values) instead of the video halo.
"""
from __future__ import annotations

import argparse
import os
import sys

if __name__ == "__main__":   # imported (by a test), it leaves the process's devices alone
  _DEVICES = 4
  for i, arg in enumerate(sys.argv):
    if arg == "--devices" and i + 1 < len(sys.argv):
      _DEVICES = int(sys.argv[i + 1])
  os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={_DEVICES}"
  os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vin_jax import config as config_lib  # noqa: E402
from vin_jax import train as train_lib  # noqa: E402
from vin_jax.diffusion import sampler  # noqa: E402
from vin_jax.diffusion.schedules import Schedule  # noqa: E402
from vin_jax.parallel import mesh as mesh_lib  # noqa: E402
from vin_jax.parallel.collectives import KINDS, collective_bytes  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def bench_config(num_chunks: int, devices: int, context_mode: str = "recompute"):
  config = config_lib.load_config_file(os.path.join(REPO, "configs", "tiny.py"))
  config.chunking.context_mode = context_mode
  if context_mode == "shared":
    config.sampling.fusion = "none"
  config.mesh.chunk = devices
  config.data.batch_size = 1
  config.data.bucket_chunks = (num_chunks,)
  config.data.bucket_weights = (1.0,)
  config.data.num_frames = num_chunks * config_lib.pixel_frames_per_chunk(config)
  config.sampling.num_steps = 1
  config.sampling.t_alpha = 0
  return config


def _mesh(config):
  """config's mesh on the first devices it needs (a test process may have more)."""
  m = config.mesh
  return mesh_lib.make_mesh(config, jax.devices()[:m.data * m.fsdp * m.chunk])


def compiled_texts(config, num_chunks: int):
  """(train step HLO, sampler step HLO, local video bytes, halo bytes) on `config`'s mesh."""
  mesh = _mesh(config)
  model_def = train_lib.ModelDef(config)
  optimizer = train_lib.make_optimizer(config)
  state = train_lib.create_state(model_def, optimizer, jax.random.key(0), mesh)
  step = train_lib.jit_train_step(model_def, config, optimizer, mesh, state)
  frames = jax.ShapeDtypeStruct((1, num_chunks * config_lib.pixel_frames_per_chunk(config), config.data.height,
                                 config.data.width, 3), jnp.uint8)
  text = jax.ShapeDtypeStruct((1, config.text.max_length), jnp.int32)
  train_hlo = step.lower(state, {"frames": frames, "text_tokens": text}, jax.random.key(1)).compile().as_text()
  h, w, c = config_lib.latent_shape(config)
  local = (1, num_chunks // mesh.shape["chunk"], config.chunking.chunk_frames, h, w, c)
  video_bytes_per_device = int(np.prod(local)) * 4
  halo_bytes = int(np.prod((1, 1, config.chunking.inference_context_frames, h, w, c))) * 4
  return train_hlo, sampler_text(config, num_chunks), video_bytes_per_device, halo_bytes


def sampler_text(config, num_chunks: int) -> str:
  """The compiled HLO of one sampler step of a 1-video batch of `num_chunks` chunks on `config`'s mesh."""
  mesh = _mesh(config)
  model_def = train_lib.ModelDef(config)
  settings = sampler.SamplerSettings.from_config(config)
  schedule = Schedule.from_config(config)
  h, w, c = config_lib.latent_shape(config)

  def per_device(params, noise, text):
    return sampler.sample_parallel(model_def.bind(params), schedule, settings, noise, text, axis_name="chunk")

  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, out_specs=mesh_lib.VIDEO,
                             in_specs=(mesh_lib.REPLICATED, mesh_lib.VIDEO, mesh_lib.ROWS)))
  noise = jax.ShapeDtypeStruct((1, num_chunks, config.chunking.chunk_frames, h, w, c), jnp.float32)
  text = jax.ShapeDtypeStruct((1, config.text.max_length), jnp.int32)
  return fn.lower(model_def.abstract_params(), noise, text).compile().as_text()


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--chunks", default="4,16")
  parser.add_argument("--devices", type=int, default=4)
  parser.add_argument("--context_mode", default="recompute", help="recompute, shared or both (comma-separated)")
  args = parser.parse_args()
  for mode in args.context_mode.split(","):
    report(mode, [int(x) for x in args.chunks.split(",")], args.devices)


def report(mode: str, chunk_counts, devices: int):
  rows = []
  for n in chunk_counts:
    config = bench_config(n, devices, mode)
    train_hlo, sample_hlo, video_bytes, halo = compiled_texts(config, n)
    for name, text in (("train step", train_hlo), ("sampler step", sample_hlo)):
      found = collective_bytes(text)
      rows.append((name, n, video_bytes, halo, {k: (len(v), sum(v), max(v, default=0)) for k, v in found.items()}))
  print(f"\nCollective bytes per device, tiny config, context_mode={mode}, mesh chunk={devices} "
        "(counts; total; largest op)")
  header = f"| {'program':12s} | chunks | local video B | halo B | " + " | ".join(f"{k} (n / total B / max B)" for k in KINDS) + " |"
  print(header)
  print("|" + "---|" * (4 + len(KINDS)))
  for name, n, video, halo, found in rows:
    cells = " | ".join(f"{c} / {t:,} / {m:,}" for c, t, m in (found[k] for k in KINDS))
    print(f"| {name:12s} | {n:6d} | {video:13,d} | {halo:6,d} | {cells} |")
  print()
  for name in ("train step", "sampler step"):
    mine = [r for r in rows if r[0] == name]
    gathers = [r[4]["all-gather"][2] for r in mine]
    video_sized = [g for g, r in zip(gathers, mine) if g >= r[2]]
    reduces = " -> ".join(f"{r[4]['all-reduce'][1]:,}" for r in mine)
    lengths = " -> ".join(str(r[1]) for r in mine)
    permutes = " / ".join(f"{r[4]['collective-permute'][2]:,}" for r in mine)
    print(f"{name}: largest all-gather {max(gathers):,} B (video-sized: {video_sized or 'none'}); "
          f"all-reduce total {reduces} B for {lengths} chunks; largest collective-permute {permutes} B "
          f"(halo {mine[0][3]:,} B)")

if __name__ == "__main__":
  main()
