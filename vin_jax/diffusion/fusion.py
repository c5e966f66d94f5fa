"""Token fusion: on each overlap, a linear ramp from the earlier chunk's prediction to the later one's.

The overlap of chunks i-1 and i is the last L frames of chunk i-1, which are also the context of window i.
fused[k] = ((L - W(k)) * own_{i-1}[F-L+k] + W(k) * ctx_i[k]) / L with W(k) = k + 1/2.
"""
from __future__ import annotations

import jax.numpy as jnp

from vin_jax.parallel import halo

PRESETS = ("early", "mid", "late", "none")


def context_weights(context_frames: int):
  """W(k) / L for k = 0..L-1: the weight of the later chunk's (context) prediction; own gets 1 - it."""
  return (jnp.arange(context_frames, dtype=jnp.float32) + 0.5) / context_frames


def fusion_range(num_steps: int, t_alpha: int, preset: str) -> tuple[int, int]:
  """Steps s (counting down num_steps .. 1) with lo < s <= hi fuse. Every preset but 'none' fuses
  num_steps - t_alpha steps: early = the first ones, mid = centred, late = the last ones."""
  n = num_steps - t_alpha
  if preset == "early":
    return t_alpha, num_steps
  if preset == "late":
    return 0, n
  if preset == "mid":
    lo = (num_steps - n) // 2
    return lo, lo + n
  if preset == "none":
    return 0, 0
  raise ValueError(f"sampling.fusion={preset!r} must be one of {PRESETS}")


def fusion_active(step, num_steps: int, t_alpha: int, preset: str):
  lo, hi = fusion_range(num_steps, t_alpha, preset)
  return jnp.logical_and(step > lo, step <= hi)


def fuse_windows(preds_BxNxWx___, context_frames: int, active, axis_name: str | None = None):
  """Window predictions [B, N, L + F, ...] -> one prediction per video frame [B, N, F, ...].

  Where `active` is False (or L = 0) each frame takes its owner chunk's prediction and the context
  predictions are dropped. The last chunk of the video has no successor and keeps its own.
  """
  L = context_frames
  own = preds_BxNxWx___[:, :, L:]
  if L == 0:
    return own
  F = own.shape[2]
  ctx_next = halo.shift_chunks_left(preds_BxNxWx___[:, :, :L], axis_name)    # ctx_{i+1} for chunk i
  n = own.shape[1]
  has_next = halo.shift_chunks_left(jnp.ones((1, n), jnp.float32), axis_name)  # 0 for the video's last chunk
  w = context_weights(L)[None, None, :] * has_next[:, :, None] * jnp.asarray(active, jnp.float32)
  w = w.reshape(w.shape + (1,) * (own.ndim - 3))
  tail = (1.0 - w) * own[:, :, F - L:] + w * ctx_next
  return jnp.concatenate([own[:, :, :F - L], tail], axis=2)
