"""Bytes each device moves per collective kind, read from the compiled (SPMD-partitioned) HLO of the
sharded train step and of one sampler step, at two video lengths on 4 chunk-devices.

What it shows: no all-gather of video-sized arrays; all-reduce bytes that do not grow with the video
(the VIN's partial-attention combine is O(G * d) per layer); collective-permute bytes equal to the halo
(L context frames one way, their predictions back). Run:

  python benchmarks/communication.py [--chunks 4,16] [--devices 4]
"""
from __future__ import annotations

import argparse
import os
import re
import sys

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

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS = ("all-reduce", "all-gather", "reduce-scatter", "collective-permute", "all-to-all")
_DTYPE_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1, "f64": 8,
                "s64": 8, "u64": 8}
_SHAPE = re.compile(r"\b(f32|bf16|f16|s32|u32|pred|s8|u8|f64|s64|u64)\[([0-9,]*)\]")


_OP = re.compile(r"=\s*(?P<result>.*?)\s(?P<op>" + "|".join(KINDS) + r")(?P<start>-start)?\(")


def collective_bytes(hlo_text: str) -> dict[str, list[int]]:
  """{kind: [bytes of each op's result]} over the module's collectives (async pairs counted once)."""
  found = {k: [] for k in KINDS}
  for line in hlo_text.splitlines():
    match = _OP.search(line)
    if not match:
      continue
    total = 0
    for dtype, dims in _SHAPE.findall(match["result"]):
      total += int(np.prod([int(d) for d in dims.split(",") if d])) * _DTYPE_BYTES[dtype]
    if match["start"] and match["op"] in ("collective-permute", "all-gather"):
      total //= 2  # an async start op's result holds both its input and output buffers
    found[match["op"]].append(total)
  return found


def bench_config(num_chunks: int, devices: int):
  config = config_lib.load_config_file(os.path.join(REPO, "configs", "tiny.py"))
  config.mesh.chunk = devices
  config.data.batch_size = 1
  config.data.bucket_chunks = (num_chunks,)
  config.data.bucket_weights = (1.0,)
  config.data.num_frames = num_chunks * config_lib.pixel_frames_per_chunk(config)
  config.sampling.num_steps = 1
  config.sampling.t_alpha = 0
  return config


def compiled_texts(config, num_chunks: int):
  mesh = mesh_lib.make_mesh(config)
  model_def = train_lib.ModelDef(config)
  optimizer = train_lib.make_optimizer(config)
  state = train_lib.create_state(model_def, optimizer, jax.random.key(0), mesh)
  step = train_lib.jit_train_step(model_def, config, optimizer, mesh, state)
  frames = jax.ShapeDtypeStruct((1, num_chunks * config_lib.pixel_frames_per_chunk(config), config.data.height,
                                 config.data.width, 3), jnp.uint8)
  text = jax.ShapeDtypeStruct((1, config.text.max_length), jnp.int32)
  train_hlo = step.lower(state, {"frames": frames, "text_tokens": text}, jax.random.key(1)).compile().as_text()

  settings = sampler.SamplerSettings.from_config(config)
  schedule = Schedule.from_config(config)
  h, w, c = config_lib.latent_shape(config)
  local = (1, num_chunks // mesh.shape["chunk"], config.chunking.chunk_frames, h, w, c)

  def per_device(params, noise, text):
    return sampler.sample_parallel(model_def.bind(params), schedule, settings, noise, text, axis_name="chunk")

  fn = jax.jit(jax.shard_map(per_device, mesh=mesh, out_specs=mesh_lib.VIDEO,
                             in_specs=(mesh_lib.REPLICATED, mesh_lib.VIDEO, mesh_lib.ROWS)))
  noise = jax.ShapeDtypeStruct((1, num_chunks) + local[2:], jnp.float32)
  sample_hlo = fn.lower(state["params"], noise, text).compile().as_text()
  video_bytes_per_device = int(np.prod(local)) * 4
  halo_bytes = int(np.prod((1, 1, config.chunking.inference_context_frames, h, w, c))) * 4
  return train_hlo, sample_hlo, video_bytes_per_device, halo_bytes


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--chunks", default="4,16")
  parser.add_argument("--devices", type=int, default=4)
  args = parser.parse_args()
  rows = []
  for n in [int(x) for x in args.chunks.split(",")]:
    config = bench_config(n, args.devices)
    train_hlo, sample_hlo, video_bytes, halo = compiled_texts(config, n)
    for name, text in (("train step", train_hlo), ("sampler step", sample_hlo)):
      found = collective_bytes(text)
      rows.append((name, n, video_bytes, halo, {k: (len(v), sum(v), max(v, default=0)) for k, v in found.items()}))
  print(f"Collective bytes per device, tiny config, mesh chunk={args.devices} (counts; total; largest op)")
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
