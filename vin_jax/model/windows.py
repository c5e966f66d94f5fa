"""The one place that builds windows: window i = concat(last L frames of chunk i-1, chunk i)."""
from __future__ import annotations

import jax.numpy as jnp

from vin_jax.parallel import halo


def build_windows(x_BxNxFx___, context_frames: int, *, axis_name: str | None = None):
  """Chunk-major [B, N, F, ...] -> windows [B, N, L + F, ...] and validity [N, L + F] (bool).

  The context of window 0 (the video's first chunk) has no predecessor: zeros, marked invalid so that
  attention and losses ignore it. Works on videos, per-frame times and targets alike.
  """
  L = context_frames
  n, F = x_BxNxFx___.shape[1], x_BxNxFx___.shape[2]
  if L == 0:
    return x_BxNxFx___, jnp.ones((n, F), bool)
  context = halo.shift_chunks_right(x_BxNxFx___[:, :, F - L:], axis_name)
  windows = jnp.concatenate([context, x_BxNxFx___], axis=2)
  chunk_index = halo.chunk_offset(n, axis_name) + jnp.arange(n)
  context_valid = jnp.broadcast_to((chunk_index > 0)[:, None], (n, L))
  return windows, jnp.concatenate([context_valid, jnp.ones((n, F), bool)], axis=1)
