"""How a window's tokens see the previous chunk inside each self-attention (chunking.context_mode).

- "recompute" (the paper): window i is [last L frames of chunk i-1, chunk i]; the L context frames run
  through the whole DiT again inside window i. With stop_gradient_context, the context tokens' keys and
  values are stop-gradient in every self-attention, so window i's own frames send no gradient into them.
- "shared" (beyond the paper): window i is chunk i alone. In each self-attention its tokens also attend to
  the keys and values that chunk i-1's own tokens computed at that layer for its last L frames (no frame is
  computed twice). Across 'chunk' devices these halos move by ppermute, O(L x tokens per frame x width)
  bytes per layer whatever the video length. stop_gradient_context stops the gradient through them.

RoPE in shared mode: chunk i's own frames keep window-local time positions 0..F'-1 and the neighbour's
context frames sit at -L'..-1 (temporal patches). The neighbour rotated its keys at its own positions
F'-L'..F'-1, so they are rotated once more by -F' (rotations compose), which makes every query-key score
depend on the frames' true distance.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vin_jax.model import layers
from vin_jax.parallel import halo

MODES = ("recompute", "shared")


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class LocalContext:
  """Static description of the local context of a batch of windows [B * N, ...] (row-major, chunk-minor).

  context_patches: L' temporal patches of context (0: none). tokens_per_patch: S spatial tokens.
  time_patches: F', a window's own temporal patches (shared mode). num_chunks: N local chunks per row.
  """
  mode: str
  context_patches: int
  tokens_per_patch: int
  time_patches: int
  num_chunks: int
  stop_gradient: bool
  axis_name: str | None = None
  head_dim: int = 0
  rope_theta: float = 10000.0
  # Masked training (train.mask_ratio): the window's kept context tokens, its first ones (-1: all of them,
  # context_patches * tokens_per_patch).
  context_tokens: int = -1

  def keys_values(self, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK):
    """Self-attention keys and values of a block (own window tokens first, then the global tokens) ->
    the keys, values and key mask the window's queries attend to."""
    if self.context_patches == 0:
      return k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK
    if self.mode == "recompute":
      if self.stop_gradient:
        k_BxKxHxDh, v_BxKxHxDh = self._stop_context(k_BxKxHxDh), self._stop_context(v_BxKxHxDh)
      return k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK
    k_ctx, v_ctx, valid = self.neighbour_halo(k_BxKxHxDh, v_BxKxHxDh)
    if key_mask_BxK is None:
      key_mask_BxK = jnp.ones(k_BxKxHxDh.shape[:2], bool)
    return (jnp.concatenate([k_BxKxHxDh, k_ctx], axis=1), jnp.concatenate([v_BxKxHxDh, v_ctx], axis=1),
            jnp.concatenate([key_mask_BxK, valid], axis=1))

  def attend(self, q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK, *, kind: str):
    """The window's self-attention with this local context: `keys_values`, then `layers.attention`.
    -> [B, Q, H, Dh].

    Shared mode with the whole chunk axis on this device: the video's first chunk has no neighbour, so its
    queries attend to their own keys alone instead of through L' x S masked halo keys, and the other
    chunks' halos need no mask (the same numbers; 1/N of the halo's attention FLOPs saved). Split over
    'chunk' devices every device runs the same program, so there the first chunk's halo stays masked.
    """
    if self.mode != "shared" or self.context_patches == 0 or self._chunks_split():
      k, v, mask = self.keys_values(k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK)
      return layers.attention(q_BxQxHxDh, k, v, mask, kind=kind)
    n, bn = self.num_chunks, q_BxQxHxDh.shape[0]
    by_chunk = lambda a: a.reshape(bn // n, n, *a.shape[1:])
    first = lambda a: None if a is None else by_chunk(a)[:, 0]
    later = lambda a: None if a is None else by_chunk(a)[:, 1:].reshape(bn // n * (n - 1), *a.shape[1:])
    out = [layers.attention(first(q_BxQxHxDh), first(k_BxKxHxDh), first(v_BxKxHxDh), first(key_mask_BxK),
                            kind=kind)[:, None]]
    if n > 1:
      k_ctx, v_ctx, _ = self.neighbour_halo(k_BxKxHxDh, v_BxKxHxDh)     # every later chunk's halo is valid
      mask = key_mask_BxK
      if mask is not None:
        mask = jnp.concatenate([mask, jnp.ones(k_ctx.shape[:2], bool)], axis=1)
      rest = layers.attention(later(q_BxQxHxDh), jnp.concatenate([later(k_BxKxHxDh), later(k_ctx)], axis=1),
                              jnp.concatenate([later(v_BxKxHxDh), later(v_ctx)], axis=1), later(mask), kind=kind)
      out.append(rest.reshape(bn // n, n - 1, *rest.shape[1:]))
    return jnp.concatenate(out, axis=1).reshape(bn, *out[0].shape[2:])

  def _chunks_split(self) -> bool:
    return self.axis_name is not None and jax.lax.axis_size(self.axis_name) > 1

  def _stop_context(self, x_BxKxHxDh):
    n = self.context_patches * self.tokens_per_patch   # the window's first tokens are its context frames
    n = n if self.context_tokens < 0 else self.context_tokens
    return jnp.concatenate([jax.lax.stop_gradient(x_BxKxHxDh[:, :n]), x_BxKxHxDh[:, n:]], axis=1)

  def neighbour_halo(self, k_BxKxHxDh, v_BxKxHxDh):
    """Shared mode: the previous chunk's keys and values of its last L' temporal patches, re-rotated to
    positions -L'..-1, [B*N, L'*S, H, Dh] each, and their validity [B*N, L'*S] (the video's first chunk
    has no predecessor)."""
    lp, s, tp, n = self.context_patches, self.tokens_per_patch, self.time_patches, self.num_chunks
    bn, _, h, dh = k_BxKxHxDh.shape

    def halo_of(x):
      own = x[:, :tp * s].reshape(bn // n, n, tp, s, h, dh)
      tail = halo.shift_chunks_right(own[:, :, tp - lp:], self.axis_name)            # [B, N, L', S, H, Dh]
      tail = tail.reshape(bn, lp * s, h, dh)
      return jax.lax.stop_gradient(tail) if self.stop_gradient else tail

    k_ctx, v_ctx = halo_of(k_BxKxHxDh), halo_of(v_BxKxHxDh)
    k_ctx = apply_time_shift(k_ctx, -tp, self.head_dim, self.rope_theta)
    chunk_index = halo.chunk_offset(n, self.axis_name) + jnp.arange(n)
    valid = jnp.broadcast_to((chunk_index > 0)[None, :, None], (bn // n, n, lp * s)).reshape(bn, lp * s)
    return k_ctx, v_ctx, valid


def apply_time_shift(k_BxLxHxDh, shift: int, head_dim: int, theta: float):
  """Rotates RoPE'd keys by a further `shift` time positions (row and column unchanged)."""
  angles = layers.rope_angles(jnp.asarray(np.array([[shift, 0, 0]])), head_dim, theta)       # [1, P]
  angles = jnp.broadcast_to(angles, (k_BxLxHxDh.shape[1], angles.shape[-1]))
  return layers.apply_rope(k_BxLxHxDh, angles)
