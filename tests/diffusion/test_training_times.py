"""Training times: one t per video (the paper), or per chunk for a diffusion.per_chunk_t_prob fraction of the
rows, keyed by global row and chunk indices (a sharded run draws what one device does)."""
import jax
import numpy as np
import pytest

from vin_jax import config as config_lib
from vin_jax.diffusion import loss as loss_lib
from vin_jax.diffusion.schedules import Schedule
from vin_jax.model import windows

from tests.model.helpers import tiny_test_config


def _times(prob, b=6, n=4, **offsets):
  config = tiny_test_config(**{"diffusion.per_chunk_t_prob": prob})
  return np.asarray(loss_lib.training_times(jax.random.key(3), Schedule.from_config(config), config, b, n,
                                            **offsets))


def test_one_time_per_video_by_default():
  t = _times(0.0)
  assert t.shape == (6, 4)
  np.testing.assert_array_equal(t, np.broadcast_to(t[:, :1], t.shape))
  assert len(np.unique(t[:, 0])) == 6


def test_per_chunk_times_are_independent_and_keyed_by_global_indices():
  t = _times(1.0)
  assert all(len(np.unique(row)) == 4 for row in t)
  # Rows 2..3, chunks 1..2 of the whole batch, drawn as a device holding only them would.
  np.testing.assert_array_equal(_times(1.0, b=2, n=2, row_offset=2, chunk_offset=1), t[2:4, 1:3])
  # The video-level draws are unchanged by the option (rows that keep one t keep the same t).
  mixed = _times(0.5, b=64)
  single = np.all(mixed == mixed[:, :1], axis=1)
  assert 10 < single.sum() < 54
  np.testing.assert_array_equal(mixed[single], _times(0.0, b=64)[single])


def test_the_loss_gives_the_model_per_chunk_times():
  seen = {}
  config = tiny_test_config(**{"diffusion.per_chunk_t_prob": 1.0, "diffusion.first_frame_cond_prob": 0.0})
  f = config.chunking.chunk_frames

  class Recorder:
    """A stand-in model that records the per-frame times it is given and predicts zeros."""

    def context_frames(self, L):
      return L

    def __call__(self, x_t, t, text, *, context_frames, **unused):
      seen["t"] = np.asarray(t)
      win, valid = windows.build_windows(x_t, context_frames)
      return win * 0.0, valid

  x0 = np.zeros((2, 3, f, 4, 4, 4), np.float32)
  loss_lib.diffusion_loss(Recorder(), Schedule.from_config(config), config, x0, None, jax.random.key(0))
  t = seen["t"]
  np.testing.assert_array_equal(t, np.broadcast_to(t[:, :, :1], t.shape))   # one t per chunk's frames
  assert all(len(np.unique(row[:, 0])) == 3 for row in t)                     # and chunks differ


def test_validate_names_a_bad_probability():
  config = tiny_test_config(**{"diffusion.per_chunk_t_prob": 1.5})
  with pytest.raises(config_lib.ConfigError, match="per_chunk_t_prob"):
    config_lib.validate(config)
