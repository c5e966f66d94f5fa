"""HBM and cost per TPU chip of the real train step and sampler step, compiled for a TPU topology on a CPU.

libtpu (`pip install -e '.[tpu]'`) compiles for abstract TPU devices without a TPU (as MaxText's
train_compile.py does); nothing runs. Each case prints one line: parameters, HBM per chip (arguments,
temporaries, total), whether that fits the chip, FLOPs per chip, XLA's roofline time and the compile time.

  python benchmarks/tpu_aot.py --config=configs/paper.py --topology=v5p:2x2x1 --what=train,sample \
      --method=vin,full --latent_frames=80 [--set model.attention=xla --set train.optimizer=adafactor]

- train: the step `train` runs (`train.make_train_step` under `jit_train_step`'s shardings, state donated) on
  precomputed latents (the pod never runs the VAE in the step), `--videos_per_chip` videos of N latent
  frames per chip. The mesh is `mesh.*` from the config if it matches the chip count, else all chips on
  'data'.
- sample: one step of the real sampler (`sampling._sharded_sampler`: global tokens, every window with CFG as
  configured, fusion active, the scheduler step) for one video of N latent frames, its chunks split over
  all chips (mesh.chunk = chips). `full` has no chunk axis and compiles on one chip.
- A program that cannot fit is refused by the compiler: its row says NO with the temporaries it asked for.
- The program is compiled as it runs for the memory. Its FLOPs and roofline (`--cost=auto`) come from unrolled
  compiles at depth 1 and 2 with loop-free einsum attention, extrapolated: XLA's cost analysis counts a loop
  body once (the layer scan, and `blocked` attention's lax.map over query blocks) and a Pallas call (splash)
  not at all, so the program's own count misses most of the attention.
- Attention is the TPU's `auto` choice (Pallas splash attention, compiled for the TPU: `splash.compiled_for_tpu()`).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import re
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Compile only: several processes may load libtpu at once (a test worker beside a benchmark, say).
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vin_jax import config as config_lib  # noqa: E402
from vin_jax import sampling  # noqa: E402
from vin_jax import train as train_lib  # noqa: E402
from vin_jax.diffusion import sampler  # noqa: E402
from vin_jax.diffusion.schedules import Schedule  # noqa: E402
from vin_jax.model import ModelDef  # noqa: E402
from vin_jax.model import layers  # noqa: E402
from vin_jax.model import splash  # noqa: E402
from vin_jax.model.layers import count_params  # noqa: E402
from vin_jax.parallel import mesh as mesh_lib  # noqa: E402
from vin_jax.parallel.collectives import total_collective_bytes  # noqa: E402

GiB = 2 ** 30
# HBM per chip, and peak bf16 FLOP/s per chip (public spec sheets).
CHIPS = {"v4": (32 * GiB, 275e12), "v5e": (16 * GiB, 197e12), "v5p": (95.74 * GiB, 459e12),
         "v6e": (32 * GiB, 918e12)}


def topology_devices(name: str):
  from jax.experimental import topologies
  return topologies.get_topology_desc(platform="tpu", topology_name=name).devices


def parse_set(items) -> dict:
  """['model.remat=full', ...] -> {'model.remat': 'full'} with values parsed like Python literals."""
  import ast
  out = {}
  for item in items or ():
    field, sep, value = item.partition("=")
    if not sep:
      raise SystemExit(f"--set {item!r}: expected FIELD=VALUE")
    try:
      out[field] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      out[field] = value
  return out


def case_config(args, method: str, what: str, latent_frames: int, num_chips: int):
  path, _, variant = args.config.partition(":")   # configs/tiny.py:test, as on the command line
  config = config_lib.load_config_file(path, variant or None)
  if config.data.name == "video_folder" and not config.data.video_dir:
    config.data.video_dir = "/unused"  # nothing reads data here
  config.data.latents = True            # the step reads precomputed latents: no autoencoder runs in it
  if config.autoencoder.kind != "patch" and not config.autoencoder.weights:
    config.autoencoder.weights = "/unused"   # nor decodes
  config_lib.override(config, parse_set(args.set))
  # This process's backend is the CPU; compile what `auto` picks on a TPU.
  config.model.attention = layers.resolve_attention(config.model.attention, backend="tpu")
  if method == "full":
    config.model.window_mode = "full"
  elif method == "no_global":
    config.vin.enabled = False
  f = config.chunking.chunk_frames
  if latent_frames % f:
    raise SystemExit(f"--latent_frames={latent_frames} is not a multiple of chunking.chunk_frames={f}")
  n = latent_frames // f
  m = config.mesh
  if what == "train":
    if m.data * m.fsdp * m.chunk != num_chips:   # the config's mesh is for another slice: all chips on data
      m.fsdp = m.fsdp if num_chips % m.fsdp == 0 else 1
      m.data, m.chunk = num_chips // m.fsdp, 1
    config.data.batch_size = args.videos_per_chip * num_chips
    config.data.bucket_chunks, config.data.bucket_weights = (n,), (1.0,)
    config.data.num_frames = max(config.data.num_frames, config_lib.pixel_frames_of(config, f * n))
  else:
    m.data, m.fsdp, m.chunk = 1, 1, (1 if method == "full" else num_chips)
    config.sampling.num_chunks, config.sampling.num_samples = n, 1
    config.sampling.num_steps, config.sampling.t_alpha = 1, 0   # one step, inside the fusion range
  config_lib.validate(config, num_devices=m.data * m.fsdp * m.chunk, purpose=what)
  return config, n


def compile_train(config, devices, n: int):
  mesh = mesh_lib.make_mesh(config, devices)
  model_def = ModelDef(config)
  optimizer = train_lib.make_optimizer(config)
  abstract = jax.eval_shape(lambda r: train_lib.init_state(model_def, optimizer, r), jax.random.key(0))
  shardings = mesh_lib.state_shardings(abstract, mesh)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  h, w, c = config_lib.latent_shape(config)
  b = config.data.batch_size
  batch = {"latents": jax.ShapeDtypeStruct((b, n * config.chunking.chunk_frames, h, w, c), jnp.float32,
                                           sharding=mesh_lib.named(mesh, mesh_lib.VIDEO)),
           "text_tokens": _text_struct(config, b, mesh_lib.named(mesh, mesh_lib.ROWS))}
  step = train_lib.jit_train_step(model_def, config, optimizer, mesh, state, video_key="latents")
  rng = jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=mesh_lib.named(mesh, mesh_lib.REPLICATED))
  return step.lower(state, batch, rng), count_params(abstract["params"])


def compile_sample(config, devices, n: int, method: str):
  devices = devices[:config.mesh.chunk]
  mesh = mesh_lib.make_mesh(config, devices)
  model_def = ModelDef(config)
  settings = sampler.SamplerSettings.for_method(config, method)
  schedule = Schedule.from_config(config)
  params = jax.eval_shape(model_def.compute_params, model_def.abstract_params())   # as `generate` samples
  replicated, rows, video = (mesh_lib.named(mesh, s) for s in (mesh_lib.REPLICATED, mesh_lib.ROWS, mesh_lib.VIDEO))
  fn = sampling._sharded_sampler(model_def, schedule, settings, mesh, None,
                                 rescheduled=config.sampling.noise == "rescheduled")
  jitted = jax.jit(fn, in_shardings=(replicated, rows, replicated, video, video), out_shardings=video)
  h, w, c = config_lib.latent_shape(config)
  shape = (1, n, config.chunking.chunk_frames, h, w, c)
  args = (jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated), params),
          _text_struct(config, 1, rows),
          jax.ShapeDtypeStruct((), jax.random.key(0).dtype, sharding=replicated),
          jax.ShapeDtypeStruct(shape, jnp.float32, sharding=video),
          jax.ShapeDtypeStruct(shape[:3], jnp.bool_, sharding=video))
  return jitted.lower(*args), count_params(params)


def _text_struct(config, b: int, sharding):
  if config.text.encoder == "precomputed":
    return jax.ShapeDtypeStruct((b, config.text.max_length, config.text.precomputed_dim), jnp.float32,
                                sharding=sharding)
  return jax.ShapeDtypeStruct((b, config.text.max_length), jnp.int32, sharding=sharding)


@dataclasses.dataclass
class Row:
  topology: str
  method: str
  what: str
  latent_frames: int
  params: int
  argument_gib: float
  temp_gib: float
  total_gib: float
  fits: bool
  tflops_per_chip: float
  optimal_seconds: float
  peak_fraction: float
  compile_seconds: float
  cost_from: str   # "program", or "depth 1, 2" (see depth_extrapolated_cost)
  collective_mib: float = float("nan")   # see collective_bytes


def _compile(config, devices, n: int, what: str, method: str):
  """(compiled program, or the GiB of temporaries the compiler refused; parameter count)."""
  with splash.compiled_for_tpu():   # the Pallas kernels for the TPU, not the CPU's interpreter
    lowered, params = (compile_train(config, devices, n) if what == "train" else
                       compile_sample(config, devices, n, method))
  try:
    return lowered.compile(), params
  except jax.errors.JaxRuntimeError as e:   # the TPU compiler refuses programs that cannot fit
    match = re.search(r"HLO temporaries \(([\d.]+)G\)", str(e))
    if "RESOURCE_EXHAUSTED" not in str(e) or not match:
      raise
    return float(match.group(1)), params   # XLA prints GiB as "G"


def _cost(compiled) -> tuple[float, float]:
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)), float(cost.get("optimal_seconds", 0.0))


def depth_extrapolated_cost(config, devices, n: int, what: str, method: str) -> tuple[float, float]:
  """(FLOPs, optimal seconds) per chip of the `model.depth`-block program, from unrolled compiles at depth 1
  and 2 with einsum attention: XLA's cost analysis counts a loop's body once (a layer scan, blocked
  attention's lax.map over query blocks) and a Pallas kernel not at all, but every block costs the same, so
  cost(depth) = cost(1) + (depth - 1) * (cost(2) - cost(1)). Einsum attention does the same arithmetic as
  splash and blocked attention (its roofline seconds include writing the logits, which splash avoids)."""
  costs = []
  for depth in (1, 2):
    shallow = copy.deepcopy(config)
    shallow.model.depth, shallow.model.scan_layers, shallow.model.attention = depth, False, "einsum"
    compiled, _ = _compile(shallow, devices, n, what, method)
    if isinstance(compiled, float):
      return float("nan"), float("nan")
    costs.append(_cost(compiled))
  (f1, s1), (f2, s2) = costs
  extra = config.model.depth - 1
  seconds = s1 + extra * (s2 - s1)
  # FLOPs extrapolate exactly (paper VIN train: 144.8 against the unrolled program's 144.9 TFLOP per chip);
  # XLA's optimal seconds need not (they came out negative there): then NaN rather than a wrong number.
  return f1 + extra * (f2 - f1), seconds if seconds > 0 else float("nan")


def measure(args, topology: str, what: str, method: str, latent_frames: int) -> Row:
  devices = topology_devices(topology)
  hbm, peak = CHIPS[topology.split(":")[0]]
  config, n = case_config(args, method, what, latent_frames, len(devices))
  start = time.time()
  compiled, params = _compile(config, devices, n, what, method)
  seconds = time.time() - start
  if isinstance(compiled, float):
    return Row(topology, method, what, latent_frames, params, float("nan"), compiled, float("nan"), False,
               float("nan"), float("nan"), float("nan"), seconds, "-")
  mem = compiled.memory_analysis()
  total = mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes - mem.alias_size_in_bytes
  if args.cost == "auto":
    (flops, optimal), cost_from = depth_extrapolated_cost(config, devices, n, what, method), "depth 1, 2, einsum"
  else:
    (flops, optimal), cost_from = _cost(compiled), "program"
  return Row(topology, method, what, latent_frames, params, mem.argument_size_in_bytes / GiB,
             mem.temp_size_in_bytes / GiB, total / GiB, total <= hbm, flops / 1e12, optimal,
             flops / (optimal * peak) if optimal > 0 else 0.0, seconds, cost_from,
             total_collective_bytes(compiled.as_text()) / 2 ** 20)


HEADER = ("topology", "method", "what", "frames", "params", "args GiB", "temp GiB", "total GiB", "fits",
          "TFLOP/chip", "XLA s", "peak frac", "compile s", "cost from", "collective MiB")


def format_row(r: Row) -> str:
  params = f"{r.params / 1e9:.2f}B" if r.params >= 1e8 else f"{r.params / 1e6:.2f}M"
  cells = (r.topology, r.method, r.what, r.latent_frames, params, f"{r.argument_gib:.2f}",
           f"{r.temp_gib:.2f}", f"{r.total_gib:.2f}", "yes" if r.fits else "NO", f"{r.tflops_per_chip:.1f}",
           f"{r.optimal_seconds:.3f}", f"{r.peak_fraction:.2f}", f"{r.compile_seconds:.0f}", r.cost_from,
           f"{r.collective_mib:.1f}")
  return "| " + " | ".join(str(c) for c in cells) + " |"


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default="configs/paper.py")
  parser.add_argument("--topology", default="v5p:2x2x1", help="comma-separated, e.g. v5p:2x2x1,v5e:4x4")
  parser.add_argument("--what", default="train", help="train, sample or both (comma-separated)")
  parser.add_argument("--method", default="vin", help="vin, full, no_global (comma-separated)")
  parser.add_argument("--latent_frames", default="80", help="comma-separated latent video lengths")
  parser.add_argument("--videos_per_chip", type=int, default=1, help="train: videos per chip")
  parser.add_argument("--cost", default="auto", choices=("auto", "program"),
                      help="auto: FLOPs and roofline from unrolled depth-1 and depth-2 compiles with einsum attention "
                           "(XLA counts a loop body once and a Pallas call not at all); program: the compiled "
                           "program's own cost analysis")
  parser.add_argument("--set", action="append", metavar="FIELD=VALUE", help="config override (repeatable)")
  args = parser.parse_args(argv)
  print("| " + " | ".join(HEADER) + " |")
  print("|" + "---|" * len(HEADER))
  rows = []
  for topology in args.topology.split(","):
    for what in args.what.split(","):
      for method in args.method.split(","):
        for frames in (int(x) for x in args.latent_frames.split(",")):
          row = measure(args, topology, what, method, frames)
          rows.append(row)
          print(format_row(row), flush=True)
  return rows


if __name__ == "__main__":
  main()
