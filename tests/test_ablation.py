"""The ablation runner: the plan scaled from the config, the paired statistics, and one real end-to-end run on
configs/micro.py:test that resumes without redoing finished sub-runs."""
import json
import math
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vin_jax import ablation
from vin_jax import config as config_lib

from tests.conftest import SUBPROCESS_TIMEOUT_SECONDS

REPO = pathlib.Path(__file__).resolve().parents[1]


def micro(arg=None, **overrides):
  c = config_lib.load_config_file(REPO / "configs" / "micro.py", arg)
  return config_lib.override(c, overrides)


def test_micro_rows_are_the_papers_rows_scaled_to_half_size():
  config = micro()
  rows = {row.name: row for row in ablation.rows(config)}
  paper_rows = [r for r in rows.values() if r.paper is not None]
  assert len(paper_rows) == 9  # full model, w/o global, w/o fusion, mid, late, local 8, 10, keyframe 0.5, 0.2
  # Local 8 / 10 of the paper's 12 -> 4 / 5 of micro's 6 latent frames.
  assert ablation.row_config(config, rows["local_8"]).chunking.inference_context_frames == 4
  assert ablation.row_config(config, rows["local_10"]).chunking.inference_context_frames == 5
  # Keyframes every 1.0 / 0.5 / 0.2 s -> every 5 / 2 / 1 latent frames (paper: 5 / 2.5 / 1).
  strides = [config_lib.keyframe_stride(ablation.row_config(config, rows[name]))
             for name in (ablation.REFERENCE_ROW, "keyframe_0.5", "keyframe_0.2")]
  assert strides == [5, 2, 1]
  for name in ("no_fusion", "mid_fusion", "late_fusion"):
    assert ablation.row_config(config, rows[name]).sampling.fusion == name.split("_")[0].replace("no", "none")
  assert rows["no_global_tokens"].model == "no_global" and rows["full_attention"].model == "full"
  every_row_valid = [config_lib.validate(ablation.row_config(config, row), 1, purpose="sample") for row in rows.values()]
  assert len(every_row_valid) == len(rows)


def test_keyframe_rows_train_their_own_models_when_asked():
  assert "keyframe_0.5" not in ablation.models(micro())
  config = micro(**{"ablation.retrain_keyframes": True})
  trained = ablation.models(config)
  assert trained["keyframe_0.2"] == {"chunking.keyframe_seconds": pytest.approx(0.2)}
  row = {r.name: r for r in ablation.rows(config)}["keyframe_0.2"]
  assert row.model == "keyframe_0.2" and row.sample_overrides == ()


def test_variant_configs_are_copies():
  config = micro()
  row = {r.name: r for r in ablation.rows(config)}["no_fusion"]
  assert ablation.row_config(config, row).sampling.fusion == "none"
  assert ablation.model_config(config, "no_global").vin.enabled is False
  assert config.sampling.fusion == "early" and config.vin.enabled is True


def test_row_selection_names_the_bad_field_and_keeps_the_reference():
  with pytest.raises(config_lib.ConfigError, match=r"ablation\.rows.*no_such_row"):
    ablation.selected_rows(micro(**{"ablation.rows": "no_fusion,no_such_row"}))
  names = [r.name for r in ablation.selected_rows(micro(**{"ablation.rows": "late_fusion"}))]
  assert names == [ablation.REFERENCE_ROW, "late_fusion"]


def test_paired_difference_and_direction():
  mean, se, n = ablation.paired_difference([2.0, 3.0, 4.0, math.nan], [1.0, 1.0, 1.0, 1.0])
  assert (mean, n) == (2.0, 3) and se == pytest.approx(np.std([1, 2, 3], ddof=1) / np.sqrt(3))
  row = ablation.Row("late_fusion", "Late fusion", "vin", paper=(1.22, 0.74))
  assert ablation.direction(row, (0.5, 0.1, 16)) == "reproduced"
  assert ablation.direction(row, (-0.5, 0.1, 16)) == "opposite"
  assert ablation.direction(row, (0.1, 0.1, 16)) == "within noise"
  assert ablation.direction(ablation.Row("full_attention", "", "full"), (1.0, 0.1, 16)) == ""


def test_markdown_table_sets_the_papers_numbers_beside_ours():
  results = {
      ablation.REFERENCE_ROW: {"videos": [{"mawe_dis": 1.0}, {"mawe_dis": 2.0}], "mean": {"mawe_dis": 1.5},
                               "num_videos": 2},
      "late_fusion": {"videos": [{"mawe_dis": 3.0}, {"mawe_dis": 4.1}], "mean": {"mawe_dis": 3.55},
                      "num_videos": 2},
  }
  rows = ablation.selected_rows(micro(**{"ablation.rows": "late_fusion"}))
  summary = ablation.summarize_rows(rows, results)
  table = ablation.markdown_table(summary).splitlines()
  assert len(table) == 4 and table[1].count("---") == table[0].count("|") - 1
  assert "| Late fusion | 1.22 | 0.74 | 3.550 | 2.050 ± 0.050 |" in table[3]
  assert table[3].endswith("| reproduced |")


ROWS = "no_fusion,full_attention,freenoise"


def one_device_env():
  """The CLI's environment: one CPU device (the suite forces 8 simulated ones for the sharding tests)."""
  env = {k: v for k, v in os.environ.items() if not k.startswith(("VIN_", "XLA_", "TPU_"))}
  env["JAX_PLATFORMS"] = "cpu"
  return env


def run_ablate(workdir):
  """`python -m vin_jax.main ablate` on micro:test, on one CPU device (the suite's 8 are for sharding)."""
  env = one_device_env()
  result = subprocess.run([sys.executable, "-m", "vin_jax.main", "ablate", "--config=configs/micro.py:test",
                           f"--workdir={workdir}", f"--config.ablation.rows={ROWS}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


@pytest.fixture(scope="session")  # once per xdist worker (pytest 9 breaks xdist's loadgroup; see Makefile)
def finished_run(tmp_path_factory):
  """One real ablation on micro:test: two models (VIN, full), four rows, pinned first frames."""
  workdir = tmp_path_factory.mktemp("ablation")
  config = micro("test", **{"ablation.rows": ROWS})
  stdout = run_ablate(workdir)
  output = json.loads((workdir / "ablations.json").read_text())
  return config, workdir, output, stdout


def test_run_writes_table_json_and_plots(finished_run):
  config, workdir, output, logs = finished_run
  saved = json.loads((workdir / "ablations.json").read_text())
  assert [r["name"] for r in saved["rows"]] == [ablation.REFERENCE_ROW, "no_fusion", "full_attention", "freenoise"]
  assert set(saved["models"]) == {"vin", "full"}
  for model in saved["models"].values():
    assert model["final_loss"] is not None and math.isfinite(model["final_loss"])
  for row in saved["rows"]:
    for key in ("mawe_dis", "scene_cuts", "identity_consistency", "true_color_match"):
      assert row["mean"][key] is not None, (row["name"], key)
    assert row["num_videos"] == config.sampling.num_samples
  table = (workdir / "ablations.md").read_text()
  assert "| w/o fusion | 1.13 | 1.00 |" in table
  for name in saved["plots"]:
    assert (workdir / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  info = json.loads((workdir / "rows" / "no_fusion" / "sample_info.json").read_text())
  assert info["fusion"] == "none" and info["pinned_first_frame"] and len(info["true_colors"]) == 2


def test_per_chunk_identity_agrees_with_the_rows_means(finished_run):
  """benchmarks/per_chunk_identity.py: its per-chunk true colour averages to the row's true_color_match,
  its mean area ratio is the table's, and its CLI prints one line per row."""
  import importlib
  per_chunk = importlib.import_module("benchmarks.per_chunk_identity")
  _, workdir, _, _ = finished_run
  metrics = json.loads((workdir / "rows" / ablation.REFERENCE_ROW / "metrics.json").read_text())
  stats = per_chunk.row_stats(metrics)
  assert len(stats["true"]) == metrics["mean"]["num_chunks"]
  np.testing.assert_allclose(stats["true"].mean(), metrics["mean"]["true_color_match"], atol=1e-9)
  np.testing.assert_allclose(stats["ratio_mean"], metrics["mean"]["sprite_area_last_over_first"], atol=1e-9)
  result = subprocess.run([sys.executable, "benchmarks/per_chunk_identity.py", str(workdir)], cwd=REPO,
                          env=one_device_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert sum(line.startswith("| ") for line in result.stdout.splitlines()) == 1 + 4   # header, 4 rows


def test_information_use_colours_are_the_evaluations(finished_run):
  """benchmarks/information_use.py decodes and classifies x0 estimates as the evaluation does: on a row's
  sampled latents its per-chunk colours are metrics.json's, and its match fractions the row's true colour."""
  import importlib
  info_use = importlib.import_module("benchmarks.information_use")
  config, workdir, _, _ = finished_run
  row = workdir / "rows" / ablation.REFERENCE_ROW
  metrics = json.loads((row / "metrics.json").read_text())
  latents = np.load(row / "samples.npz")["latents"]
  colours = info_use.chunk_colours(config, latents)
  assert colours == [v["chunk_colors"] for v in metrics["videos"]]
  truth = [names[0] for names in metrics["info"]["true_colors"]]
  np.testing.assert_allclose(info_use.match_per_chunk(colours, truth).mean(), metrics["mean"]["true_color_match"],
                             atol=1e-9)
  assert np.isnan(info_use.match_per_chunk(colours, truth, [False] * len(truth))).all()


def test_pinned_first_frame_is_the_validation_videos(finished_run):
  config, workdir, _, _ = finished_run
  from vin_jax import sampling
  captions, first, colors = sampling.validation_inputs(config, workdir / "data", config.sampling.num_samples,
                                                       first_frame=True)
  latents = np.load(workdir / "rows" / ablation.REFERENCE_ROW / "samples.npz")["latents"]
  np.testing.assert_allclose(latents[:, 0, 0], first, atol=1e-6)
  info = json.loads((workdir / "rows" / ablation.REFERENCE_ROW / "sample_info.json").read_text())
  assert info["prompts"] == captions and info["true_colors"] == colors


def test_rerun_skips_finished_sub_runs_and_redoes_a_missing_row(finished_run):
  config, workdir, output, _ = finished_run
  for name in ("metrics.json", "sample_info.json", "sample_00.mp4"):  # an interrupted sampling
    (workdir / "rows" / "freenoise" / name).unlink()
  (workdir / "rows" / "full_attention" / "metrics.json").unlink()  # an interrupted evaluation
  text = run_ablate(workdir)
  again = json.loads((workdir / "ablations.json").read_text())
  assert "[model vin] already trained" in text and "[model full] already trained" in text
  assert "[row no_fusion] already evaluated" in text and "[row freenoise] sampling" in text
  assert "[row full_attention] already sampled: evaluating" in text
  before = {r["name"]: r["mean"] for r in output["rows"]}
  after = {r["name"]: r["mean"] for r in again["rows"]}
  assert after == before  # deterministic: the redone row gives the same numbers


def test_cli_rejects_an_unknown_row_before_writing_anything(tmp_path):
  env = one_device_env()
  workdir = tmp_path / "never"
  result = subprocess.run([sys.executable, "-m", "vin_jax.main", "ablate", "--config=configs/micro.py:test",
                           f"--workdir={workdir}", "--config.ablation.rows=no_fusion,bogus"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)
  assert result.returncode == 2 and "Traceback" not in result.stderr
  assert "ablation.rows" in result.stderr and "bogus" in result.stderr
  assert not workdir.exists()


def test_a_model_stopped_by_sigterm_stops_the_ablation(tmp_path, monkeypatch):
  # train() returns early after SIGTERM (having saved a checkpoint); the ablation must not go on to the next
  # sub-run as if the model were trained.
  from vin_jax import train as train_lib
  monkeypatch.setattr(train_lib, "train", lambda config, workdir, data_dir=None: {})
  with pytest.raises(ablation.Interrupted, match="model vin stopped"):
    ablation.train_model(micro("test"), "vin", tmp_path, tmp_path / "data", log=lambda message: None)


def test_sample_cli_gives_the_validation_first_frame(finished_run, tmp_path):
  """`sample --first_frame` on a model the ablation trained: image-to-video from the validation videos."""
  from vin_jax import sampling
  config, workdir, _, _ = finished_run
  env = one_device_env()
  out = tmp_path / "samples"
  result = subprocess.run([sys.executable, "-m", "vin_jax.main", "sample", "--config=configs/micro.py:test",
                           f"--workdir={workdir / 'models' / 'vin'}", f"--config.data.data_dir={workdir / 'data'}",
                           f"--out={out}", "--first_frame"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  info = json.loads((out / "sample_info.json").read_text())
  captions, first, colors = sampling.validation_inputs(config, workdir / "data", config.sampling.num_samples,
                                                       first_frame=True)
  assert info["first_frame_given"] and info["prompts"] == captions and info["true_colors"] == colors
  latents = np.load(out / "samples.npz")["latents"]
  np.testing.assert_allclose(latents[:, 0, 0], first, atol=1e-6)
  assert (out / "sample_00.mp4").stat().st_size > 0 and (out / "contact_sheet.png").exists()


def _sample_cli(workdir, out, *flags):
  return subprocess.run([sys.executable, "-m", "vin_jax.main", "sample", "--config=configs/micro.py:test",
                         f"--workdir={workdir / 'models' / 'vin'}", f"--config.data.data_dir={workdir / 'data'}",
                         f"--out={out}", *flags], cwd=REPO, env=one_device_env(), capture_output=True, text=True,
                        timeout=SUBPROCESS_TIMEOUT_SECONDS)


def test_sample_cli_image_to_video_from_a_file_with_joint_guidance(finished_run, tmp_path):
  """`sample --image` with a picture that is not a validation video (a train video's frame, mirrored and
  enlarged to another aspect), and STIV's joint guidance: frame 0 is that image's latent."""
  from PIL import Image
  from tests.test_main import assert_clean_failure
  from vin_jax import sampling, video_io
  from vin_jax.data import builder
  config, workdir, _, _ = finished_run
  frame = builder.data_source(config, workdir / "data", "train")[3]["frames"][5][:, ::-1]
  Image.fromarray(np.repeat(np.repeat(frame, 6, axis=0), 9, axis=1)).save(tmp_path / "picture.png")
  out = tmp_path / "samples"
  result = _sample_cli(workdir, out, f"--image={tmp_path / 'picture.png'}", "--prompt=one red square",
                       "--config.sampling.guidance_scale=2.0", "--config.sampling.image_guidance_scale=1.5")
  assert result.returncode == 0, result.stderr[-3000:]
  info = json.loads((out / "sample_info.json").read_text())
  assert info["first_frame_given"] and info["given"]["image"].endswith("picture.png")
  assert info["given"]["latent_frames"] == 1
  latent = sampling.image_latent(config, video_io.read_image(tmp_path / "picture.png", config.data.height,
                                                             config.data.width))
  latents = np.load(out / "samples.npz")["latents"]
  np.testing.assert_allclose(latents[:, 0, 0], np.broadcast_to(latent, latents[:, 0, 0].shape), atol=1e-6)
  assert (out / "contact_sheet.png").exists()
  assert_clean_failure(_sample_cli(workdir, out, f"--image={tmp_path / 'missing.png'}", "--prompt=x"),
                       "error:", "missing.png")
  assert_clean_failure(_sample_cli(workdir, out, f"--image={tmp_path / 'picture.png'}", "--first_frame"),
                       "--first_frame and --image")


def test_sample_cli_video_prediction_and_interpolation(finished_run, tmp_path):
  """`sample --condition_video --condition_frames=k` keeps the video's first k latent frames (across a chunk
  boundary); `sample --interpolate` keeps the video (read at half the rate) in the even latent frames."""
  from vin_jax import sampling, video_io
  from vin_jax.data import builder
  config, workdir, _, _ = finished_run
  source = builder.data_source(config, workdir / "data", "train")
  video = np.concatenate([source[1]["frames"], source[2]["frames"]])    # 24 frames: 12 at half the rate
  video_io.write_mp4(tmp_path / "clip.mp4", video, config.data.fps)
  f, n = config.chunking.chunk_frames, config.sampling.num_chunks
  k = f + 1
  out = tmp_path / "prediction"
  result = _sample_cli(workdir, out, f"--condition_video={tmp_path / 'clip.mp4'}", f"--condition_frames={k}",
                       "--prompt=one sprite")
  assert result.returncode == 0, result.stderr[-3000:]
  frames = video_io.read_video_resized(tmp_path / "clip.mp4", config.data.height, config.data.width,
                                       config.data.fps)
  latents = np.load(out / "samples.npz")["latents"]
  flat = latents.reshape(latents.shape[0], n * f, *latents.shape[3:])
  np.testing.assert_allclose(flat[:, :k], np.broadcast_to(sampling.encode_frames(config, frames[:k]),
                                                          flat[:, :k].shape), atol=1e-5)

  out = tmp_path / "interpolation"
  result = _sample_cli(workdir, out, f"--interpolate={tmp_path / 'clip.mp4'}", "--prompt=one sprite")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "note: --interpolate on a model trained with diffusion.clean_every=0" in result.stdout
  half = video_io.read_video_resized(tmp_path / "clip.mp4", config.data.height, config.data.width,
                                     config.data.fps / 2)
  latents = np.load(out / "samples.npz")["latents"]
  flat = latents.reshape(latents.shape[0], n * f, *latents.shape[3:])
  given = n * f // 2
  np.testing.assert_allclose(flat[:, ::2], np.broadcast_to(sampling.encode_frames(config, half[:given]),
                                                           flat[:, ::2].shape), atol=1e-5)
  info = json.loads((out / "sample_info.json").read_text())
  assert info["given"]["latent_frames"] == given and info["frames_shape"][1] == 2 * given
