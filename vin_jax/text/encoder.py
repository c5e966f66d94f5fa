"""A small bidirectional transformer over byte tokens, or a projection of precomputed embeddings (T5 on TPU).

Both produce text tokens [B, Lt, Dt] and a mask [B, Lt]. A learned null embedding replaces the text of rows
dropped for classifier-free guidance. Linear layers compute in model.dtype (parameters fp32); the byte
embedding, the norms and the residual stream stay fp32.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vin_jax.model import layers

VOCAB_SIZE = 257  # bytes + 1; 0 is padding (see vin_jax.text.tokenizer)


class TextEncoder(nnx.Module):

  def __init__(self, config, *, rngs: nnx.Rngs):
    c = config.text
    self.kind = c.encoder
    width = c.width
    dtype = jnp.dtype(config.model.dtype)
    if self.kind == "bytes":
      self.embed = nnx.Embed(VOCAB_SIZE, width, rngs=rngs)
      self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (c.max_length, width)))
    else:
      self.embed = nnx.Linear(c.precomputed_dim, width, dtype=dtype, rngs=rngs)
      self.pos = None
    self.blocks = nnx.List([_EncoderBlock(width, c.num_heads, rngs=rngs, dtype=dtype) for _ in range(c.depth)])
    self.norm = layers.RMSNorm(width)
    self.null = nnx.Param(0.02 * jax.random.normal(rngs.params(), (1, width)))

  def __call__(self, text, drop_BxBool=None):
    """text: int32 tokens [B, Lt] ("bytes") or embeddings [B, Lt, E] ("precomputed"; padding rows all 0).

    Returns (tokens [B, Lt, Dt], mask [B, Lt]). Dropped rows see only the null embedding.
    """
    if self.kind == "bytes":
      mask = text > 0
      x = self.embed(text) + self.pos[...][None, : text.shape[1]]
    else:
      mask = jnp.any(text != 0, axis=-1)
      x = self.embed(text).astype(jnp.float32)
    # A caption that is entirely padding (empty prompt) still needs one valid key.
    mask = mask.at[:, 0].set(True)
    for block in self.blocks:
      x = block(x, mask)
    x = self.norm(x)
    if drop_BxBool is not None:
      null = jnp.broadcast_to(self.null[...][None], (x.shape[0], x.shape[1], x.shape[2]))
      null_mask = jnp.zeros_like(mask).at[:, 0].set(True)
      x = jnp.where(drop_BxBool[:, None, None], null.astype(x.dtype), x)
      mask = jnp.where(drop_BxBool[:, None], null_mask, mask)
    return x, mask


class _EncoderBlock(nnx.Module):

  def __init__(self, width, num_heads, *, rngs, dtype=jnp.float32):
    self.norm1 = layers.RMSNorm(width)
    self.attn = layers.Attention(width, num_heads, rngs=rngs, dtype=dtype)
    self.norm2 = layers.RMSNorm(width)
    self.mlp = layers.Mlp(width, 4.0, rngs=rngs, dtype=dtype)

  def __call__(self, x_BxLxD, mask_BxL):
    x = x_BxLxD + self.attn(self.norm1(x_BxLxD), key_mask_BxK=mask_BxL)
    return x + self.mlp(self.norm2(x))
