"""MaskDiT / STIV masked training (train.mask_ratio; beyond the VIN paper): each window drops a random
fraction of its frame tokens from the DiT in training (a shorter sequence: a cheaper step).

Per window (row-major, chunk-minor windows [B * Nw]) the tokens are flattened (temporal patch, row, column).
The drop is stratified: round(ratio * tokens) of the L' * S context tokens and of the F' * S own tokens are
dropped separately, so the number of kept context tokens is static (the recomputed context's stop-gradient
boundary stays a static prefix) and both parts are scored in proportion. Kept indices are sorted (context
first). The draw is keyed by the GLOBAL row and window (chunk) index, so a sharded run drops what one device
drops. Sampling never masks.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from vin_jax.diffusion import randomness


@dataclasses.dataclass(frozen=True)
class MaskRequest:
  """What the loss asks the denoiser for: drop `ratio` of every window's tokens, drawn from `rng`
  (global row = row_offset + b)."""
  rng: jax.Array
  ratio: float
  row_offset: int | jax.Array = 0


def kept(num_tokens: int, ratio: float) -> int:
  """Tokens kept of `num_tokens`: round(ratio * num_tokens) dropped, but at least one kept (of a part that
  has tokens), so that a high ratio on a small window still scores every window."""
  return min(num_tokens, max(num_tokens - int(round(ratio * num_tokens)), 1))


def sample_keep(rng, rows: int, num_windows: int, context_tokens: int, own_tokens: int, ratio: float, *,
                row_offset=0, window_offset=0):
  """Kept token indices [rows, Nw, Kc + Ko] (int32, sorted; the first Kc are context tokens)."""
  kc, ko = kept(context_tokens, ratio), kept(own_tokens, ratio)

  def one(key):
    r_ctx, r_own = jax.random.split(key)
    ctx = jnp.sort(jnp.argsort(jax.random.uniform(r_ctx, (context_tokens,)))[:kc])
    own = jnp.sort(jnp.argsort(jax.random.uniform(r_own, (own_tokens,)))[:ko]) + context_tokens
    return jnp.concatenate([ctx, own]).astype(jnp.int32)

  rows_keys = randomness.row_keys(rng, rows, row_offset)
  windows = window_offset + jnp.arange(num_windows)
  return jax.vmap(lambda k: jax.vmap(lambda w: one(jax.random.fold_in(k, w)))(windows))(rows_keys)


def token_weights(keep_BxK, context_tokens: int, own_tokens: int, ratio: float):
  """[B, context_tokens + own_tokens] fp32: 0 for dropped tokens, tokens / kept of the token's part for
  kept ones, so that the masked loss has the unmasked loss's scale."""
  kc, ko = kept(context_tokens, ratio), kept(own_tokens, ratio)
  scale = jnp.concatenate([jnp.full((context_tokens,), context_tokens / max(kc, 1), jnp.float32),
                           jnp.full((own_tokens,), own_tokens / max(ko, 1), jnp.float32)])
  b = keep_BxK.shape[0]
  is_kept = jnp.zeros((b, context_tokens + own_tokens), jnp.float32).at[
      jnp.arange(b)[:, None], keep_BxK].set(1.0)
  return is_kept * scale[None]
