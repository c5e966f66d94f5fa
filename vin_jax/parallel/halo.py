"""Moving chunk tails between neighbouring chunks, on one device or across the `chunk` mesh axis.

Inside `shard_map` the chunk axis is split over devices; `axis_name` names that mesh axis. With
`axis_name=None` the same functions run on a whole (unsharded) chunk axis, so one code path serves both.
Only the L-frame halos cross devices (`ppermute`); video tokens are never all-gathered.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def chunk_offset(num_local_chunks: int, axis_name: str | None):
  """Global index of this device's first chunk."""
  if axis_name is None:
    return 0
  return jax.lax.axis_index(axis_name) * num_local_chunks


def shift_chunks_right(x_BxNx___, axis_name: str | None = None):
  """out[:, i] = x[:, i - 1]; out[:, 0] of the first chunk of the video is zeros."""
  first = jnp.zeros_like(x_BxNx___[:, :1])
  if axis_name is not None:
    n = jax.lax.axis_size(axis_name)
    first = jax.lax.ppermute(x_BxNx___[:, -1:], axis_name, perm=[(j, j + 1) for j in range(n - 1)])
  return jnp.concatenate([first, x_BxNx___[:, :-1]], axis=1)


def shift_chunks_left(x_BxNx___, axis_name: str | None = None):
  """out[:, i] = x[:, i + 1]; the last chunk of the video gets zeros."""
  last = jnp.zeros_like(x_BxNx___[:, :1])
  if axis_name is not None:
    n = jax.lax.axis_size(axis_name)
    last = jax.lax.ppermute(x_BxNx___[:, :1], axis_name, perm=[(j + 1, j) for j in range(n - 1)])
  return jnp.concatenate([x_BxNx___[:, 1:], last], axis=1)
