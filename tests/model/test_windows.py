"""Windows equal naive slicing; the first window's context is padding and marked invalid."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax.model import windows


@pytest.mark.parametrize("L", [0, 1, 3, 5])
def test_windows_equal_naive_slicing(L):
  b, n, f = 2, 4, 5
  video = jax.random.normal(jax.random.key(0), (b, n, f, 3, 2, 2))
  win, valid = windows.build_windows(video, L)
  assert win.shape == (b, n, L + f, 3, 2, 2)
  flat = np.asarray(video).reshape(b, n * f, 3, 2, 2)
  for i in range(n):
    own = flat[:, i * f:(i + 1) * f]
    np.testing.assert_array_equal(np.asarray(win[:, i, L:]), own)
    if i > 0 and L:
      np.testing.assert_array_equal(np.asarray(win[:, i, :L]), flat[:, i * f - L:i * f])
      assert bool(valid[i].all())
    elif L:
      np.testing.assert_array_equal(np.asarray(win[:, 0, :L]), 0.0)
      assert not bool(valid[0, :L].any()) and bool(valid[0, L:].all())


def test_windows_of_per_frame_times_follow_the_video():
  t = jnp.arange(2 * 3 * 4, dtype=jnp.float32).reshape(2, 3, 4)
  win, _ = windows.build_windows(t, 2)
  np.testing.assert_array_equal(np.asarray(win[:, 1, :2]), np.asarray(t[:, 0, 2:]))
