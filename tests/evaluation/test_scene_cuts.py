"""Scene cuts (PySceneDetect AdaptiveDetector, default parameters) on constructed videos."""
import numpy as np
import pytest

from vin_jax.evaluation import scene_cuts


def test_hard_cut_counts_once(make_translating_video):
  first, second = make_translating_video(1, num_frames=30), make_translating_video(2, num_frames=30)
  video = np.concatenate([first, second[:, :, ::-1]])  # two different moving scenes back to back
  assert scene_cuts.scene_cut_frames(video, fps=8) == [30]
  assert scene_cuts.count_scene_cuts(video, fps=8) == 1


def test_smooth_and_static_videos_have_no_cut(make_translating_video):
  smooth = make_translating_video(3, num_frames=60)
  assert scene_cuts.count_scene_cuts(smooth, fps=8) == 0
  assert scene_cuts.count_scene_cuts(np.repeat(smooth[:1], 40, axis=0), fps=24) == 0


def test_tiny_frames_background_switch(make_sprite_video):
  steady = make_sprite_video(lambda t: "red", num_frames=60)
  switched = make_sprite_video(lambda t: "red", num_frames=60,
                               background_at=lambda t: "black" if t < 30 else "navy")
  assert scene_cuts.count_scene_cuts(steady, fps=8) == 0
  assert scene_cuts.scene_cut_frames(switched, fps=8) == [30]


def test_bad_input_is_named():
  with pytest.raises(ValueError, match="fps"):
    scene_cuts.count_scene_cuts(np.zeros((4, 8, 8, 3), np.uint8), fps=0)
