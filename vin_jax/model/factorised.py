"""STIV's spatial-temporal layout (model.attention_layout="factorised"): each block's self-attention is a spatial
attention inside every frame, then a temporal attention along every spatial position; text cross-attention and
the MLP follow as in the joint block.

Where the global tokens go: into the **spatial** attention. Every frame's queries attend to that frame's tokens
and to all G global tokens; the global tokens' own queries (model.global_tokens_in_dit="joint") attend to every
window token and to each other, as in the joint block. The temporal attention is the window's tokens alone:
a global token has no spatial position to attend along.

The local context (chunking.context_mode) acts where frames meet, in the temporal attention and in the global
queries' attention: "recompute" stops the gradient into the context frames' keys and values there (the
spatial attention of an own frame never reads a context frame); "shared" appends the neighbour's last L' time
patches as temporal keys, re-rotated as in the joint block (`local_context.py`).

Cost per window of T time patches x S tokens (+ G global): spatial T * S * (S + G) logits, temporal
S * T * (T + L') logits, against the joint layout's (T * S + G)^2: attention becomes nearly linear in T.
The temporal attention is new parameters (`temporal_attn`, `post_temporal`, `temporal_table`); its residual
gate is `temporal_table[2]` alone, zero-initialised and not time-modulated, so a factorised model initialised
from a joint or text-to-image model (`train --init_from`) starts with that model's predictions.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vin_jax.model import layers

LAYOUTS = ("joint", "factorised")


class FactorisedDiTBlock(layers.DiTBlock):

  def __init__(self, width: int, num_heads: int, mlp_ratio: float, text_width: int, *, rngs: nnx.Rngs,
               dtype=jnp.float32, attention_kind: str = "einsum"):
    super().__init__(width, num_heads, mlp_ratio, text_width, rngs=rngs, dtype=dtype, attention_kind=attention_kind)
    self.temporal_attn = layers.Attention(width, num_heads, rngs=rngs, dtype=dtype, kind=attention_kind)
    self.post_temporal = layers.RMSNorm(width)
    # Rows: shift and scale added to the attention modulation (rows 0, 1), and the gate.
    self.temporal_table = nnx.Param(jnp.zeros((3, width), jnp.float32))

  def self_attention(self, segments: list[layers.Segment], mods, key_mask_BxL, local_context) -> list[jax.Array]:
    window = segments[0]
    if window.rope is None or window.rope.ndim != 2:
      raise ValueError("the factorised layout needs the window segment first, with positions shared by all rows "
                       "(masked training's per-token positions need model.attention_layout='joint')")
    _, t, s, _ = window.x.shape
    window_mask = None if key_mask_BxL is None else key_mask_BxL[:, :t * s]
    x_window, x_others = self.spatial(segments, mods, key_mask_BxL, local_context)
    x_window = self.temporal(x_window, mods[0], window.rope, window_mask, local_context)
    return [x_window, *x_others]

  def spatial(self, segments, mods, key_mask_BxL, local_context):
    """Frames attend within themselves and to the global tokens; global queries attend to everything.
    -> the window's tokens [B, T, S, D] and the other query segments' tokens, after the residual update."""
    window, others = segments[0], segments[1:]
    b, t, s, d = window.x.shape
    h = layers.modulated(self.norm_attn, [seg.x for seg in segments], mods, 0, 1)
    h_window = h[0].reshape(b, t * s, d)
    q = self.attn.project_q(h_window, window.rope)                              # [B, T*S, H, Dh]
    k, v = self.attn.project_kv(h_window, window.rope)
    heads, dh = q.shape[2:]
    frames = lambda a: a.reshape(b * t, s, heads, dh)
    mask = None if key_mask_BxL is None else key_mask_BxL[:, :t * s].reshape(b * t, s)
    k_frames, v_frames = frames(k), frames(v)
    if others:
      h_other = layers.flatten_tokens(h[1:])                                          # [B, G, D]
      k_g, v_g = self.attn.project_kv(h_other)                                   # [B, G, H, Dh]
      per_frame = lambda a: jnp.broadcast_to(a[:, None], (b, t, *a.shape[1:])).reshape(b * t, *a.shape[1:])
      k_frames = jnp.concatenate([k_frames, per_frame(k_g)], axis=1)
      v_frames = jnp.concatenate([v_frames, per_frame(v_g)], axis=1)
      if mask is not None:
        mask = jnp.concatenate([mask, per_frame(key_mask_BxL[:, t * s:])], axis=1)
    out = layers.attention(frames(q), k_frames, v_frames, mask, kind=self.attn.kind).reshape(b, t, s, heads, dh)
    x_window = window.x + self.post_attn(self.attn.merge_heads(out.reshape(b, t * s, heads, dh))
                                         ).reshape(b, t, s, d) * mods[0][:, :, None, 2]
    queried = [seg for seg in others if seg.queries]
    if not queried:
      return x_window, []
    # The global tokens' queries: every window token and every global token, as in the joint block.
    n_q = sum(seg.x.shape[1] * seg.x.shape[2] for seg in queried)
    q_g = self.attn.project_q(h_other[:, :n_q])
    keys, values, key_mask = jnp.concatenate([k, k_g], axis=1), jnp.concatenate([v, v_g], axis=1), key_mask_BxL
    if local_context is not None:
      keys, values, key_mask = local_context.keys_values(keys, values, key_mask)
    out_g = self.attn.merge_heads(layers.attention(q_g, keys, values, key_mask, kind=self.attn.kind))
    updates = layers.split_tokens(self.post_attn(out_g), [seg.x.shape for seg in queried])
    return x_window, [seg.x + u * m[:, :, None, 2] for seg, u, m in zip(queried, updates, mods[1:])]

  def temporal(self, x_BxTxSxD, mod_BxTxMxD, rope_LxP, window_mask_BxL, local_context):
    """Every spatial position attends along the window's time patches (and the shared context's)."""
    b, t, s, d = x_BxTxSxD.shape
    table = self.temporal_table[...]
    h = (self.norm_attn(x_BxTxSxD) * (1 + mod_BxTxMxD[:, :, None, 1] + table[1])
         + mod_BxTxMxD[:, :, None, 0] + table[0]).reshape(b, t * s, d)
    q = self.temporal_attn.project_q(h, rope_LxP)
    k, v = self.temporal_attn.project_kv(h, rope_LxP)
    mask = window_mask_BxL
    if local_context is not None:                  # recompute: stop-gradient context; shared: + neighbour's tail
      k, v, mask = local_context.keys_values(k, v, mask)
    heads, dh = q.shape[2:]

    def along_time(a):   # [B, T'*S, ...] -> [B*S, T', ...]
      a = a.reshape(b, a.shape[1] // s, s, *a.shape[2:])
      return jnp.swapaxes(a, 1, 2).reshape(b * s, a.shape[1], *a.shape[3:])

    out = layers.attention(along_time(q), along_time(k), along_time(v), None if mask is None else along_time(mask),
                           kind=self.temporal_attn.kind)                       # [B*S, T, H, Dh]
    out = jnp.swapaxes(out.reshape(b, s, t, heads, dh), 1, 2).reshape(b, t * s, heads, dh)
    update = self.post_temporal(self.temporal_attn.merge_heads(out)).reshape(b, t, s, d)
    return x_BxTxSxD + update * table[2]


def block_class(layout: str):
  """model.attention_layout -> the DiT's block class."""
  if layout not in LAYOUTS:
    raise ValueError(f"model.attention_layout={layout!r} must be one of {LAYOUTS}")
  return FactorisedDiTBlock if layout == "factorised" else layers.DiTBlock
