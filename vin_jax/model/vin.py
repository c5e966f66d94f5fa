"""The Video Interface Network: G global tokens from keyframes of the whole noisy video.

Encoder: the global tokens (queries) cross-attend to all keyframe tokens of the video, then an MLP.
Processor: self-attention blocks over the global tokens that also see the text and the timestep.
The cost grows with the number of keyframes only; the output size G is fixed.

Linear layers compute in model.dtype (parameters fp32); norms, the timestep embedders, the keyframe
attention's softmax and its log-sum-exp combine across devices stay fp32, and so does the residual stream.
"""
from __future__ import annotations

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vin_jax import config as config_lib
from vin_jax.model import layers
from vin_jax.parallel import attention_combine, halo


class VideoInterfaceNetwork(nnx.Module):

  def __init__(self, config, *, rngs: nnx.Rngs):
    v = config.vin
    width, p = v.width, config.model.patch_size
    h, w, c = config_lib.latent_shape(config)
    dtype = jnp.dtype(config.model.dtype)
    self.dtype = dtype
    self.patch_size = p
    self.stride = config_lib.keyframe_stride(config)
    self.global_init = nnx.Param(0.02 * jax.random.normal(rngs.params(), (v.num_global_tokens, width)))
    self.patch_embed = nnx.Linear(p * p * c, width, dtype=dtype, rngs=rngs)
    # A learned table over the data.height x data.width grid, resized bilinearly to other grids (data.resolutions).
    self.pos_grid = (h // p, w // p)
    self.spatial_pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), ((h // p) * (w // p), width)))
    self.frame_pos = nnx.Linear(width, width, dtype=dtype, rngs=rngs)
    self.keyframe_time = layers.TimestepEmbedder(width, rngs=rngs)
    self.query_norm = layers.RMSNorm(width)
    self.key_norm = layers.RMSNorm(width)
    self.cross = layers.Attention(width, v.num_heads, rngs=rngs, dtype=dtype)
    self.mlp_norm = layers.RMSNorm(width)
    self.mlp = layers.Mlp(width, v.mlp_ratio, rngs=rngs, dtype=dtype)
    self.time = layers.TimestepEmbedder(width, rngs=rngs)
    # model.micro_conditions (STIV): added to the processor's timestep embedding, as in the DiT.
    self.micro = (layers.MicroConditionEmbedder(width, rngs=rngs) if config.model.get("micro_conditions", False)
                  else None)
    self.adaln = layers.SharedAdaLN(width, rngs=rngs)
    self.processor = layers.make_blocks(
        lambda r: layers.DiTBlock(width, v.num_heads, v.mlp_ratio, config.text.width, rngs=r, dtype=dtype,
                                  attention_kind=config.model.attention),
        v.processor_depth, rngs, stacked=config.model.scan_layers)
    self.remat = config.model.remat
    self.out_norm = layers.RMSNorm(width)

  def keyframe_tokens(self, video_BxNxFxhxwxc, t_BxNxF, axis_name=None):
    """Keyframes every `stride` latent frames -> tokens [B, N*K*S, Dv] (model.dtype) with video position and
    time."""
    b, n, f = video_BxNxFxhxwxc.shape[:3]
    keyframes = video_BxNxFxhxwxc[:, :, ::self.stride]                       # [B, N, K, h, w, c]
    k = keyframes.shape[2]
    p = self.patch_size
    patches = einops.rearrange(keyframes, "b n k (h ph) (w pw) c -> b n k (h w) (ph pw c)", ph=p, pw=p)
    grid = (keyframes.shape[3] // p, keyframes.shape[4] // p)
    tokens = self.patch_embed(patches) + self.spatial_positions(grid)       # [B, N, K, S, Dv]
    frame_index = (halo.chunk_offset(n, axis_name) + jnp.arange(n))[:, None] * f + np.arange(0, f, self.stride)
    pos = self.frame_pos(layers.position_features(frame_index, tokens.shape[-1]))   # [N, K, Dv]
    t_emb = self.keyframe_time(t_BxNxF[:, :, ::self.stride])                # [B, N, K, Dv]
    tokens = tokens + pos[None, :, :, None] + t_emb[:, :, :, None]
    return tokens.reshape(b, n * k * tokens.shape[3], -1).astype(self.dtype)

  def spatial_positions(self, grid: tuple[int, int]):
    """The position table for a (rows, columns) token grid: [rows * columns, Dv]; the learned table itself at
    the data.height x data.width grid, else its bilinear resize (jax.image.resize, half-pixel centres)."""
    table = self.spatial_pos[...]
    if tuple(grid) == self.pos_grid:
      return table
    table = table.reshape(*self.pos_grid, -1)
    return jax.image.resize(table, (*grid, table.shape[-1]), "bilinear").reshape(grid[0] * grid[1], -1)

  def __call__(self, video_BxNxFxhxwxc, t_BxNxF, t_video_B, text_BxLtxDt, text_mask_BxLt, *, axis_name=None,
               micro_BxK=None):
    """Noisy latent video (chunk-major; the local chunks when sharded) -> global tokens [B, G, Dv] in model.dtype
    (the DiT's global_proj computes in it). `micro_BxK` [B, 3] (fps, height, width): required with
    model.micro_conditions, ignored without."""
    b = video_BxNxFxhxwxc.shape[0]
    keys = self.key_norm(self.keyframe_tokens(video_BxNxFxhxwxc, t_BxNxF, axis_name))
    z = jnp.broadcast_to(self.global_init[...][None], (b, *self.global_init.shape))
    q = self.cross.project_q(self.query_norm(z))
    k, v = self.cross.project_kv(keys)
    # fp32 partial outputs: the per-device results are combined by their fp32 log-sum-exp before rounding.
    out, lse = layers.attention(q.astype(jnp.float32), k, v, return_lse=True)
    out = attention_combine.combine_partial_attention(out, lse, axis_name)
    z = z + self.cross.merge_heads(out)
    z = z + self.mlp(self.mlp_norm(z))
    t_emb = self.time(t_video_B)                                           # [B, Dv]
    if self.micro is not None:
      if micro_BxK is None:
        raise ValueError("model.micro_conditions is on: pass micro_BxK [B, 3] (fps, height, width)")
      t_emb = t_emb + self.micro(micro_BxK)
    mod = self.adaln(t_emb)[:, None]                                       # [B, 1, 6, Dv]
    segments = [layers.Segment(z[:, None], mod)]
    segments = layers.run_blocks(self.processor, segments, text_BxLtxDt, text_mask_BxLt, remat=self.remat)
    return self.out_norm(segments[0].x[:, 0]).astype(self.dtype)
