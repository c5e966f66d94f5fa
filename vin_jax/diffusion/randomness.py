"""Random draws keyed by global (row, chunk) indices, so a sharded run draws exactly what one device does."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def row_keys(rng, num_rows: int, row_offset=0):
  """One key per batch row [B] (global row index = row_offset + b)."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(row_offset + jnp.arange(num_rows))


def chunk_normal(rng, shape_BxNx___, row_offset=0, chunk_offset=0):
  """Standard normal [B, N, ...] where slice (b, n) depends only on (rng, global b, global n)."""
  b, n = shape_BxNx___[:2]
  rest = tuple(shape_BxNx___[2:])

  def one(row_key, chunk):
    return jax.random.normal(jax.random.fold_in(row_key, chunk), rest)

  rows = row_keys(rng, b, row_offset)
  chunks = chunk_offset + jnp.arange(n)
  return jax.vmap(lambda k: jax.vmap(lambda c: one(k, c))(chunks))(rows)


def row_uniform(rng, num_rows: int, row_offset=0):
  return jax.vmap(lambda k: jax.random.uniform(k))(row_keys(rng, num_rows, row_offset))
