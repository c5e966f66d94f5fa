"""Wall time of one sampling step (VIN, full, autoregressive) at several video lengths, and how well the
train step uses the CPU: its achieved FLOP/s against a plain f32 matmul's, measured in the same process.

Sampler steps run the paper-shaped CPU model of benchmarks/cost.py (random weights; time does not depend on
them), one step of `sample_parallel` per call (autoregressive: one step of every chain, i.e. a 1-chunk chain
and N - 1 two-chunk chains, as `sample_autoregressive` runs them). Calls are interleaved round-robin over
lengths and methods, so that a change in the machine's load hits all of them alike; medians are reported.
The train step is configs/tiny.py's (the CPU demo) at batch 8, one compile per training bucket length.
Run:

  python benchmarks/speed.py [--lengths 40,80,160,320] [--repeats 7] [--quick]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from vin_jax import config as config_lib  # noqa: E402
from vin_jax import train as train_lib  # noqa: E402
from vin_jax.diffusion import sampler  # noqa: E402
from vin_jax.diffusion.schedules import Schedule  # noqa: E402
from vin_jax.model import ModelDef  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cost as cost_bench  # noqa: E402

METHODS = ("vin", "full", "autoregressive")
MATMUL_SIZE = 1024


def xla_flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"])


def timed(fn) -> float:
  """Seconds for one call of fn(), results fetched (block_until_ready)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def sampler_steps(config, lengths):
  """{(frames, method): (callable, XLA FLOPs)}: one sampling step each, compiled and warmed up."""
  model_def = ModelDef(config)
  params = model_def.init(jax.random.key(0))
  schedule = Schedule.from_config(config)
  h, w, c = config_lib.latent_shape(config)
  f, t = config.chunking.chunk_frames, config.text
  text = jnp.asarray(np.random.RandomState(0).randn(1, t.max_length, t.precomputed_dim), jnp.float32)

  def compile_chain(method, n):
    settings = dataclasses.replace(sampler.SamplerSettings.for_method(config, method), num_steps=1, t_alpha=0)
    fn = jax.jit(lambda p, z, tx, x0, m: sampler.sample_parallel(model_def.bind(p), schedule, settings, z, tx,
                                                                 clean_x0=x0, clean_mask_BxNxF=m))
    noise = jax.random.normal(jax.random.key(n), (1, n, f, h, w, c))
    mask = jnp.zeros((1, n, f), bool)
    compiled = fn.lower(params, noise, text, noise, mask).compile()
    return compiled, noise, mask

  steps, chains = {}, {}
  for frames in lengths:
    n = cost_bench.chunks_for(config, frames)
    for method in METHODS:
      if method == "autoregressive":
        for k in (1, 2):
          if k not in chains:
            chains[k] = compile_chain(method, k)[0]
        noise = jax.random.normal(jax.random.key(n), (1, n, f, h, w, c))
        chain = lambda z, tx, x0, m: chains[z.shape[1]](params, z, tx, x0, m)
        call = lambda chain=chain, noise=noise: sampler.sample_autoregressive(chain, noise, text)
        flops = xla_flops(chains[1]) + (n - 1) * xla_flops(chains[2])
      else:
        compiled, noise, mask = compile_chain(method, n)
        call = lambda compiled=compiled, noise=noise, mask=mask: compiled(params, noise, text, noise, mask)
        flops = xla_flops(compiled)
      timed(call)
      steps[(frames, method)] = (call, flops)
      print(f"  compiled {method} at {frames} latent frames", flush=True)
  return steps


def train_steps(buckets):
  """{chunks: (callable, XLA FLOPs)}: configs/tiny.py's train step at batch 8, compiled and warmed up."""
  config = config_lib.load_config_file(os.path.join(cost_bench.REPO, "configs", "tiny.py"))
  model_def = ModelDef(config)
  optimizer = train_lib.make_optimizer(config)
  step = jax.jit(train_lib.make_train_step(model_def, config, optimizer))
  state = train_lib.create_state(model_def, optimizer, jax.random.key(0))
  rng = np.random.RandomState(0)
  out = {}
  for n in buckets:
    frames = n * config_lib.pixel_frames_per_chunk(config)
    batch = {"frames": jnp.asarray(rng.randint(0, 256, (config.data.batch_size, frames, config.data.height,
                                                         config.data.width, 3)), jnp.uint8),
             "text_tokens": jnp.asarray(rng.randint(1, 200, (config.data.batch_size, config.text.max_length)),
                                        jnp.int32)}
    compiled = step.lower(state, batch, jax.random.key(1)).compile()
    loops = [line for line in compiled.as_text().splitlines() if " while(" in line]
    if any("threefry" not in line and "_uniform" not in line for line in loops):
      # cost_analysis counts a loop body once; the RNG's threefry rounds (integer ops) are the known ones
      print(f"  warning: the train step at {n} chunks has a non-RNG while loop; its FLOPs are undercounted")
    call = lambda compiled=compiled, batch=batch: compiled(state, batch, jax.random.key(1))
    timed(call)
    out[n] = (call, xla_flops(compiled))
    print(f"  compiled the tiny train step at {n} chunk(s)", flush=True)
  return out


def matmul():
  a = jax.random.normal(jax.random.key(0), (MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (MATMUL_SIZE, MATMUL_SIZE), jnp.float32)
  compiled = jax.jit(jnp.matmul).lower(a, b).compile()
  call = lambda: compiled(a, b)
  timed(call)
  return call, 2.0 * MATMUL_SIZE ** 3


def round_robin(programs: dict, repeats: int) -> dict:
  """{key: [seconds]}: every program once per round, `repeats` rounds."""
  times = {key: [] for key in programs}
  for _ in range(repeats):
    for key, (call, _) in programs.items():
      times[key].append(timed(call))
  return times


def print_sampler(steps, times, peak):
  print("\nOne sampling step (batch 1) of the paper-shaped CPU model (benchmarks/cost.py): median wall time "
        f"over {len(next(iter(times.values())))} interleaved repetitions")
  print("| latent frames | method | median ms | min - max ms | XLA GFLOP | GFLOP/s | / matmul FLOP/s |")
  print("|---:|---|---:|---:|---:|---:|---:|")
  med = {k: statistics.median(v) for k, v in times.items()}
  for (frames, method), (_, flops) in steps.items():
    s = med[(frames, method)]
    print(f"| {frames} | {method} | {1e3 * s:.1f} | {1e3 * min(times[(frames, method)]):.1f} - "
          f"{1e3 * max(times[(frames, method)]):.1f} | {flops / 1e9:.3f} | {flops / s / 1e9:.1f} | "
          f"{flops / s / peak:.2f} |")
  print("\n| latent frames | VIN / full time | VIN / full XLA FLOPs | autoregressive / VIN time | VIN ms / frame |")
  print("|---:|---:|---:|---:|---:|")
  for frames in sorted({f for f, _ in steps}):
    v, fu, ar = med[(frames, "vin")], med[(frames, "full")], med[(frames, "autoregressive")]
    print(f"| {frames} | {v / fu:.3f} | {steps[(frames, 'vin')][1] / steps[(frames, 'full')][1]:.3f} | "
          f"{ar / v:.2f} | {1e3 * v / frames:.2f} |")


def print_train(train, times, matmul_times, matmul_flops):
  peak = matmul_flops / statistics.median(matmul_times)
  print(f"\nCPU utilisation: train step (configs/tiny.py, batch 8) against a {MATMUL_SIZE}^3 f32 matmul, "
        f"same process, interleaved ({jax.device_count()} device, {os.cpu_count()} cores visible)")
  print("| program | XLA GFLOP | median ms | GFLOP/s | / matmul FLOP/s |")
  print("|---|---:|---:|---:|---:|")
  print(f"| f32 matmul {MATMUL_SIZE}^3 | {matmul_flops / 1e9:.3f} | {1e3 * statistics.median(matmul_times):.1f} "
        f"| {peak / 1e9:.1f} | 1.00 |")
  for n, (_, flops) in train.items():
    s = statistics.median(times[n])
    print(f"| train step, {n} chunk(s) of 8 latent frames | {flops / 1e9:.3f} | {1e3 * s:.1f} | "
          f"{flops / s / 1e9:.1f} | {flops / s / peak:.2f} |")
  return peak


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", default=None, help="latent frames, comma separated (multiples of 20)")
  parser.add_argument("--repeats", type=int, default=None)
  parser.add_argument("--quick", action="store_true", help="lengths 40,80; 3 repeats; one train bucket")
  args = parser.parse_args()
  lengths = ([int(x) for x in args.lengths.split(",")] if args.lengths else
             list(cost_bench.QUICK_LENGTHS if args.quick else cost_bench.DEFAULT_LENGTHS))
  repeats = args.repeats or (3 if args.quick else 7)
  start = time.perf_counter()

  print("compiling:", flush=True)
  train = train_steps((4,) if args.quick else (1, 2, 4))
  mm = matmul()
  steps = sampler_steps(cost_bench.paper_shaped_config(), lengths)

  # One round-robin over everything: matmul, train steps and sampler steps share the machine's state.
  programs = {("matmul",): mm, **{("train", n): v for n, v in train.items()}, **steps}
  times = round_robin(programs, repeats)
  peak = print_train(train, {n: times[("train", n)] for n in train}, times[("matmul",)], mm[1])
  print_sampler(steps, {k: times[k] for k in steps}, peak)
  print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  main()
