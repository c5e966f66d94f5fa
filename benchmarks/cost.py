"""FLOPs and memory of one sampling step for VIN, no_global, full and autoregressive, analytic and XLA.

A paper-shaped model (configs/paper.py's structure, scaled down so that it compiles on a CPU) is compiled
at each video length; the analytic model (vin_jax.evaluation.flops) is checked against XLA's count. Then the
analytic table for configs/paper.py itself. Run:

  python benchmarks/cost.py [--lengths 40,80,160,320] [--quick] [--no_paper_xla]

What the paper-shaped model keeps from configs/paper.py: chunks of 20 latent frames, 12 context frames at
inference, keyframes every 5 latent frames (1.0 s at 16 fps, 16 pixel -> 5 latent frames), spatial patch 2,
temporal patch 1, 4 latent channels, 120 precomputed text tokens through a 2-block text encoder, the eps
objective and early fusion. What it scales (see `paper_shaped_config`): the latent grid 24x40 -> 6x10
(15 instead of 240 tokens per frame), the DiT 1152 wide x 28 deep with 16 heads -> 64 x 4 with 4 heads,
the VIN 4096 wide with 32 heads and 4 processor blocks -> 256 with 8 heads and 1 block, global tokens
512 -> 32 (the same ~2 frames' worth of tokens), text width 1152 -> 64, T5 width 4096 -> 256, bfloat16 ->
float32, and guidance 7.5 -> 1 (no CFG doubling; the paper table below keeps 7.5, i.e. 2 model rows).
Tokens per frame over DiT width stays ~0.2, so attention's share of the DiT is close to the paper's.
Last, configs/paper.py at its own dimensions, analytic and XLA-counted (depth 1 and 2 compiled, extrapolated to
28 blocks), for full attention, VIN, VIN with shared context, and shared context with keys_values global
tokens (both beyond the paper), against issue #14's goals.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from vin_jax import config as config_lib  # noqa: E402
from vin_jax.evaluation import flops  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_LENGTHS = (40, 80, 160, 320)
QUICK_LENGTHS = (40, 80)


def paper_config():
  """configs/paper.py as is (data.video_dir and the VAE's weights set to dummies so that validate passes;
  nothing reads data or runs the VAE: the sampler step works on latents)."""
  config = config_lib.load_config_file(os.path.join(REPO, "configs", "paper.py"))
  config.data.video_dir = "/unused"
  config.autoencoder.weights = "/unused"
  config.data.latents = True          # precomputed T5 text, as paper.py trains
  config_lib.validate(config)
  return config


def paper_shaped_config():
  """configs/paper.py's structure at CPU size (the scaling is listed in this module's docstring)."""
  c = paper_config()
  c.data.height, c.data.width = 48, 80            # latent 6x10 (x8 VAE), 3x5 patches of 2x2
  c.model.width, c.model.depth, c.model.num_heads = 64, 4, 4
  c.model.dtype = "float32"
  # Unrolled: XLA's cost analysis counts a scan body once, so paper.py's scanned layers would count one block
  # of the DiT and of the VIN processor (the ~3x gap to the analytic model that earlier runs showed).
  c.model.scan_layers = False
  c.vin.width, c.vin.num_heads, c.vin.processor_depth = 256, 8, 1
  c.vin.num_global_tokens = 32
  c.text.width, c.text.num_heads, c.text.precomputed_dim = 64, 4, 256
  c.sampling.guidance_scale = 1.0
  config_lib.validate(c)
  return c


def chunks_for(config, latent_frames: int) -> int:
  f = config.chunking.chunk_frames
  if latent_frames % f:
    raise ValueError(f"--lengths: {latent_frames} latent frames is not a multiple of chunk_frames={f}")
  return latent_frames // f


def measure(config, lengths, methods=flops.METHODS):
  """[(frames, method, analytic dict, xla dict)]; the autoregressive chains are compiled once."""
  rows, chains = [], {}
  for frames in lengths:
    n = chunks_for(config, frames)
    for method in methods:
      analytic = flops.sampling_step_flops(config, method, n)
      if method == "autoregressive":
        seconds = 0.0
        for k in (1, 2):
          if k not in chains:
            chains[k] = flops.xla_compiled_cost(config, method, k)
            seconds += chains[k]["compile_seconds"]
        xla = flops.combine_autoregressive(chains[1], chains[2], n)
      else:
        xla = flops.xla_sampling_step_cost(config, method, n)
        seconds = xla["compile_seconds"]
      rows.append((frames, method, analytic, xla))
      print(f"  {method} at {frames} latent frames: compiled in {seconds:.1f} s", flush=True)
  return rows


def print_measured(rows):
  print("\nOne sampling step (batch 1), paper-shaped model at CPU size: FLOPs analytic vs XLA, memory "
        "(argument + output + temp - alias)")
  print("| latent frames | method | analytic GFLOP | XLA GFLOP | analytic / XLA | analytic GFLOP / frame "
        "| memory MB |")
  print("|---:|---|---:|---:|---:|---:|---:|")
  for frames, method, a, x in rows:
    print(f"| {frames} | {method} | {a['total'] / 1e9:.3f} | {x['flops'] / 1e9:.3f} | {a['total'] / x['flops']:.3f} "
          f"| {a['per_frame'] / 1e9:.4f} | {x['memory_bytes'] / 2**20:.1f} |")
  by = {(f, m): (a, x) for f, m, a, x in rows}
  lengths = sorted({f for f, _, _, _ in rows})
  if not all((f, m) in by for f in lengths for m in ("vin", "full")):
    return
  print("\n| latent frames | VIN / full (analytic) | VIN / full (XLA) | VIN shared / full (analytic) "
        "| VIN shared / full (XLA) | VIN GFLOP / frame (analytic) | VIN GFLOP / frame (XLA) "
        "| VIN memory / full memory |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|")
  nan = {"total": float("nan"), "flops": float("nan")}
  for f in lengths:
    (va, vx), (fa, fx) = by[(f, "vin")], by[(f, "full")]
    sa, sx = by.get((f, "vin shared"), (nan, nan))
    print(f"| {f} | {va['total'] / fa['total']:.3f} | {vx['flops'] / fx['flops']:.3f} "
          f"| {sa['total'] / fa['total']:.3f} | {sx['flops'] / fx['flops']:.3f} | {va['per_frame'] / 1e9:.4f} "
          f"| {vx['flops'] / f / 1e9:.4f} | {vx['memory_bytes'] / fx['memory_bytes']:.3f} |")


# The variants of configs/paper.py that the paper tables compare with full attention.
PAPER_VARIANTS = {
    "vin": {},
    "vin shared": {"chunking.context_mode": "shared", "sampling.fusion": "none"},
    "vin shared, keys_values": {"chunking.context_mode": "shared", "sampling.fusion": "none",
                                "model.global_tokens_in_dit": "keys_values"},
}
# Issue #14's goals for VIN shared / full at 80 / 160 / 320 latent frames.
GOALS = {80: 0.6, 160: 0.35, 320: 0.2}


def variant_config(config, name: str):
  """`config` with PAPER_VARIANTS[name]'s overrides (beyond the paper: shared context, keys_values tokens)."""
  variant = config_lib.override(config.copy_and_resolve_references(), PAPER_VARIANTS[name])
  config_lib.validate(variant)
  return variant


def print_paper(config, lengths):
  rows_per_video = 2 if config.sampling.guidance_scale != 1.0 else 1
  print(f"\nconfigs/paper.py, analytic only: TFLOP per sampling step (batch 1; guidance "
        f"{config.sampling.guidance_scale} -> {rows_per_video} model rows per video)")
  print("| latent frames | vin | no_global | full | autoregressive | VIN / full | VIN shared / full "
        "| VIN shared, keys_values / full | VIN TFLOP / frame | VIN network share of vin | matmul share of vin |")
  print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
  shared, kv = (variant_config(config, name) for name in ("vin shared", "vin shared, keys_values"))
  for frames in lengths:
    n = chunks_for(config, frames)
    r = {m: flops.sampling_step_flops(config, m, n) for m in flops.METHODS}
    v, full = r["vin"], r["full"]["total"]
    vs, vk = (flops.sampling_step_flops(c, "vin", n)["total"] for c in (shared, kv))
    print(f"| {frames} | {v['total'] / 1e12:.1f} | {r['no_global']['total'] / 1e12:.1f} "
          f"| {full / 1e12:.1f} | {r['autoregressive']['total'] / 1e12:.1f} "
          f"| {v['total'] / full:.3f} | {vs / full:.3f} | {vk / full:.3f} "
          f"| {v['per_frame'] / 1e12:.3f} | {v['vin'] / v['total']:.3f} | {v['matmul'] / v['total']:.3f} |")


def print_paper_factorised(config, lengths):
  """configs/paper.py with model.attention_layout="factorised" (STIV's spatial then temporal attention), analytic;
  its count matches XLA within 10% on the tiny:test shapes (tests/evaluation/test_flops.py)."""
  fact = config_lib.override(config.copy_and_resolve_references(), {"model.attention_layout": "factorised"})
  config_lib.validate(fact)
  print("\nconfigs/paper.py, factorised attention (analytic), against the joint layout")
  print("| latent frames | factorised full / joint full | factorised VIN / joint full | factorised VIN / joint VIN "
        "| factorised VIN / factorised full |")
  print("|---:|---:|---:|---:|---:|")
  for frames in lengths:
    n = chunks_for(config, frames)
    jf, jv, ff, fv = (flops.sampling_step_flops(c, m, n)["total"]
                      for c, m in ((config, "full"), (config, "vin"), (fact, "full"), (fact, "vin")))
    print(f"| {frames} | {ff / jf:.3f} | {fv / jf:.3f} | {fv / jv:.3f} | {fv / ff:.3f} |")


def print_paper_xla(config, lengths):
  """configs/paper.py at its own dimensions, counted by XLA (depth 1 and 2 compiled unrolled, extrapolated to
  the 28 blocks: `flops.xla_depth_extrapolated_flops`) beside the analytic model."""
  print("\nconfigs/paper.py at its own dimensions (d = 1152, 240 tokens a frame, chunk 20, inference context 12, "
        "512 global tokens, CFG): TFLOP per sampling step, XLA from depth 1 and 2 extrapolated to 28")
  print("| latent frames | variant | analytic TFLOP | XLA TFLOP | analytic / XLA | / full (analytic) "
        "| / full (XLA) | DiT alone / full (analytic) | DiT blocks / full (XLA) | goal (#14) |")
  print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for frames in lengths:
    n = chunks_for(config, frames)
    full_a = flops.sampling_step_flops(config, "full", n)["total"]
    full_xla = flops.xla_depth_extrapolated(config, "full", n)
    full_x = full_xla["total"]
    print(f"| {frames} | full | {full_a / 1e12:.1f} | {full_x / 1e12:.1f} | {full_a / full_x:.3f} | 1 | 1 | 1 | 1 "
          "| |", flush=True)
    for name in PAPER_VARIANTS:
      c = variant_config(config, name)
      parts = flops.sampling_step_flops(c, "vin", n)
      a = parts["total"]
      xla = flops.xla_depth_extrapolated(c, "vin", n)
      x = xla["total"]
      goal = GOALS.get(frames, "") if name != "vin" else ""
      print(f"| {frames} | {name} | {a / 1e12:.1f} | {x / 1e12:.1f} | {a / x:.3f} | {a / full_a:.3f} "
            f"| {x / full_x:.3f} | {parts['dit'] / full_a:.3f} | {xla['dit_blocks'] / full_xla['dit_blocks']:.3f} "
            f"| {goal} |", flush=True)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--lengths", default=None, help="latent frames, comma separated (multiples of 20)")
  parser.add_argument("--quick", action="store_true", help=f"lengths {QUICK_LENGTHS} only")
  parser.add_argument("--no_paper_xla", action="store_true",
                      help="skip XLA's count of configs/paper.py at its own dimensions (depth 1, 2 extrapolated)")
  args = parser.parse_args()
  lengths = ([int(x) for x in args.lengths.split(",")] if args.lengths else
             list(QUICK_LENGTHS if args.quick else DEFAULT_LENGTHS))
  start = time.perf_counter()
  config = paper_shaped_config()
  print(f"paper-shaped model: latent {config_lib.latent_shape(config)}, DiT {config.model.width}x"
        f"{config.model.depth}, VIN {config.vin.width} x {config.vin.processor_depth} block(s), "
        f"G={config.vin.num_global_tokens}, chunk {config.chunking.chunk_frames}, context "
        f"{config.chunking.inference_context_frames}, keyframe stride {config_lib.keyframe_stride(config)}")
  rows = measure(config, lengths)
  for name in ("vin shared", "vin shared, keys_values"):
    rows += [(f, name, a, x) for f, _, a, x in measure(variant_config(config, name), lengths, ("vin",))]
  print_measured(rows)
  print_paper(paper_config(), sorted(set(lengths) | set(DEFAULT_LENGTHS)))
  print_paper_factorised(paper_config(), sorted(set(lengths) | set(DEFAULT_LENGTHS)))
  if not args.no_paper_xla:
    print_paper_xla(paper_config(), [f for f in lengths if f in GOALS] or sorted(GOALS))
  print(f"\n({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
  main()
