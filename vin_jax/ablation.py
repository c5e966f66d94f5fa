"""The paper's ablation table at small scale: `python -m vin_jax.main ablate --config=configs/micro.py --workdir=DIR`.

What runs (each a sub-run that is skipped when already finished, so an interrupted ablation resumes):
  DIR/data/                  the data set, built once and shared
  DIR/models/<model>/        one training run per trained variant (an unfinished one resumes like `train`)
  DIR/rows/<row>/            the row's samples (samples.npz, mp4s, contact sheet) and metrics.json
  DIR/ablations.json         every row: settings, metrics, paired differences to the full model, paper numbers
  DIR/ablations.md           the markdown table
  DIR/ablations_*.png        plots

Rows follow the paper's ablation table (seed 001), scaled to the config:
  * context rows ("Local 8 / 10 frames" of the paper's inference context 12) use round(L * 8/12) and
    round(L * 10/12) latent frames, L = chunking.inference_context_frames;
  * keyframe rows (0.5 s / 0.2 s instead of T_s = 1.0 s) scale chunking.keyframe_seconds by 0.5 / 0.2. They are
    trained models when ablation.retrain_keyframes, else the VIN model sampled with the other interval;
  * fusion rows and the baselines (autoregressive, freenoise) sample the VIN model; "full attention" samples a
    model trained with one window over the whole video.
Every row samples the same prompts from the same seed (and, with ablation.pin_first_frame, the same clean
first frame of a validation video), so rows are compared pairwise, video by video.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import pathlib
import time

import numpy as np

from vin_jax import config as config_lib

PAPER_SOURCE = "VIN paper, ablation table (shared/seeds/001); MAWE with RAFT flow, so only directions compare"


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of the ablation table.

  model: the trained variant it samples (a key of `models(config)`); method: the sampling method;
  sample_overrides: dotted config overrides applied at sampling only; paper: (MAWE, scene cuts) or None.
  """
  name: str
  label: str
  model: str
  method: str = "vin"
  sample_overrides: tuple = ()
  paper: tuple | None = None


REFERENCE_ROW = "full_model"


class Interrupted(Exception):
  """A sub-run stopped early (SIGTERM saved its checkpoint); the ablation stops so it can be resumed."""


def models(config) -> dict[str, dict]:
  """Trained variants: name -> dotted config overrides for training."""
  base_ts = config.chunking.keyframe_seconds
  trained = {
      "vin": {},
      "no_global": {"vin.enabled": False},
      "full": {"model.window_mode": "full", "vin.enabled": False},
  }
  if config.sampling.get("global_guidance_scale", 1.0) != 1.0:   # VIN's own: the models without tokens run unguided
    for name in ("no_global", "full"):
      trained[name]["sampling.global_guidance_scale"] = 1.0
  if config.ablation.retrain_keyframes:
    trained["keyframe_0.5"] = {"chunking.keyframe_seconds": base_ts * 0.5}
    trained["keyframe_0.2"] = {"chunking.keyframe_seconds": base_ts * 0.2}
  return trained


def rows(config) -> list[Row]:
  """Every row of the table for `config`, in display order."""
  context = config.chunking.inference_context_frames
  base_ts = config.chunking.keyframe_seconds
  retrain = config.ablation.retrain_keyframes
  keyframe_rows = []
  for factor, paper, suffix in ((0.5, (1.14, 0.34), "0.5"), (0.2, (1.21, 0.29), "0.2")):
    seconds = base_ts * factor
    keyframe_rows.append(Row(
        f"keyframe_{suffix}", f"Keyframe every {seconds:g} s (T_s x {factor:g})",
        model=f"keyframe_{suffix}" if retrain else "vin",
        sample_overrides=() if retrain else (("chunking.keyframe_seconds", seconds),), paper=paper))
  return [
      Row(REFERENCE_ROW, "Full model (VIN, early fusion)", "vin", paper=(1.09, 0.21)),
      Row("no_global_tokens", "w/o global tokens", "no_global", method="no_global", paper=(1.69, 0.33)),
      Row("no_fusion", "w/o fusion", "vin", sample_overrides=(("sampling.fusion", "none"),), paper=(1.13, 1.00)),
      Row("mid_fusion", "Mid fusion", "vin", sample_overrides=(("sampling.fusion", "mid"),), paper=(1.11, 0.33)),
      Row("late_fusion", "Late fusion", "vin", sample_overrides=(("sampling.fusion", "late"),), paper=(1.22, 0.74)),
      Row("local_8", f"Local 8/12 context ({round(context * 8 / 12)} latent frames)", "vin",
          sample_overrides=(("chunking.inference_context_frames", round(context * 8 / 12)),), paper=(1.51, 0.24)),
      Row("local_10", f"Local 10/12 context ({round(context * 10 / 12)} latent frames)", "vin",
          sample_overrides=(("chunking.inference_context_frames", round(context * 10 / 12)),), paper=(1.17, 0.22)),
      *keyframe_rows,
      Row("full_attention", "Full attention (one window)", "full", method="full"),
      Row("autoregressive", "Autoregressive (clean previous chunk)", "vin", method="autoregressive"),
      Row("freenoise", "FreeNoise (sliding windows)", "vin", method="freenoise"),
  ]


def selected_rows(config) -> list[Row]:
  """The rows named in ablation.rows (comma-separated; empty: all), validated."""
  every = rows(config)
  wanted = [name.strip() for name in config.ablation.rows.split(",") if name.strip()]
  if not wanted:
    return every
  by_name = {row.name: row for row in every}
  unknown = [name for name in wanted if name not in by_name]
  if unknown:
    raise config_lib.ConfigError(f"ablation.rows: unknown row(s) {unknown}; known: {sorted(by_name)}")
  if REFERENCE_ROW not in wanted:
    wanted.insert(0, REFERENCE_ROW)  # every other row is compared with it
  return [by_name[name] for name in wanted]


def model_config(config, model: str):
  """A copy of `config` with the training overrides of variant `model`."""
  return config_lib.override(copy.deepcopy(config), models(config)[model])


def row_config(config, row: Row):
  """A copy of `config` as the row samples: its model's overrides, then its sampling overrides."""
  return config_lib.override(model_config(config, row.model), dict(row.sample_overrides))


# ----------------------------------------------------------------------------------------------------------
# Running the sub-runs


def _finished_step(workdir: pathlib.Path) -> int | None:
  from vin_jax import checkpointing
  directory = workdir / "checkpoints"
  if not directory.exists():
    return None
  manager = checkpointing.Manager(directory, async_save=False)
  try:
    return manager.latest_step()
  finally:
    manager.close()


def train_model(config, name: str, workdir: pathlib.Path, data_dir: pathlib.Path, log) -> dict:
  """Trains (or resumes, or skips if finished) one variant. Returns a summary dict."""
  from vin_jax import train as train_lib
  cfg = model_config(config, name)
  model_dir = workdir / "models" / name
  steps = cfg.train.steps
  done = _finished_step(model_dir)
  wall = 0.0
  if done is None or done < steps:
    log(f"[model {name}] training {'from scratch' if done is None else f'from step {done}'} to step {steps}")
    start = time.time()
    train_lib.train(cfg, str(model_dir), data_dir=str(data_dir))
    wall = time.time() - start
    reached = _finished_step(model_dir)
    if reached is None or reached < steps:  # SIGTERM: train saved and returned; stop the whole ablation
      raise Interrupted(f"model {name} stopped at step {reached} of {steps} (SIGTERM); re-run the same "
                        f"command to resume")
  else:
    log(f"[model {name}] already trained to step {done}: skipped")
  from vin_jax import metrics_log
  records = metrics_log.read(model_dir) if (model_dir / "metrics.jsonl").exists() else []
  last = records[-1] if records else {}
  return {"name": name, "overrides": models(config)[name], "steps": steps, "workdir": str(model_dir),
          "final_loss": last.get("loss"), "train_wall_sec_this_run": wall}


def sample_row(config, row: Row, workdir: pathlib.Path, inputs, log) -> dict:
  """Samples and evaluates one row (skipped if its metrics.json exists). Returns its metrics result."""
  import jax
  from vin_jax import cli, sampling
  from vin_jax.text import conditioning

  out_dir = workdir / "rows" / row.name
  metrics_path = out_dir / "metrics.json"
  if metrics_path.exists():
    log(f"[row {row.name}] already evaluated: skipped")
    return json.loads(metrics_path.read_text())
  info_path = out_dir / "sample_info.json"  # written last by write_sample_dir: the samples are complete
  if info_path.exists():
    log(f"[row {row.name}] already sampled: evaluating")
    return _evaluate_row(out_dir, json.loads(info_path.read_text()))
  cfg = row_config(config, row)
  config_lib.validate(cfg, num_devices=jax.device_count(), purpose="sample")
  captions, first, true_colors = inputs
  num_chunks = cfg.sampling.num_chunks
  text = conditioning.encode_captions(cfg, captions)
  model_def, params, step = sampling.load_params(cfg, workdir / "models" / row.model, use_ema=cfg.sampling.use_ema)
  clean_x0 = clean_mask = None
  if first is not None:
    clean_x0, clean_mask = sampling.first_frame_condition(cfg, first, num_chunks)
  log(f"[row {row.name}] sampling {len(captions)} videos of {num_chunks} chunks ({row.method}, model {row.model})")
  start = time.time()
  latents = sampling.generate(cfg, model_def, params, text, jax.random.key(cfg.seed), method=row.method,
                              num_chunks=num_chunks, clean_x0=clean_x0, clean_mask=clean_mask)
  latents = jax.block_until_ready(latents)
  wall = time.time() - start
  info = {"row": row.name, "method": row.method, "model": row.model, "num_chunks": num_chunks,
          "num_samples": len(captions), "seed": cfg.seed, "prompts": captions, "checkpoint_step": step,
          "pinned_first_frame": first is not None, "sample_overrides": dict(row.sample_overrides),
          "keyframe_stride": config_lib.keyframe_stride(cfg), "wall_time_sec": wall}
  if true_colors is not None:
    info["true_colors"] = true_colors
  cli.write_sample_dir(cfg, out_dir, latents, info)
  return _evaluate_row(out_dir, info)


def _evaluate_row(out_dir: pathlib.Path, info: dict) -> dict:
  from vin_jax.evaluation import report
  result = report.evaluate_samples_dir(str(out_dir))
  result["info"] = info
  report.write_json_atomic(out_dir / "metrics.json", result)  # written last: its presence marks the row done
  return json.loads((out_dir / "metrics.json").read_text())


# ----------------------------------------------------------------------------------------------------------
# Tables and plots

TABLE_METRICS = (  # key, column title, higher is better
    ("mawe_dis", "MAWE-DIS", False),
    ("scene_cuts", "scene cuts", False),
    ("identity_consistency", "identity", True),
    ("true_color_match", "true colour", True),
    ("frame_diff_boundary_ratio", "seam ratio", False),
    ("sprite_area_last_over_first", "area last/first", True),
)


def paired_difference(values, reference):
  """Mean and standard error of per-video differences (row - reference); NaN-safe. Returns (mean, se, n)."""
  a, b = np.asarray(values, np.float64), np.asarray(reference, np.float64)
  ok = np.isfinite(a) & np.isfinite(b)
  d = a[ok] - b[ok]
  if len(d) == 0:
    return math.nan, math.nan, 0
  se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else math.nan
  return float(d.mean()), se, int(len(d))


def per_video(result: dict, key: str) -> list[float]:
  return [float(v[key]) if v.get(key) is not None else math.nan for v in result["videos"]]


def direction(row: Row, diff: tuple) -> str:
  """Whether the paper's direction (this row's MAWE above the full model's) shows, from the paired
  MAWE-DIS difference: 'reproduced' (> 2 SE above), 'opposite' (> 2 SE below), else 'within noise'."""
  if row.paper is None or row.name == REFERENCE_ROW:
    return ""
  mean, se, _ = diff
  if not math.isfinite(mean) or not math.isfinite(se):
    return "n/a"
  if mean > 2 * se:
    return "reproduced"
  if mean < -2 * se:
    return "opposite"
  return "within noise"


def summarize_rows(selected: list[Row], results: dict[str, dict]) -> list[dict]:
  reference = results[REFERENCE_ROW]
  summary = []
  for row in selected:
    result = results[row.name]
    entry = {"name": row.name, "label": row.label, "model": row.model, "method": row.method,
             "sample_overrides": dict(row.sample_overrides),
             "paper": None if row.paper is None else {"mawe": row.paper[0], "scene_cuts": row.paper[1]},
             "mean": {k: result["mean"].get(k) for k, _, _ in TABLE_METRICS},
             "num_videos": result["num_videos"], "wall_time_sec": result.get("info", {}).get("wall_time_sec")}
    entry["diff_vs_full_model"] = {}
    for key, _, _ in TABLE_METRICS:
      if key in result["mean"] and key in reference["mean"]:
        mean, se, n = paired_difference(per_video(result, key), per_video(reference, key))
        entry["diff_vs_full_model"][key] = {"mean": mean, "se": se, "n": n}
    mawe = entry["diff_vs_full_model"].get("mawe_dis", {})
    entry["paper_direction_mawe"] = direction(row, (mawe.get("mean", math.nan), mawe.get("se", math.nan), 0))
    summary.append(entry)
  return summary


def _fmt(value, digits=2):
  if value is None or (isinstance(value, float) and not math.isfinite(value)):
    return "–"
  return f"{value:.{digits}f}"


def markdown_table(summary: list[dict]) -> str:
  """The ablation table: paper numbers beside ours, with the paired MAWE-DIS difference to the full model."""
  head = ("| row | paper MAWE | paper cuts | MAWE-DIS | Δ MAWE-DIS vs full (± SE) | scene cuts | identity "
          "| true colour | seam ratio | area last/first | paper's direction |")
  lines = [head, "|" + "---|" * (head.count("|") - 1)]
  for e in summary:
    paper = e["paper"] or {}
    d = e["diff_vs_full_model"].get("mawe_dis", {})
    delta = "" if e["name"] == REFERENCE_ROW else f"{_fmt(d.get('mean'), 3)} ± {_fmt(d.get('se'), 3)}"
    m = e["mean"]
    lines.append(f"| {e['label']} | {_fmt(paper.get('mawe'))} | {_fmt(paper.get('scene_cuts'))} | "
                 f"{_fmt(m.get('mawe_dis'), 3)} | {delta} | {_fmt(m.get('scene_cuts'))} | "
                 f"{_fmt(m.get('identity_consistency'))} | {_fmt(m.get('true_color_match'))} | "
                 f"{_fmt(m.get('frame_diff_boundary_ratio'))} | {_fmt(m.get('sprite_area_last_over_first'))} | "
                 f"{e['paper_direction_mawe']} |")
  return "\n".join(lines) + "\n"


def write_plots(summary: list[dict], directory: pathlib.Path) -> list[pathlib.Path]:
  """One PNG per metric: our value per row (with the paired SE of the difference to the full model as error
  bar), and the paper's MAWE beside ours. Written atomically."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from vin_jax.video_io import atomic_output

  paths = []
  names = [e["name"] for e in summary]
  y = np.arange(len(summary))
  for key, title, higher_better in TABLE_METRICS:
    values = [e["mean"].get(key) for e in summary]
    if all(v is None for v in values):
      continue
    values = [math.nan if v is None else v for v in values]
    errors = [e["diff_vs_full_model"].get(key, {}).get("se", 0.0) for e in summary]
    errors = [0.0 if (err is None or not math.isfinite(err)) else err for err in errors]
    columns = 2 if key == "mawe_dis" else 1
    fig, axes = plt.subplots(1, columns, figsize=(5.5 * columns, 0.35 * len(summary) + 1.5), squeeze=False)
    ax = axes[0, 0]
    ax.barh(y, values, xerr=errors, color="tab:blue")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel(f"{title} ({'higher' if higher_better else 'lower'} is better)")
    ax.set_title(f"{title}, this run (error: paired SE vs full model)", fontsize=9)
    if columns == 2:
      paper = [e["paper"]["mawe"] if e["paper"] else math.nan for e in summary]
      axes[0, 1].barh(y, paper, color="tab:grey")
      axes[0, 1].set_yticks(y, names)
      axes[0, 1].invert_yaxis()
      axes[0, 1].set_xlabel("MAWE (RAFT), paper")
      axes[0, 1].set_title("paper's ablation table", fontsize=9)
    fig.tight_layout()
    path = directory / f"ablations_{key}.png"
    with atomic_output(path) as tmp:
      fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    paths.append(path)
  return paths


# ----------------------------------------------------------------------------------------------------------
# The command


def run(config, workdir: str, log=print) -> dict:
  """Trains, samples, evaluates and tabulates every selected row (see module docstring)."""
  import jax
  from vin_jax.data import builder
  from vin_jax.evaluation import report

  selected = selected_rows(config)
  needed = list(dict.fromkeys(row.model for row in selected))
  for name in needed:  # every variant must be a valid config before anything compiles or is written
    config_lib.validate(model_config(config, name), num_devices=jax.device_count())
  for row in selected:
    config_lib.validate(row_config(config, row), num_devices=jax.device_count(), purpose="sample")
  workdir_path = pathlib.Path(workdir)
  workdir_path.mkdir(parents=True, exist_ok=True)
  log(f"ablation in {workdir}: {len(needed)} model(s) {needed}, {len(selected)} row(s) "
      f"{[row.name for row in selected]}")
  start = time.time()
  data_dir = workdir_path / "data"
  builder.build_dataset(config, str(data_dir))
  trained = {name: train_model(config, name, workdir_path, data_dir, log) for name in needed}
  from vin_jax import sampling
  inputs = sampling.validation_inputs(config, data_dir, config.sampling.num_samples,
                                      first_frame=config.ablation.pin_first_frame)
  results = {}
  for row in selected:
    results[row.name] = sample_row(config, row, workdir_path, inputs, log)
  summary = summarize_rows(selected, results)
  table = markdown_table(summary)
  with_paths = write_plots(summary, workdir_path)
  output = {"config": json.loads(config.to_json_best_effort()), "models": trained, "rows": summary,
            "paper_source": PAPER_SOURCE, "wall_time_sec_this_run": time.time() - start,
            "plots": [p.name for p in with_paths]}
  report.write_json_atomic(workdir_path / "ablations.json", output)
  from vin_jax.video_io import atomic_output
  with atomic_output(workdir_path / "ablations.md") as tmp:
    pathlib.Path(tmp).write_text(table)
  log(table)
  log(f"wrote {workdir_path / 'ablations.json'}, ablations.md and {len(with_paths)} plots")
  return output
