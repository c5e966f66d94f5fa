"""Subject/background consistency proxies (VBench formula on pixel features)."""
import numpy as np
import pytest

from vin_jax.data.sprites import BACKGROUNDS
from vin_jax.evaluation import consistency


def test_vbench_formula_on_known_features():
  a, b = [1.0, 0.0], [0.0, 1.0]
  # t=2: (1 + 1) / 2; t=3: (0 + 0) / 2; t=4: (0 + 1) / 2  ->  1.5 / 3
  assert consistency.vbench_consistency([a, a, b, b]) == pytest.approx(0.5)
  assert consistency.vbench_consistency([a]) == 1.0
  # Negative cosines are clipped to 0 as in VBench; zero features: cos(0, 0) = 1, cos(0, x) = 0.
  assert consistency.vbench_consistency([a, [-1.0, 0.0]]) == 0.0
  assert consistency.vbench_consistency([[0, 0], [0, 0]]) == 1.0
  assert consistency.vbench_consistency([a, [0, 0]]) == 0.0


def test_static_video_is_fully_consistent(make_translating_video, make_sprite_video):
  for video in (make_translating_video(0, num_frames=2), make_sprite_video(lambda t: "red", num_frames=1)):
    static = np.repeat(video[:1], 6, axis=0)
    assert consistency.subject_consistency_proxy(static) == pytest.approx(1.0)
    assert consistency.background_consistency_proxy(static) == pytest.approx(1.0)


def test_subject_colour_change_lowers_subject_consistency(make_sprite_video):
  kept = make_sprite_video(lambda t: "red")
  changed = make_sprite_video(lambda t: "red" if t < 16 else "cyan")
  # A moving sprite of constant colour keeps its histogram exactly.
  assert consistency.subject_consistency_proxy(kept) == pytest.approx(1.0)
  # Frames 2..16 score 1, frame 17 scores 0, frames 18..32 score 1/2: (15 + 7.5) / 31.
  assert consistency.subject_consistency_proxy(changed) == pytest.approx(22.5 / 31)
  # The background does not change in either.
  assert consistency.background_consistency_proxy(changed) == pytest.approx(1.0)


def test_background_change_lowers_background_consistency(make_sprite_video):
  switched = make_sprite_video(lambda t: "red", background_at=lambda t: "grey" if t < 16 else "navy")
  grey, navy = np.array(BACKGROUNDS["grey"], float), np.array(BACKGROUNDS["navy"], float)
  cos = grey @ navy / np.linalg.norm(grey) / np.linalg.norm(navy)  # ~0.84: pixel features are positive
  # Frames 2..16 score 1, frame 17 scores cos, frames 18..32 score (cos + 1) / 2.
  expected = (15 + cos + 15 * (cos + 1) / 2) / 31
  assert consistency.background_consistency_proxy(switched) == pytest.approx(expected)
  assert expected < 0.96
  assert consistency.subject_consistency_proxy(switched) > 0.95
