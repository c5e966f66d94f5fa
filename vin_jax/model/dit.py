"""The DiT that denoises one window: window tokens and projected global tokens attend jointly.

Tokens are (temporal patch, row, column) patches of the latent window, with 3D RoPE on window-local
positions. Timesteps are per frame (clean frames have t = 0) and modulate every block through AdaLN-single.
The global tokens' outputs are dropped.
"""
from __future__ import annotations

import dataclasses

import einops
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vin_jax import config as config_lib
from vin_jax.model import factorised, layers


class WindowDiT(nnx.Module):

  def __init__(self, config, *, use_global_tokens: bool, rngs: nnx.Rngs):
    m = config.model
    width, p, pt = m.width, m.patch_size, m.temporal_patch
    c = config_lib.latent_channels(config)
    dtype = jnp.dtype(m.dtype)
    self.patch_size, self.temporal_patch = p, pt
    self.rope_theta = m.rope_theta
    self.head_dim = width // m.num_heads
    patch_dim = pt * p * p * c
    self.patch_embed = nnx.Linear(patch_dim, width, dtype=dtype, rngs=rngs)
    self.time = layers.TimestepEmbedder(width, rngs=rngs)
    # model.micro_conditions (STIV): (fps, height, width) embedded and added to every timestep embedding.
    self.micro = layers.MicroConditionEmbedder(width, rngs=rngs) if m.get("micro_conditions", False) else None
    self.adaln = layers.SharedAdaLN(width, 6, rngs=rngs)
    self.global_proj = nnx.Linear(config.vin.width, width, dtype=dtype, rngs=rngs) if use_global_tokens else None
    # model.attention_layout (STIV's "factorised": spatial then temporal attention, `model/factorised.py`).
    block = factorised.block_class(m.get("attention_layout", "joint"))
    self.blocks = layers.make_blocks(
        lambda r: block(width, m.num_heads, m.mlp_ratio, config.text.width, rngs=r, dtype=dtype,
                        attention_kind=m.attention), m.depth, rngs, stacked=m.scan_layers)
    # model.global_tokens_in_dit: "joint" (the paper) updates the global tokens in every block; "keys_values"
    # (beyond the paper) makes them keys and values of the windows' self-attention only.
    self.global_queries = m.get("global_tokens_in_dit", "joint") == "joint"
    self.remat = m.remat
    self.final_adaln = layers.SharedAdaLN(width, 2, rngs=rngs)
    self.final_table = nnx.Param(jnp.zeros((2, width), jnp.float32))
    self.final_norm = layers.RMSNorm(width, use_scale=False)
    self.final = nnx.Linear(width, patch_dim, kernel_init=nnx.initializers.zeros_init(), rngs=rngs)

  def micro_embedding(self, micro_BxK):
    """[B, D] of model.micro_conditions, or None for a model without them."""
    if self.micro is None:
      return None
    if micro_BxK is None:
      raise ValueError("model.micro_conditions is on: pass micro_BxK [B, 3] (fps, height, width)")
    return self.micro(micro_BxK)

  def grid(self, h: int, w: int) -> tuple[int, int]:
    """The (rows, columns) token grid of latent frames h x w (any size divisible by the patch: RoPE)."""
    return h // self.patch_size, w // self.patch_size

  def positions(self, num_time_patches: int, grid: tuple[int, int]) -> np.ndarray:
    """[Tp * S, 3] (time patch, row, column) of the window's tokens on a (rows, columns) grid, in token order."""
    gh, gw = grid
    t, y, x = np.meshgrid(np.arange(num_time_patches), np.arange(gh), np.arange(gw), indexing="ij")
    return np.stack([t.ravel(), y.ravel(), x.ravel()], axis=-1)

  def rope(self, num_time_patches: int, grid: tuple[int, int]):
    return layers.rope_angles(jnp.asarray(self.positions(num_time_patches, grid)), self.head_dim, self.rope_theta)

  def __call__(self, window_BxWxhxwxc, t_BxW, valid_BxW, global_BxGxDv, t_video_B, text_BxLtxDt,
               text_mask_BxLt, local_context=None, *, micro_BxK=None, keep_BxK=None, kept_context_tokens=0,
               drop_global_B=None):
    """Predicts the diffusion target for every frame of the windows: [B, W, h, w, c].

    `global_BxGxDv=None` runs the window without global tokens (the `no_global` sampling method);
    `drop_global_B` [B] bool does so for some rows only, by masking the global tokens' keys.
    `local_context(tokens_per_patch, time_patches, head_dim, rope_theta)` -> the `LocalContext` of the
    windows' self-attention (chunking.context_mode), or None.
    `micro_BxK` [B, 3]: (fps, height, width) per row, required by a model with model.micro_conditions (the
    denoiser fills in the config's); ignored without.
    `keep_BxK` (masked training, train.mask_ratio; `model/masking.py`): the indices of the K window tokens
    (flattened temporal patch, row, column) that enter the DiT, each with its own RoPE position and AdaLN
    modulation; the first `kept_context_tokens` are context tokens. The other tokens are not computed: their
    predictions are 0.
    """
    p, pt = self.patch_size, self.temporal_patch
    b, num_frames = window_BxWxhxwxc.shape[:2]
    grid = self.grid(*window_BxWxhxwxc.shape[2:4])
    patches = einops.rearrange(window_BxWxhxwxc, "b (t pt) (h ph) (w pw) c -> b t (h w) (pt ph pw c)",
                               pt=pt, ph=p, pw=p)
    tp, s = patches.shape[1], patches.shape[2]
    t_patch = t_BxW.reshape(b, tp, pt).mean(-1)                                   # [B, Tp]
    valid = valid_BxW.reshape(b, tp, pt).all(-1)
    t_emb = self.time(t_patch)                                                    # [B, Tp, D]
    micro = self.micro_embedding(micro_BxK)                                       # [B, D] or None
    if micro is not None:
      t_emb = t_emb + micro[:, None]
    key_mask = jnp.repeat(valid, s, axis=1)                                       # [B, Tp*S]
    final_mod = self.final_adaln(t_emb) + self.final_table[...]                   # [B, Tp, 2, D]
    if keep_BxK is None:
      segments = [layers.Segment(self.patch_embed(patches), self.adaln(t_emb), self.rope(tp, grid))]
    else:
      # Masked training: the kept tokens as a segment of K groups of one token, each with its own modulation.
      take = lambda a: jnp.take_along_axis(a, keep_BxK.reshape(b, -1, *([1] * (a.ndim - 2))), axis=1)
      per_token = lambda a: jnp.take_along_axis(a, (keep_BxK // s).reshape(b, -1, *([1] * (a.ndim - 2))), axis=1)
      x = self.patch_embed(take(patches.reshape(b, tp * s, -1)))[:, :, None]       # [B, K, 1, D]
      rope = layers.rope_angles(jnp.asarray(self.positions(tp, grid))[keep_BxK], self.head_dim, self.rope_theta)
      segments = [layers.Segment(x, per_token(self.adaln(t_emb)), rope)]          # rope [B, K, P]
      key_mask = take(key_mask)
      final_mod = per_token(final_mod)                                            # [B, K, 2, D]
    if self.global_proj is not None and global_BxGxDv is not None:
      g = self.global_proj(global_BxGxDv)
      t_video_emb = self.time(t_video_B)
      if micro is not None:
        t_video_emb = t_video_emb + micro
      segments.append(layers.Segment(g[:, None], self.adaln(t_video_emb)[:, None], queries=self.global_queries))
      seen = jnp.ones(g.shape[:2], bool) if drop_global_B is None else jnp.broadcast_to(
          ~drop_global_B[:, None], g.shape[:2])
      key_mask = jnp.concatenate([key_mask, seen], axis=1)
    context = None if local_context is None else local_context(s, tp, self.head_dim, self.rope_theta)
    if context is not None and keep_BxK is not None:
      if context.mode != "recompute":
        raise ValueError("masked training (train.mask_ratio > 0) needs chunking.context_mode='recompute'")
      context = dataclasses.replace(context, context_tokens=kept_context_tokens)
    segments = layers.run_blocks(self.blocks, segments, text_BxLtxDt, text_mask_BxLt, key_mask, context,
                                 remat=self.remat)
    x = segments[0].x
    x = self.final_norm(x) * (1 + final_mod[:, :, None, 1]) + final_mod[:, :, None, 0]
    out = self.final(x).astype(jnp.float32)
    if keep_BxK is not None:   # back to the window grid, dropped tokens 0
      out = jnp.zeros((b, tp * s, out.shape[-1]), out.dtype).at[jnp.arange(b)[:, None], keep_BxK].set(out[:, :, 0])
      out = out.reshape(b, tp, s, -1)
    gh, gw = grid
    return einops.rearrange(out, "b t (h w) (pt ph pw c) -> b (t pt) (h ph) (w pw) c",
                            h=gh, w=gw, pt=pt, ph=p, pw=p)
