"""The VIN training objective.

One diffusion time t per video (or per chunk for some rows, diffusion.per_chunk_t_prob). x_t and the targets
are cut into windows by the same function as the model input; each window is scored on its own F frames plus
`context_loss_weight` times its L context frames (against the previous chunk's targets). Window 0's context,
and frames given clean (t = 0), score nothing. The loss is summed over chunks and averaged over videos.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from vin_jax.diffusion import randomness
from vin_jax.model import masking, windows
from vin_jax.parallel import halo

MASK_STREAM = 0x6D61736B   # "mask": folded into the step's rng for the masked-training draws
CHUNK_T_STREAM = 0x63687474  # "chtt": the per-chunk noise-level draws (diffusion.per_chunk_t_prob)
GLOBAL_DROP_STREAM = 0x67647270  # "gdrp": the rows whose windows see no global tokens (vin.drop_prob)


def training_times(rng, schedule, config, b: int, n: int, *, row_offset=0, chunk_offset=0):
  """[B, N] diffusion times: one t per video (the paper), or, for a diffusion.per_chunk_t_prob fraction of
  the rows, an independent t for every chunk (beyond the paper). Every draw is keyed by global row and chunk
  indices, so a sharded run draws what one device does."""
  t_B = jax.vmap(lambda k: schedule.sample_t(k, ()))(randomness.row_keys(rng, b, row_offset))
  t_BxN = jnp.broadcast_to(t_B[:, None], (b, n))
  prob = float(config.diffusion.get("per_chunk_t_prob", 0.0))
  if prob > 0:
    # Their own stream (a fold, not a split): the video-level draws stay those of a run without the option.
    r_rows, r_chunks = jax.random.split(jax.random.fold_in(rng, CHUNK_T_STREAM))
    keys = randomness.chunk_keys(r_chunks, b, n, row_offset, chunk_offset)
    per_chunk = jax.vmap(jax.vmap(lambda k: schedule.sample_t(k, ())))(keys)
    independent = randomness.row_uniform(r_rows, b, row_offset) < prob
    t_BxN = jnp.where(independent[:, None], per_chunk, t_BxN)
  return t_BxN


def global_token_dropout(rng, config, b: int, row_offset=0):
  """[B] bool, the rows whose windows see no global tokens (vin.drop_prob, beyond the paper: it trains the
  unconditional branch of sampling.global_guidance_scale), or None when the option is off. Its own stream
  (a fold, not a split), keyed by global row: the other draws stay those of a run without it."""
  prob = float(config.vin.get("drop_prob", 0.0))
  if prob <= 0 or not config.vin.enabled:
    return None
  return randomness.row_uniform(jax.random.fold_in(rng, GLOBAL_DROP_STREAM), b, row_offset) < prob


def clean_frame_mask(rng, b: int, n: int, f: int, config, *, row_offset=0, chunk_offset=0):
  """[B, N, F] bool: frames given clean. STIV image conditioning (first latent frame, with condition
  dropout), STIV's interpolation training (every `diffusion.clean_every`-th latent frame, same dropout)
  and, for the autoregressive baseline, a whole first chunk given clean as context."""
  d = config.diffusion
  r_first, r_drop, r_ctx = jax.random.split(rng, 3)
  kept = randomness.row_uniform(r_drop, b, row_offset) >= d.first_frame_drop_prob       # condition not dropped
  give_first = (randomness.row_uniform(r_first, b, row_offset) < d.first_frame_cond_prob) & kept
  chunk_index = chunk_offset + jnp.arange(n)
  first_frame = (chunk_index[:, None] == 0) & (jnp.arange(f)[None, :] == 0)          # [N, F]
  mask = give_first[:, None, None] & first_frame[None]
  every = int(d.get("clean_every", 0))
  if every:
    frame_index = chunk_index[:, None] * f + jnp.arange(f)[None, :]                   # [N, F], in the video
    mask = mask | (kept[:, None, None] & (frame_index % every == 0)[None])
  if d.clean_context_prob > 0:
    # The whole first chunk becomes clean context for the next one (a 1-chunk video then scores nothing).
    clean_ctx = randomness.row_uniform(r_ctx, b, row_offset) < d.clean_context_prob
    mask = mask | (clean_ctx[:, None, None] & (chunk_index[None, :, None] == 0))
  return mask


def diffusion_loss(model, schedule, config, x0_BxNxFxhxwxc, text, rng, *, axis_name=None, row_offset=0,
                   mask_ratio: float | None = None, micro_BxK=None):
  """Sums over this device's videos and chunks (dict of scalars); `summarize` turns them into metrics.

  `axis_name` is the chunk mesh axis inside shard_map; `row_offset` the global index of the first row.
  The differentiable loss is sums["loss"] / global batch size.
  `mask_ratio` (default train.mask_ratio; MaskDiT/STIV masked training, `model/masking.py`): each window's
  DiT sees only the kept tokens, and only they are scored, weighted by tokens / kept (the unmasked scale).
  `micro_BxK` [B, 3]: each row's (fps, height, width) micro-conditions (model.micro_conditions; the pipeline's
  "micro"); None: the model's default.
  """
  mask_ratio = float(config.train.get("mask_ratio", 0.0) if mask_ratio is None else mask_ratio)
  b, n, f = x0_BxNxFxhxwxc.shape[:3]
  chunk_offset = halo.chunk_offset(n, axis_name)
  r_t, r_noise, r_text, r_clean = jax.random.split(rng, 4)
  t_BxN = training_times(r_t, schedule, config, b, n, row_offset=row_offset, chunk_offset=chunk_offset)
  clean = clean_frame_mask(r_clean, b, n, f, config, row_offset=row_offset, chunk_offset=chunk_offset)
  t = jnp.where(clean, 0.0, t_BxN[:, :, None])
  noise = randomness.chunk_normal(r_noise, x0_BxNxFxhxwxc.shape, row_offset, chunk_offset)
  x_t = schedule.add_noise(x0_BxNxFxhxwxc, noise, t)
  target = schedule.target(x0_BxNxFxhxwxc, noise, t)
  drop_text = randomness.row_uniform(r_text, b, row_offset) < config.text.drop_prob
  drop_global = global_token_dropout(rng, config, b, row_offset)

  L = config.chunking.context_frames
  if mask_ratio > 0:
    # Its own stream (a fold, not a split): the other draws stay those of an unmasked run.
    mask = masking.MaskRequest(jax.random.fold_in(rng, MASK_STREAM), mask_ratio, row_offset)
    preds, valid, weight_BxNxWxhxw = model(x_t, t, text, context_frames=L, drop_text_B=drop_text,
                                           axis_name=axis_name, mask=mask, micro_BxK=micro_BxK,
                                           drop_global_B=drop_global)
  else:
    preds, valid = model(x_t, t, text, context_frames=L, drop_text_B=drop_text, axis_name=axis_name,
                         micro_BxK=micro_BxK, drop_global_B=drop_global)
  L = model.context_frames(L)
  target_win, _ = windows.build_windows(target, L, axis_name=axis_name)
  t_win, _ = windows.build_windows(t, L, axis_name=axis_name)
  sq = jnp.square(preds.astype(jnp.float32) - target_win)
  if mask_ratio > 0:   # dropped positions score nothing (where, not a product: their preds are not the DiT's)
    sq = jnp.where(weight_BxNxWxhxw[..., None] > 0, sq * weight_BxNxWxhxw[..., None], 0.0)
  mse_BxNxW = jnp.mean(sq, axis=(3, 4, 5))
  is_context = jnp.arange(preds.shape[2]) < L
  frame_weight = jnp.where(is_context, config.diffusion.context_loss_weight, 1.0)[None] * valid  # [N, W]
  weight = frame_weight[None] * (t_win > 0)
  per_video = jnp.sum(weight * mse_BxNxW, axis=(1, 2)) / f
  own = (~is_context)[None, None] & (t_win > 0)
  ctx = is_context[None, None] & valid[None] & (t_win > 0)
  sums = {
      "loss": jnp.sum(per_video),
      "own_mse_sum": jnp.sum(jnp.where(own, mse_BxNxW, 0.0)),
      "own_count": jnp.sum(own).astype(jnp.float32),
      "context_mse_sum": jnp.sum(jnp.where(ctx, mse_BxNxW, 0.0)),
      "context_count": jnp.sum(ctx).astype(jnp.float32),
  }
  return sums


def summarize(sums, global_batch: int):
  """Sums (already added over devices) -> {loss, own_mse, context_mse}."""
  return {
      "loss": sums["loss"] / global_batch,
      "own_mse": sums["own_mse_sum"] / jnp.maximum(sums["own_count"], 1.0),
      "context_mse": sums["context_mse_sum"] / jnp.maximum(sums["context_count"], 1.0),
  }
