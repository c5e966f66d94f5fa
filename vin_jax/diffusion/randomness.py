"""Random draws keyed by global (row, chunk) indices, so a sharded run draws exactly what one device does."""
from __future__ import annotations

import jax
import jax.numpy as jnp


def row_keys(rng, num_rows: int, row_offset=0):
  """One key per batch row [B] (global row index = row_offset + b)."""
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(row_offset + jnp.arange(num_rows))


def chunk_keys(rng, num_rows: int, num_chunks: int, row_offset=0, chunk_offset=0):
  """One key per (row, chunk) [B, N], from the global indices (row_offset + b, chunk_offset + n)."""
  chunks = chunk_offset + jnp.arange(num_chunks)
  return jax.vmap(lambda k: jax.vmap(lambda c: jax.random.fold_in(k, c))(chunks))(
      row_keys(rng, num_rows, row_offset))


def chunk_normal(rng, shape_BxNx___, row_offset=0, chunk_offset=0):
  """Standard normal [B, N, ...] where slice (b, n) depends only on (rng, global b, global n)."""
  keys = chunk_keys(rng, *shape_BxNx___[:2], row_offset, chunk_offset)
  rest = tuple(shape_BxNx___[2:])
  return jax.vmap(jax.vmap(lambda k: jax.random.normal(k, rest)))(keys)


def row_uniform(rng, num_rows: int, row_offset=0):
  return jax.vmap(lambda k: jax.random.uniform(k))(row_keys(rng, num_rows, row_offset))
