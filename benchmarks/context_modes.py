"""Quality of chunking.context_mode="recompute" (the paper) against "shared" (beyond the paper), same budget.

For each seed, trains the config's VIN model in both modes through the ablation runner (resumable: finished
sub-runs are skipped), samples the same prompts, first frames and noise, and prints one table: the own-frame
training MSE over the last `--tail_steps` steps, and the samples' MAWE-DIS, identity consistency and seam ratio,
each with its standard error, and the paired per-video difference to the seed's first row (recompute when it
is run). `--modes=shared,shared_kv` compares keys-and-values global tokens with shared context's default.

  python benchmarks/context_modes.py --config=configs/micro.py --workdir=runs/context_modes --seeds=0,1

Layout: WORKDIR/<mode>_s<seed>/ is one `ablate` workdir (rows: the full model; recompute also samples without
fusion, so that the fusion and the mode can be told apart). `--summarize` only reads what exists.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from vin_jax import ablation  # noqa: E402
from vin_jax import config as config_lib  # noqa: E402

MODES = {
    "recompute": ({}, "full_model,no_fusion"),
    "shared": ({"chunking.context_mode": "shared", "sampling.fusion": "none"}, "full_model"),
    # shared context with the global tokens only as keys and values of the windows' self-attention
    # (model.global_tokens_in_dit=keys_values, beyond the paper): the variant that meets #14's FLOPs goal.
    "shared_kv": ({"chunking.context_mode": "shared", "sampling.fusion": "none",
                   "model.global_tokens_in_dit": "keys_values"}, "full_model"),
}
LABELS = {("recompute", "full_model"): "recompute, early fusion", ("recompute", "no_fusion"): "recompute, no fusion",
          ("shared", "full_model"): "shared", ("shared_kv", "full_model"): "shared, keys_values tokens"}
METRICS = (("mawe_dis", "MAWE-DIS", "lower"), ("identity_consistency", "identity", "higher"),
           ("frame_diff_boundary_ratio", "seam ratio", "lower"))


def run_config(path: str, mode: str, seed: int):
  config = config_lib.load_config_file(*path.split(":", 1))   # configs/x.py[:variant]
  overrides, rows = MODES[mode]
  config_lib.override(config, {**overrides, "seed": seed, "ablation.rows": rows})
  return config


def tail_loss(workdir: pathlib.Path, tail_steps: int) -> list[float]:
  """The logged own-frame MSE of the last `tail_steps` training steps (context frames excluded: shared mode
  has none)."""
  lines = [json.loads(line) for line in (workdir / "models" / "vin" / "metrics.jsonl").read_text().splitlines()
           if line.strip()]
  lines = [m for m in lines if "own_mse" in m]
  last = max(m["step"] for m in lines)
  return [m["own_mse"] for m in lines if m["step"] > last - tail_steps]


def row_videos(workdir: pathlib.Path, row: str) -> dict[str, np.ndarray]:
  result = json.loads((workdir / "rows" / row / "metrics.json").read_text())
  return {key: np.asarray(ablation.per_video(result, key)) for key, _, _ in METRICS}


def mean_se(values) -> tuple[float, float]:
  a = np.asarray(values, np.float64)
  a = a[np.isfinite(a)]
  return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else math.nan


def fmt(pair) -> str:
  return f"{pair[0]:.3f} ± {pair[1]:.3f}"


def summarize(workdir: pathlib.Path, seeds, tail_steps: int) -> str:
  entries = []   # (label, seed, loss tail, {metric: per-video})
  for seed in seeds:
    for (mode, row), label in LABELS.items():
      sub = workdir / f"{mode}_s{seed}"
      if not (sub / "rows" / row / "metrics.json").exists():
        continue
      entries.append((label, seed, tail_loss(sub, tail_steps), row_videos(sub, row)))
  lines = [f"| mode | seed | own-frame MSE, last {tail_steps} steps | "
           + " | ".join(title for _, title, _ in METRICS) + " | "
           + " | ".join(f"Δ {title} vs the seed's first row (paired)" for _, title, _ in METRICS) + " |",
           "|---|---:|---:|" + "---:|" * (2 * len(METRICS))]
  for label, seed, loss, videos in entries:
    reference_label, reference = next((lab, v) for lab, s, _, v in entries if s == seed)
    diffs = []
    for key, _, _ in METRICS:
      if label == reference_label:
        diffs.append("")
      else:
        mean, se, _ = ablation.paired_difference(videos[key], reference[key])
        diffs.append(f"{mean:+.3f} ± {se:.3f}")
    lines.append(f"| {label} | {seed} | {fmt(mean_se(loss))} | "
                 + " | ".join(fmt(mean_se(videos[key])) for key, _, _ in METRICS) + " | " + " | ".join(diffs) + " |")
  # Over seeds: each seed's mean, then the mean and SE of those (a seed is one training run).
  labels = list(dict.fromkeys(label for label, *_ in entries))
  if len(seeds) > 1:
    lines += ["", "Over seeds (mean ± SE of the per-seed means):", "",
              "| mode | seeds | own-frame MSE | " + " | ".join(t for _, t, _ in METRICS) + " |",
              "|---|---:|---:|" + "---:|" * len(METRICS)]
    for label in labels:
      runs = [(loss, videos) for lab, _, loss, videos in entries if lab == label]
      cells = [fmt(mean_se([np.mean(loss) for loss, _ in runs]))]
      cells += [fmt(mean_se([np.nanmean(videos[key]) for _, videos in runs])) for key, _, _ in METRICS]
      lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + " |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default="configs/micro.py")
  parser.add_argument("--workdir", default="runs/context_modes")
  parser.add_argument("--seeds", default="0")
  parser.add_argument("--modes", default="recompute,shared", help=f"comma-separated, of {sorted(MODES)}")
  parser.add_argument("--tail_steps", type=int, default=300)
  parser.add_argument("--summarize", action="store_true", help="only tabulate the finished runs")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  modes = args.modes.split(",")
  unknown = sorted(set(modes) - set(MODES))
  if unknown:
    parser.error(f"--modes: unknown {unknown}; known: {sorted(MODES)}")
  workdir = pathlib.Path(args.workdir)
  if not args.summarize:
    for seed in seeds:
      for mode in modes:
        ablation.run(run_config(args.config, mode, seed), str(workdir / f"{mode}_s{seed}"))
  print(summarize(workdir, seeds, args.tail_steps))


if __name__ == "__main__":
  main()
