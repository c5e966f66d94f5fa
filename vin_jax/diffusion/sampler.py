"""Samplers: all chunks in parallel with token fusion (VIN, no_global, full), and the baselines
(autoregressive chunk after chunk, FreeNoise sliding windows), all on the same denoiser.

Latents are chunk-major [B, N, F, h, w, c]. Steps s count down from num_steps to 1.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vin_jax.diffusion import fusion, randomness
from vin_jax.diffusion.schedules import Schedule

METHODS = ("vin", "full", "autoregressive", "no_global", "freenoise")
# A model trained with model.window_mode="full" has one window over the whole video and no chunk windows:
# it runs `full`, and the baselines that call it on whole (sub-)videos.
FULL_MODEL_METHODS = ("full", "autoregressive", "freenoise")


def supported_methods(config) -> tuple[str, ...]:
  """The sampling methods the model of `config` can run."""
  return FULL_MODEL_METHODS if config.model.window_mode == "full" else METHODS


def default_method(config) -> str:
  """sampling.method, or `full` for a full-attention model (whose default `vin` has no windows to run)."""
  method = config.sampling.method
  return method if method in supported_methods(config) else "full"


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  num_steps: int
  context_frames: int            # L at inference
  fusion: str = "early"
  t_alpha: int = 0
  guidance_scale: float = 1.0
  image_guidance_scale: float = 1.0   # STIV's joint image-text guidance; 1: the image is always given
  cfg_renorm: bool = False
  global_guidance_scale: float = 1.0  # guidance on the global tokens (beyond the paper); 1: off
  global_guidance_fraction: float = 1.0  # ... on the first ceil(fraction * num_steps) steps only (beyond the paper)
  use_global: bool = True        # False: the `no_global` method on any model
  full: bool | None = None       # True: one window over the video (`full`); None: as the model was built
  freenoise_stride: int = 4

  @classmethod
  def from_config(cls, config, **overrides) -> "SamplerSettings":
    s = config.sampling
    settings = cls(num_steps=s.num_steps, context_frames=config.chunking.inference_context_frames,
                   fusion=s.fusion, t_alpha=s.t_alpha, guidance_scale=s.guidance_scale, cfg_renorm=s.cfg_renorm,
                   freenoise_stride=s.freenoise_stride,
                   image_guidance_scale=float(s.get("image_guidance_scale", 1.0)),
                   global_guidance_scale=float(s.get("global_guidance_scale", 1.0)),
                   global_guidance_fraction=float(s.get("global_guidance_fraction", 1.0)))
    return dataclasses.replace(settings, **overrides)

  @classmethod
  def for_method(cls, config, method: str) -> "SamplerSettings":
    if method not in METHODS:
      raise ValueError(f"method={method!r} must be one of {METHODS}")
    if method not in supported_methods(config):
      raise ValueError(f"method={method!r} needs chunk windows, but the model has model.window_mode="
                       f"{config.model.window_mode!r} (one window over the whole video): sample it with one of "
                       f"{supported_methods(config)}, e.g. --method=full")
    if method == "no_global":
      settings = cls.from_config(config, use_global=False)
    elif method == "full":
      settings = cls.from_config(config, full=True, use_global=False)
    elif method == "autoregressive":  # a full model sees each (previous chunk, chunk) pair as one window
      settings = cls.from_config(config, fusion="none", full=True if config.model.window_mode == "full" else None)
    else:
      settings = cls.from_config(config)
    # Global-token guidance is VIN's: the baselines are sampled as the paper does.
    return settings if method == "vin" else dataclasses.replace(settings, global_guidance_scale=1.0)


def guides_global_tokens(settings: SamplerSettings) -> bool:
  """Global-token guidance (sampling.global_guidance_scale, beyond the paper) runs for windows that see them."""
  return settings.global_guidance_scale != 1.0 and settings.use_global and not settings.full


def global_guidance_steps(settings: SamplerSettings) -> int:
  """How many of the first sampling steps are guided on the global tokens (sampling.global_guidance_fraction)."""
  return math.ceil(settings.global_guidance_fraction * settings.num_steps - 1e-9)   # 0.2 * 25 is 5.000000000000001


def guided_prediction(model, x_BxNxFx___, t_BxNxF, text, settings: SamplerSettings, *, axis_name=None, step=None):
  """Window predictions [B, N, L+F, ...] with classifier-free guidance in one batched call.

  Text guidance: p = p(-T) + s (p(T) - p(-T)). Global-token guidance (`guides_global_tokens`): the same
  with and without the global tokens, then p(-G) + s_global (p(G) - p(-G)); up to four branches. `step`
  (0-based, may be traced) is the sampling step: from step `global_guidance_steps(settings)` on, s_global = 1."""
  kwargs = dict(context_frames=settings.context_frames, axis_name=axis_name, use_global=settings.use_global,
                full=settings.full)
  b = x_BxNxFx___.shape[0]
  text_branches = (False, True) if settings.guidance_scale != 1.0 else (False,)
  global_branches = (False, True) if guides_global_tokens(settings) else (False,)
  branches = [(drop_t, drop_g) for drop_g in global_branches for drop_t in text_branches]
  if len(branches) == 1:
    preds, _ = model(x_BxNxFx___, t_BxNxF, text, **kwargs)
    return preds
  k = len(branches)
  repeat = lambda a: jnp.concatenate([a] * k, axis=0)
  per_row = lambda flags: jnp.repeat(jnp.asarray(flags, bool), b)
  drop_global = per_row([g for _, g in branches]) if len(global_branches) > 1 else None
  preds, _ = model(repeat(x_BxNxFx___), repeat(t_BxNxF), repeat(text), drop_text_B=per_row([t for t, _ in branches]),
                   drop_global_B=drop_global, **kwargs)
  preds = preds.reshape(k, b, *preds.shape[1:])

  def text_guided(first: int):   # the branch (or text-guided pair) starting at `first`
    if len(text_branches) == 1:
      return preds[first]
    cond, uncond = preds[first], preds[first + 1]
    return uncond + settings.guidance_scale * (cond - uncond)

  guided = text_guided(0)
  if len(global_branches) > 1:
    without = text_guided(len(text_branches))
    scale = settings.global_guidance_scale
    if step is not None:
      scale = jnp.where(step < global_guidance_steps(settings), scale, 1.0)
    guided = without + scale * (guided - without)
  return _renormed(guided, preds[0], settings)


def _renormed(guided, cond, settings: SamplerSettings):
  if settings.cfg_renorm:  # STIV: rescale each frame's guided prediction to the conditional one's norm
    norm = lambda a: jnp.sqrt(jnp.sum(jnp.square(a), axis=(3, 4, 5), keepdims=True) + 1e-12)
    guided = guided * (norm(cond) / norm(guided))
  return guided


def uses_joint_guidance(settings: SamplerSettings, clean_mask_BxNxF) -> bool:
  """STIV's joint image-text guidance runs when frames are given and image_guidance_scale != 1."""
  return clean_mask_BxNxF is not None and settings.image_guidance_scale != 1.0


def joint_guided_prediction(model, x_given, t_given, x_free, t_free, text, settings: SamplerSettings, *,
                            axis_name=None):
  """STIV's joint image-text guidance: three branches in one batched call,
      eps = eps(-, -) + s_image (eps(I, -) - eps(-, -)) + s_text (eps(I, T) - eps(I, -)),
  where I is the given frames (`x_given` holds them clean at t = 0) and "-" drops them: that branch sees
  `x_free`, whose given frames are noisy at the step's t (`t_free`), as a model trained with the condition
  dropped does. Returns window predictions [B, N, L+F, ...]: (guided, the image-free branch's), the latter for
  moving the given frames' free trajectory (`sample_parallel`)."""
  kwargs = dict(context_frames=settings.context_frames, axis_name=axis_name, use_global=settings.use_global,
                full=settings.full)
  b = x_given.shape[0]
  triple = lambda given, free: jnp.concatenate([given, given, free], axis=0)
  drop = jnp.concatenate([jnp.zeros((b,), bool), jnp.ones((2 * b,), bool)])
  preds, _ = model(triple(x_given, x_free), triple(t_given, t_free), triple(text, text), drop_text_B=drop,
                   **kwargs)
  cond, image_only, uncond = preds[:b], preds[b:2 * b], preds[2 * b:]
  guided = uncond + settings.image_guidance_scale * (image_only - uncond) + settings.guidance_scale * (
      cond - image_only)
  return _renormed(guided, cond, settings), uncond


def sample_parallel(model, schedule: Schedule, settings: SamplerSettings, noise_BxNxFx___, text, *,
                    clean_x0=None, clean_mask_BxNxF=None, axis_name=None, progress: Callable | None = None):
  """All chunks denoised together: one `lax.scan` over the steps; the carry is the noisy video.

  Each step: global tokens from the current noisy video, predictions for all windows, fusion of the
  overlaps if the step is in the fusion range, then the scheduler step. Frames in `clean_mask` are held
  at `clean_x0` with t = 0 (image-to-video, prediction, interpolation, the autoregressive baseline); with
  `settings.image_guidance_scale != 1` they are also dropped in a third branch (`joint_guided_prediction`).
  `progress(i)` is called from the device after step i (a progress bar). The samplers are deterministic
  given the initial noise (DDIM with eta = 0, Euler), so the carry is the noisy video alone.
  Returns the sampled latents [B, N, F, h, w, c].
  """
  ts = schedule.timesteps(settings.num_steps)
  b, n, f = noise_BxNxFx___.shape[:3]
  joint = uses_joint_guidance(settings, clean_mask_BxNxF)
  if clean_mask_BxNxF is None:
    clean_mask_BxNxF = jnp.zeros((b, n, f), bool)
    clean_x0 = jnp.zeros_like(noise_BxNxFx___)
  hold = clean_mask_BxNxF.reshape(clean_mask_BxNxF.shape + (1,) * (noise_BxNxFx___.ndim - 3))
  context = model.context_frames(settings.context_frames, settings.full)   # frames recomputed per window

  def body(x, i):
    step = settings.num_steps - i
    t = jnp.where(clean_mask_BxNxF, 0.0, ts[i])
    t_next = jnp.where(clean_mask_BxNxF, 0.0, ts[i + 1])
    active = fusion.fusion_active(step, settings.num_steps, settings.t_alpha, settings.fusion)
    fuse = lambda p: fusion.fuse_windows(p, context, active, axis_name)
    if joint:
      # The carry keeps the given frames' free (noisy) trajectory for the image-free branch; they are
      # replaced by the given latents at the end.
      t_free, t_free_next = jnp.full_like(t, ts[i]), jnp.full_like(t, ts[i + 1])
      guided, free = joint_guided_prediction(model, jnp.where(hold, clean_x0, x), t, x, t_free, text, settings,
                                             axis_name=axis_name)
      x = schedule.step(x, jnp.where(hold, fuse(free), fuse(guided)), t_free, t_free_next)
    else:
      x = jnp.where(hold, clean_x0, x)
      pred = fuse(guided_prediction(model, x, t, text, settings, axis_name=axis_name, step=i))
      x = jnp.where(hold, clean_x0, schedule.step(x, pred, t, t_next))
    if progress is not None:
      jax.debug.callback(progress, i)
    return x, None

  x, _ = jax.lax.scan(body, noise_BxNxFx___, jnp.arange(settings.num_steps))
  return jnp.where(hold, clean_x0, x)


_PERMUTATION_STREAM = 2 ** 32 - 1   # folded into the key like a row index that no batch reaches


def initial_noise(rng, shape_BxNxFx___, *, row_offset=0, chunk_offset=0, rescheduled: bool = False):
  """Starting noise [B, N, F, ...] keyed per (row, chunk), identical however rows and chunks are sharded.

  rescheduled=False: independent noise per chunk. True: FreeNoise's noise rescheduling (Qiu et al. 2024):
  chunk 0 keeps its noise and every later chunk starts from a random permutation of chunk 0's noise frames
  (the permutation keyed by the global chunk index), so distant windows start from correlated noise and
  tend to decide on the same content (`sampling.noise`).
  """
  if not rescheduled:
    return randomness.chunk_normal(rng, shape_BxNxFx___, row_offset, chunk_offset)
  b, n, f = shape_BxNxFx___[:3]
  first = randomness.chunk_normal(rng, (b, 1) + tuple(shape_BxNxFx___[2:]), row_offset, 0)[:, 0]   # [B, F, ...]
  perm_rng = jax.random.fold_in(rng, _PERMUTATION_STREAM)

  def order(chunk):
    shuffled = jax.random.permutation(jax.random.fold_in(perm_rng, chunk), f)
    return jnp.where(chunk == 0, jnp.arange(f), shuffled)

  perms = jax.vmap(order)(chunk_offset + jnp.arange(n))                               # [N, F]
  return first[:, perms]


def sample_autoregressive(chain: Callable, noise_BxNxFx___, text, *, clean_x0=None, clean_mask_BxNxF=None):
  """Chunk after chunk: chunk i is sampled as the second chunk of a 2-chunk video whose first chunk is
  chunk i-1's result, held clean (t = 0); its window context is therefore clean. N sequential chains.

  `chain(noise, text, clean_x0, clean_mask)` is a (jitted) `sample_parallel` with fusion 'none'.
  Frames of the first chunk in `clean_mask` (e.g. a given first frame) are held at `clean_x0`.
  """
  b, n, f = noise_BxNxFx___.shape[:3]
  if clean_mask_BxNxF is None:
    first_x0, first_mask = jnp.zeros_like(noise_BxNxFx___[:, :1]), jnp.zeros((b, 1, f), bool)
  else:
    if bool(jnp.any(clean_mask_BxNxF[:, 1:])):
      raise ValueError("the autoregressive sampler holds clean frames of the first chunk only")
    first_x0, first_mask = clean_x0[:, :1], clean_mask_BxNxF[:, :1]
  first = chain(noise_BxNxFx___[:, :1], text, first_x0, first_mask)
  chunks = [first[:, 0]]
  mask = jnp.zeros((b, 2, f), bool).at[:, 0].set(True)
  for i in range(1, n):
    pair_noise = jnp.stack([jnp.zeros_like(chunks[-1]), noise_BxNxFx___[:, i]], axis=1)
    pair_x0 = jnp.stack([chunks[-1], jnp.zeros_like(chunks[-1])], axis=1)
    pair = chain(pair_noise, text, pair_x0, mask)
    chunks.append(pair[:, 1])
  return jnp.stack(chunks, axis=1)


def freenoise_windows(num_frames: int, window: int, stride: int) -> np.ndarray:
  """Start frames of sliding windows covering [0, num_frames): every `stride`, the last one flush."""
  if not 0 < stride <= window:  # a longer stride leaves frames no window predicts (0 / 0 in the average)
    raise ValueError(f"sampling.freenoise_stride={stride} must be in [1, window={window}] latent frames")
  starts = list(range(0, num_frames - window + 1, stride))
  if starts[-1] != num_frames - window:
    starts.append(num_frames - window)
  return np.asarray(starts)


def sample_freenoise(model, schedule: Schedule, settings: SamplerSettings, noise_BxNxFx___, text, *,
                     clean_x0=None, clean_mask_BxNxF=None, progress: Callable | None = None):
  """Training-free long video from a one-chunk model: sliding windows of F frames (stride
  `freenoise_stride`), each denoised on its own (VIN over that window only), predictions averaged
  per frame, on FreeNoise-rescheduled noise (`initial_noise(..., rescheduled=True)`). Frames in
  `clean_mask` are held at `clean_x0` with t = 0, as in `sample_parallel`."""
  b, n, f = noise_BxNxFx___.shape[:3]
  frame_shape = noise_BxNxFx___.shape[3:]
  total = n * f
  if clean_mask_BxNxF is None:
    clean_mask_BxNxF = jnp.zeros((b, n, f), bool)
    clean_x0 = jnp.zeros_like(noise_BxNxFx___)
  clean_BxT = clean_mask_BxNxF.reshape(b, total)
  x0_BxTx___ = clean_x0.reshape(b, total, *frame_shape)
  hold = clean_BxT.reshape(clean_BxT.shape + (1,) * len(frame_shape))
  starts = freenoise_windows(total, f, settings.freenoise_stride)
  index = jnp.asarray(starts[:, None] + np.arange(f)[None])                    # [Nw, F]
  counts = jnp.zeros((total,)).at[index.reshape(-1)].add(1.0)
  ts = schedule.timesteps(settings.num_steps)
  one_chunk = dataclasses.replace(settings, context_frames=0, fusion="none")
  nw = len(starts)

  def body(x_BxTx___, i):
    x_BxTx___ = jnp.where(hold, x0_BxTx___, x_BxTx___)
    windows = x_BxTx___[:, index]                                              # [B, Nw, F, ...]
    as_videos = windows.reshape(b * nw, 1, f, *frame_shape)
    t_BxT = jnp.where(clean_BxT, 0.0, ts[i])
    t = t_BxT[:, index].reshape(b * nw, 1, f)
    preds = guided_prediction(model, as_videos, t, jnp.repeat(text, nw, axis=0), one_chunk)
    preds = preds.reshape(b, nw * f, *frame_shape)
    summed = jnp.zeros_like(x_BxTx___).at[:, index.reshape(-1)].add(preds)
    pred = summed / counts.reshape((1, total) + (1,) * len(frame_shape))
    if progress is not None:
      jax.debug.callback(progress, i)
    x_next = schedule.step(x_BxTx___, pred, t_BxT, jnp.where(clean_BxT, 0.0, ts[i + 1]))
    return jnp.where(hold, x0_BxTx___, x_next), None

  x, _ = jax.lax.scan(body, noise_BxNxFx___.reshape(b, total, *frame_shape), jnp.arange(settings.num_steps))
  return x.reshape(b, n, f, *frame_shape)
