"""Video -> windows -> predictions. One module serves VIN, `no_global` (vin.enabled=False) and `full`
(model.window_mode="full": one window over the whole video, no global tokens): flags, not forks.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from vin_jax.diffusion.schedules import Schedule
from vin_jax.model import dit, masking, vin, windows
from vin_jax.model.local_context import LocalContext
from vin_jax.parallel import halo
from vin_jax.text import encoder as text_encoder


class VideoDenoiser(nnx.Module):

  def __init__(self, config, *, rngs: nnx.Rngs):
    self.full = config.model.window_mode == "full"
    use_vin = config.vin.enabled and not self.full
    self.text = text_encoder.TextEncoder(config, rngs=rngs)
    self.vin = vin.VideoInterfaceNetwork(config, rngs=rngs) if use_vin else None
    self.dit = dit.WindowDiT(config, use_global_tokens=use_vin, rngs=rngs)
    self.stop_gradient_context = bool(config.chunking.stop_gradient_context)
    self.shared_context = config.chunking.get("context_mode", "recompute") == "shared"
    self.temporal_patch = config.model.temporal_patch
    d = config.diffusion
    self.schedule = Schedule.from_config(config)
    self.x0_output = d.network_output == "x0"
    self.input_skip = bool(d.input_skip) and not self.x0_output
    self.sigma_data, self.x0_min_sigma = float(d.sigma_data), float(d.x0_min_sigma)
    # model.micro_conditions: the (fps, height, width) rows take when the caller passes none.
    self.micro_conditions = bool(config.model.get("micro_conditions", False))
    # Training passes each row's (the pipeline's "micro"); sampling takes sampling.fps (0: data.fps) and the
    # pixel size of the latents it denoises.
    self.default_fps = float(config.sampling.get("fps", 0.0)) or float(config.data.fps)
    self.spatial_factor = int(config.autoencoder.spatial_factor)

  def context_frames(self, requested: int, full: bool | None = None) -> int:
    """Context frames recomputed inside each window: none in `full` mode (its one window is the video) or
    with chunking.context_mode="shared" (windows read them from the neighbour's keys and values)."""
    return 0 if (self.full if full is None else full) or self.shared_context else requested

  def encode_text(self, text, drop_B=None):
    return self.text(text, drop_B)

  def micro(self, micro_BxK, latent_shape):
    """The micro-conditions [B, 3] (fps, height, width; fp32): `micro_BxK`, or, when it is None, sampling.fps
    (0: data.fps) and the pixel size of latents of `latent_shape` [B, N, F, h, w, c] for every row. None for a
    model without model.micro_conditions."""
    if not self.micro_conditions:
      return None
    batch, h, w = latent_shape[0], latent_shape[3], latent_shape[4]
    if micro_BxK is None:
      default = (self.default_fps, float(h * self.spatial_factor), float(w * self.spatial_factor))
      return jnp.broadcast_to(jnp.asarray(default, jnp.float32), (batch, 3))
    micro_BxK = jnp.asarray(micro_BxK, jnp.float32)
    if micro_BxK.shape != (batch, 3):
      raise ValueError(f"micro_BxK must be [B={batch}, 3] (fps, height, width), got {micro_BxK.shape}")
    return micro_BxK

  def global_tokens(self, x_t_BxNxFxhxwxc, t_BxNxF, text_tokens, text_mask, *, axis_name=None, micro_BxK=None):
    """[B, G, Dv] from the noisy video, or None when the VIN is off."""
    if self.vin is None:
      return None
    return self.vin(x_t_BxNxFxhxwxc, t_BxNxF, video_time(t_BxNxF, axis_name), text_tokens, text_mask,
                    axis_name=axis_name, micro_BxK=self.micro(micro_BxK, x_t_BxNxFxhxwxc.shape))

  def __call__(self, x_t_BxNxFxhxwxc, t_BxNxF, text, *, context_frames: int, drop_text_B=None,
               axis_name=None, global_tokens=None, use_global: bool = True, full: bool | None = None,
               micro_BxK=None, mask: masking.MaskRequest | None = None, drop_global_B=None):
    """Predictions for every frame of every window.

    Args:
      x_t: noisy latent video, chunk-major [B, N, F, h, w, c] (the local chunks when sharded).
      t: per-frame diffusion time in [0, 1], [B, N, F]; 0 marks a clean (given) frame.
      text: byte tokens [B, Lt] or precomputed embeddings [B, Lt, E].
      context_frames: L, the context from the previous chunk (recomputed in the window, or read from the
        neighbour's keys and values with chunking.context_mode="shared").
      global_tokens: overrides the VIN's output (e.g. another video's tokens, to test they are used).
      use_global: False runs the windows without global tokens (`no_global` sampling of a VIN model).
      drop_global_B: [B] bool, rows whose windows do not see the global tokens (their keys are masked: the
        same predictions as use_global=False for those rows); vin.drop_prob in training, the unconditional
        branch of sampling.global_guidance_scale. Both beyond the paper.
      full: overrides model.window_mode at call time (`full` sampling of a chunked model).
      micro_BxK: model.micro_conditions (STIV): per-row (fps, height, width in pixels) [B, 3]; None takes
        sampling.fps (0: data.fps) and the pixel size of x_t for every row. Ignored by a model without them.
      mask: masked training (train.mask_ratio, `model/masking.py`): each window's DiT sees only its kept
        tokens (the VIN still sees the whole video). Training only.
    Returns:
      preds [B, N, L + F, h, w, c] (L = 0 in full and shared modes) and window validity [N, L + F]; with
      `mask` also the loss weight of every latent position [B, N, L + F, h, w] (0 where the token was dropped,
      tokens / kept elsewhere; dropped positions' preds are not the DiT's).
    """
    b, n, f = x_t_BxNxFxhxwxc.shape[:3]
    full = self.full if full is None else full
    micro = self.micro(micro_BxK, x_t_BxNxFxhxwxc.shape)
    text_tokens, text_mask = self.encode_text(text, drop_text_B)
    if full or not use_global:
      global_tokens = None
    elif global_tokens is None:
      global_tokens = self.global_tokens(x_t_BxNxFxhxwxc, t_BxNxF, text_tokens, text_mask,
                                         axis_name=axis_name, micro_BxK=micro)
    t_video = video_time(t_BxNxF, axis_name)
    if full:
      if axis_name is not None and jax.lax.axis_size(axis_name) > 1:
        # n is the local chunk count here: "one window" would silently stop at each device's chunks.
        raise ValueError(f"full mode (one window over the whole video) cannot split the video over "
                         f"{jax.lax.axis_size(axis_name)} {axis_name!r} devices; use mesh.chunk=1")
      x_t_BxNxFxhxwxc = x_t_BxNxFxhxwxc.reshape(b, 1, n * f, *x_t_BxNxFxhxwxc.shape[3:])
      t_BxNxF = t_BxNxF.reshape(b, 1, n * f)
    L = self.context_frames(context_frames, full)
    win, valid = windows.build_windows(x_t_BxNxFxhxwxc, L, axis_name=axis_name)
    t_win, _ = windows.build_windows(t_BxNxF, L, axis_name=axis_name)
    nw, w = win.shape[1], win.shape[2]
    shared = self.shared_context and not full
    context_patches = (context_frames if shared else L) // self.temporal_patch

    def local_context(tokens_per_patch, time_patches, head_dim, rope_theta):
      return LocalContext("shared" if shared else "recompute", context_patches, tokens_per_patch, time_patches,
                          nw, self.stop_gradient_context, axis_name, head_dim, rope_theta)

    def per_window(a):  # [B, ...] -> [B * Nw, ...]
      return jnp.repeat(a, nw, axis=0) if a is not None else None

    keep, kept_context, weights = None, 0, None
    if mask is not None:
      if shared:
        raise ValueError("masked training (train.mask_ratio > 0) needs chunking.context_mode='recompute'")
      gh, gw = self.dit.grid(*x_t_BxNxFxhxwxc.shape[3:5])
      s_tok = gh * gw
      ctx_tokens, own_tokens = L // self.temporal_patch * s_tok, (w - L) // self.temporal_patch * s_tok
      keep = masking.sample_keep(mask.rng, b, nw, ctx_tokens, own_tokens, mask.ratio, row_offset=mask.row_offset,
                                 window_offset=halo.chunk_offset(nw, axis_name)).reshape(b * nw, -1)
      kept_context = masking.kept(ctx_tokens, mask.ratio)
      weights = self.token_grid(masking.token_weights(keep, ctx_tokens, own_tokens, mask.ratio), w, (gh, gw))
      weights = weights.reshape(b, nw, *weights.shape[1:])                          # [B, Nw, W, h, w]
    preds = self.dit(win.reshape(b * nw, w, *win.shape[3:]), t_win.reshape(b * nw, w),
                     jnp.broadcast_to(valid[None], (b, nw, w)).reshape(b * nw, w), per_window(global_tokens),
                     per_window(t_video), per_window(text_tokens), per_window(text_mask), local_context,
                     micro_BxK=per_window(micro), keep_BxK=keep, kept_context_tokens=kept_context,
                     drop_global_B=per_window(drop_global_B))
    preds = preds.reshape(b, nw, w, *preds.shape[2:])
    if self.x0_output:
      preds = self.schedule.target_from_x0(win, preds, t_win, self.x0_min_sigma)
    elif self.input_skip:
      skip = self.schedule.input_skip(t_win, self.sigma_data)
      preds = preds + Schedule.expand(skip, win) * win
    if full:
      preds = preds.reshape(b, n, f, *preds.shape[3:])
      valid = jnp.ones((n, f), bool)
      if weights is not None:
        weights = weights.reshape(b, n, f, *weights.shape[3:])
    if mask is not None:
      return preds, valid, weights
    return preds, valid

  def token_grid(self, per_token_BxT, window_frames: int, grid: tuple[int, int]):
    """Per-token values [B, Tp * S] (the DiT's token order, S = rows x columns of `grid`) -> per latent
    position [B, W, h, w]."""
    gh, gw = grid
    p, pt = self.dit.patch_size, self.temporal_patch
    x = per_token_BxT.reshape(-1, window_frames // pt, gh, gw)
    return jnp.repeat(jnp.repeat(jnp.repeat(x, pt, axis=1), p, axis=2), p, axis=3)


def video_time(t_BxNxF, axis_name=None):
  """The video's diffusion time [B]: the largest per-frame time (clean frames have 0)."""
  t = jnp.max(t_BxNxF, axis=(1, 2))
  return jax.lax.pmax(jax.lax.stop_gradient(t), axis_name) if axis_name is not None else t
