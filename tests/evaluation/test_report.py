"""evaluate_video / evaluate_paths / evaluate_samples_dir / frame_difference_stats / JSON output."""
import json
import os

import numpy as np
import pytest

from vin_jax import video_io
from vin_jax.evaluation import report


def test_frame_difference_stats_on_known_video():
  levels = [0, 1, 2, 3, 13, 14, 15, 16]  # +1 inside chunks of 4, +10 across the boundary
  frames = np.stack([np.full((4, 4, 3), v, np.uint8) for v in levels])
  stats = report.frame_difference_stats(frames, 4)
  assert stats == {"within_chunk": 1.0, "across_boundary": 10.0, "boundary_ratio": 10.0}
  single = report.frame_difference_stats(frames, 8)
  assert single["across_boundary"] is None and single["boundary_ratio"] is None


def test_evaluate_video_keys(make_sprite_video):
  video = make_sprite_video(lambda t: "red", num_frames=16)
  plain = report.evaluate_video(video, fps=8)
  assert {"mawe_dis", "warp_error", "flow_score", "scene_cuts", "subject_consistency_proxy",
          "background_consistency_proxy"} <= set(plain)
  assert "identity_consistency" not in plain
  chunked = report.evaluate_video(video, fps=8, chunk_frames=4, true_colors=["red"])
  assert chunked["identity_consistency"] == chunked["true_color_match"] == 1.0
  assert chunked["frame_diff_within_chunk"] > 0
  with pytest.raises(ValueError, match="chunk_frames"):
    report.evaluate_video(video, fps=8, true_colors=["red"])


def test_evaluate_samples_dir(tmp_path, make_sprite_video):
  videos = np.stack([make_sprite_video(lambda t: "red", num_frames=8),
                     make_sprite_video(lambda t: "red" if t < 4 else "blue", num_frames=8)])
  np.savez(tmp_path / "samples.npz", frames=videos)
  (tmp_path / "sample_info.json").write_text(
      json.dumps({"fps": 8, "chunk_pixel_frames": 4, "true_colors": [["red"], [0]]}))
  out = tmp_path / "metrics.json"
  result = report.evaluate_samples_dir(str(tmp_path), out_json=str(out))
  assert result["num_videos"] == 2 and result["chunk_frames"] == 4
  assert [v["all_chunks_agree"] for v in result["videos"]] == [1.0, 0.0]
  assert result["mean"]["all_chunks_agree"] == 0.5
  assert json.loads(out.read_text())["mean"]["true_color_match"] == 0.75
  assert sorted(os.listdir(tmp_path)) == ["metrics.json", "sample_info.json", "samples.npz"]
  with pytest.raises(FileNotFoundError, match="samples.npz"):
    report.evaluate_samples_dir(str(tmp_path / "missing"))


def test_evaluate_paths(tmp_path, make_sprite_video):
  video_io.write_gif(tmp_path / "a.gif", make_sprite_video(lambda t: "green", num_frames=8), fps=8)
  result = report.evaluate_paths(str(tmp_path / "*.gif"), chunk_frames=4)
  assert result["num_videos"] == 1
  assert result["videos"][str(tmp_path / "a.gif")]["chunk_colors"] == ["green", "green"]
  with pytest.raises(FileNotFoundError, match="no video files match"):
    report.evaluate_paths(str(tmp_path / "*.mp4"))


def test_write_json_atomic(tmp_path):
  path = tmp_path / "out.json"
  report.write_json_atomic(path, {"a": np.float32(1.5), "b": np.arange(2), "c": float("nan"), "d": None})
  assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1], "c": None, "d": None}
  assert os.listdir(tmp_path) == ["out.json"]
