"""Where along the video an ablation's samples lose the sprite: per-chunk statistics of each row.

Reads DIR/rows/<row>/metrics.json (written by `python -m vin_jax.main ablate`) and prints, per row and chunk:
the fraction of videos whose chunk's dominant sprite colour is the true one (the validation video's), the
fraction whose chunk agrees with the previous chunk, and the mean sprite area (fraction of pixels). Beside
them, the sprite-area ratio last/first chunk three ways: the table's mean of per-video ratios, their
median, and the ratio of the mean areas (one video can dominate the first). Run:

  python benchmarks/per_chunk_identity.py DIR [--rows full_model,no_global_tokens,...]
"""
from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np


def row_stats(metrics: dict) -> dict:
  """metrics.json of one row -> per-chunk arrays [N] and the area ratios."""
  videos = metrics["videos"]
  truth = metrics["info"].get("true_colors")
  colors = [v["chunk_colors"] for v in videos]
  area = np.array([v["chunk_sprite_area"] for v in videos], np.float64)        # [V, N]
  ratios = np.array([v["sprite_area_last_over_first"] for v in videos], np.float64)
  out = {
      "adjacent": np.array([[c[i] == c[i - 1] for i in range(1, len(c))] for c in colors], float).mean(0),
      "area": area.mean(0),
      "ratio_mean": float(np.nanmean(ratios)),
      "ratio_median": float(np.nanmedian(ratios)),
      "ratio_of_means": float(area.mean(0)[-1] / area.mean(0)[0]) if area.mean(0)[0] > 0 else float("nan"),
  }
  if truth is not None:
    out["true"] = np.array([[c == t[0] for c in cs] for cs, t in zip(colors, truth)], float).mean(0)
  return out


def fmt(values) -> str:
  return " ".join(f"{v:.2f}" for v in values)


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("dir", help="an ablation work directory")
  parser.add_argument("--rows", default="", help="comma-separated rows (default: every finished row)")
  args = parser.parse_args()
  rows_dir = pathlib.Path(args.dir) / "rows"
  if not rows_dir.is_dir():
    raise SystemExit(f"{rows_dir}: not found (is {args.dir} an ablation work directory?)")
  names = [r for r in args.rows.split(",") if r] or sorted(p.name for p in rows_dir.iterdir())
  print("| row | true colour, chunk 0..N-1 | agrees with previous chunk, 1..N-1 | mean sprite area, 0..N-1 "
        "| area last/first: mean of ratios | median | ratio of means |")
  print("|---|---|---|---|---:|---:|---:|")
  for name in names:
    path = rows_dir / name / "metrics.json"
    if not path.exists():
      print(f"| {name} | (not finished: no {path.name}) | | | | | |")
      continue
    s = row_stats(json.loads(path.read_text()))
    true = fmt(s["true"]) if "true" in s else "–"
    print(f"| {name} | {true} | {fmt(s['adjacent'])} | {fmt(s['area'] * 100)} % | {s['ratio_mean']:.2f} "
          f"| {s['ratio_median']:.2f} | {s['ratio_of_means']:.2f} |")


if __name__ == "__main__":
  main()
