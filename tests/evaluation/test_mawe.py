"""MAWE-DIS on videos with known behaviour."""
import numpy as np
import pytest

from vin_jax.evaluation import mawe


def test_static_video_scores_zero(make_translating_video):
  static = np.repeat(make_translating_video(0, num_frames=8)[:1], 8, axis=0)
  parts = mawe.mawe_components(static)
  assert parts["warp_error"] < 1e-6
  assert parts["mawe"] < 1e-3


def test_smooth_translation_beats_shuffled_frames(make_translating_video):
  video = make_translating_video(1, num_frames=24)
  shuffled = video[np.random.RandomState(0).permutation(len(video))]
  smooth, broken = mawe.mawe_components(video), mawe.mawe_components(shuffled)
  # 1 px per frame at 64 px is 720 / 64 = 11.25 px per frame in reference (720x720) units.
  assert smooth["flow_score"] == pytest.approx(720 / 64, rel=0.1)
  assert smooth["mawe"] * 20 < broken["mawe"]
  assert smooth["occluded_fraction"] < broken["occluded_fraction"]


def test_warp_direction_with_exact_flow():
  # next = image shifted right by 3 px, so forward flow is +3 in x and next(x + 3) == image(x).
  image = np.random.RandomState(0).rand(32, 32, 3).astype(np.float32) * 255
  shifted = np.zeros_like(image)
  shifted[:, 3:] = image[:, :-3]
  flow_fwd = np.zeros((32, 32, 2), np.float32)
  flow_fwd[..., 0] = 3.0
  error, occluded = mawe.pair_warp_error(image, shifted, flow_fwd, -flow_fwd)
  assert error < 1e-6
  assert occluded == pytest.approx(3 / 32)  # the last 3 columns are warped from outside the frame


def test_tiny_sprite_video_works(make_sprite_video):
  parts = mawe.mawe_components(make_sprite_video(lambda t: "red", num_frames=10))
  assert np.isfinite(parts["mawe"]) and parts["flow_score"] > 0


def test_mawe_dis_returns_float_and_rejects_bad_input(make_sprite_video):
  video = make_sprite_video(lambda t: "red", num_frames=4)
  assert isinstance(mawe.mawe_dis(video), float)
  with pytest.raises(ValueError, match="at least 2 frames"):
    mawe.mawe_dis(video[:1])
  with pytest.raises(ValueError, match="uint8"):
    mawe.mawe_dis(video.astype(np.float32))
