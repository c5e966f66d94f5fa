"""Exact softmax attention over keys split across devices, from per-device partial results.

Each device attends over its own keys and returns (out, lse). With M = max over devices of lse,
O = sum_d exp(lse_d - M) * out_d / sum_d exp(lse_d - M). Only O(Q * D) bytes cross devices, whatever the
number of keys. The max is a constant shift (stop_gradient): the result does not depend on it, and
`lax.pmax` has no differentiation rule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def combine_partial_attention(out_BxQxHxDh, lse_BxQxH, axis_name: str | None):
  if axis_name is None:
    return out_BxQxHxDh
  m = jax.lax.pmax(jax.lax.stop_gradient(lse_BxQxH), axis_name)
  w = jnp.exp(lse_BxQxH - m)
  num = jax.lax.psum(w[..., None] * out_BxQxHxDh.astype(jnp.float32), axis_name)
  den = jax.lax.psum(w, axis_name)
  return (num / den[..., None]).astype(out_BxQxHxDh.dtype)
