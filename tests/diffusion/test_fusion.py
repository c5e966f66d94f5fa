"""Token fusion on the overlaps, against the paper's formula written out with Python loops."""
import jax
import numpy as np
import pytest

from vin_jax.diffusion import fusion

B, N, F, L = 2, 4, 6, 3
FRAME = (2, 2, 3)


def window_preds(seed=0, n=N, f=F, l=L):
  """Random window predictions [B, N, L + F, h, w, c]."""
  return np.array(jax.random.normal(jax.random.key(seed), (B, n, l + f) + FRAME))


def naive_fusion(preds, l, active):
  """fused[k] = ((L - W(k)) own_{i-1}[F-L+k] + W(k) ctx_i[k]) / L on each overlap, W(k) = k + 1/2."""
  b, n, w = preds.shape[:3]
  f = w - l
  out = np.zeros((b, n, f) + preds.shape[3:], np.float64)
  for i in range(n):
    for j in range(f):
      own = preds[:, i, l + j]
      k = j - (f - l)
      if active and l > 0 and i + 1 < n and k >= 0:
        W = k + 0.5
        out[:, i, j] = ((l - W) * own + W * preds[:, i + 1, k]) / l
      else:
        out[:, i, j] = own
  return out


@pytest.mark.parametrize("l", [1, 2, 3, 8, 12])
def test_context_weights(l):
  w = np.asarray(fusion.context_weights(l))
  assert w.shape == (l,)
  np.testing.assert_allclose(w, (np.arange(l) + 0.5) / l, atol=1e-7)
  own = 1.0 - w
  np.testing.assert_allclose(own * l, l - (np.arange(l) + 0.5), atol=1e-5)   # (L - W(k)) / L
  np.testing.assert_allclose(w + own, 1.0)
  assert np.all(np.diff(w) > 0) and 0 < w[0] <= 0.5 <= w[-1] < 1   # ramp from the earlier chunk to the later
  np.testing.assert_allclose(w + w[::-1], 1.0, atol=1e-6)          # symmetric


@pytest.mark.parametrize("l,f", [(3, 6), (1, 4), (4, 4)])
def test_active_fusion_matches_the_paper_formula(l, f):
  preds = window_preds(1, f=f, l=l)
  fused = fusion.fuse_windows(preds, l, True)
  assert fused.shape == (B, N, f) + FRAME
  np.testing.assert_allclose(fused, naive_fusion(preds, l, True), atol=1e-6)


def test_fusion_as_a_traced_flag_under_jit():
  preds = window_preds(2)
  fuse = jax.jit(lambda p, a: fusion.fuse_windows(p, L, a))
  np.testing.assert_allclose(fuse(preds, True), naive_fusion(preds, L, True), atol=1e-6)
  np.testing.assert_allclose(fuse(preds, False), naive_fusion(preds, L, False), atol=1e-6)


def test_inactive_fusion_keeps_the_owner_chunk():
  preds = window_preds(3)
  fused = np.asarray(fusion.fuse_windows(preds, L, False))
  np.testing.assert_array_equal(fused, preds[:, :, L:])   # every frame, including the overlaps


def test_identical_predictions_are_unchanged():
  preds = window_preds(4)
  # Make each window's context prediction equal to the previous chunk's own tail prediction.
  preds[:, 1:, :L] = preds[:, :-1, F:]
  fused = np.asarray(fusion.fuse_windows(preds, L, True))
  np.testing.assert_allclose(fused, preds[:, :, L:], atol=1e-6)


def test_last_chunk_and_first_window_context():
  preds = window_preds(5)
  fused = np.asarray(fusion.fuse_windows(preds, L, True))
  np.testing.assert_array_equal(fused[:, -1], preds[:, -1, L:])          # no successor: keeps its own
  np.testing.assert_array_equal(fused[:, :, :F - L], preds[:, :, L:F])   # frames outside the overlap
  # Window 0's context slots (padding) never reach the output.
  poisoned = preds.copy()
  poisoned[:, 0, :L] = np.nan
  assert np.all(np.isfinite(fusion.fuse_windows(poisoned, L, True)))


def test_single_chunk_keeps_its_own():
  preds = window_preds(6, n=1)
  np.testing.assert_array_equal(fusion.fuse_windows(preds, L, True), preds[:, :, L:])


def test_no_context_returns_own():
  preds = window_preds(7, l=0)
  np.testing.assert_array_equal(fusion.fuse_windows(preds, 0, True), preds)


def fused_steps(num_steps, t_alpha, preset):
  """The steps s (num_steps .. 1) at which fusion is on."""
  return [s for s in range(num_steps, 0, -1) if bool(fusion.fusion_active(s, num_steps, t_alpha, preset))]


@pytest.mark.parametrize("num_steps,t_alpha", [(50, 20), (20, 10), (4, 2), (25, 10), (7, 4), (10, 0), (10, 10)])
def test_fusion_ranges(num_steps, t_alpha):
  n = num_steps - t_alpha
  early, mid, late = (fused_steps(num_steps, t_alpha, p) for p in ("early", "mid", "late"))
  assert len(early) == len(mid) == len(late) == n     # same amount of fusion, different timing
  assert early == list(range(num_steps, t_alpha, -1))  # the first steps: s > t_alpha
  assert late == list(range(n, 0, -1))                 # the last steps
  assert mid == sorted(mid, reverse=True) and (not mid or mid[0] - mid[-1] == n - 1)   # contiguous
  if n:
    before, after = num_steps - mid[0], mid[-1] - 1    # unfused steps before and after the range
    assert abs(before - after) <= 1
  assert fused_steps(num_steps, t_alpha, "none") == []


def test_paper_early_fusion():
  assert fused_steps(50, 20, "early") == list(range(50, 20, -1))


def test_invalid_preset():
  with pytest.raises(ValueError, match="sampling.fusion"):
    fusion.fusion_range(50, 20, "always")
  with pytest.raises(ValueError):
    fusion.fusion_active(3, 50, 20, "sometimes")
