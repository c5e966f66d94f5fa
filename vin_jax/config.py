"""Config loading, derived quantities and validation.

`validate(config)` runs before anything compiles and raises `ConfigError` naming the field and its value.
"""
from __future__ import annotations

import importlib.util
import math
import pathlib
from typing import Sequence

import ml_collections


class ConfigError(ValueError):
  """A config field has a value that cannot work; the message names the field."""


def load_config_file(path: str | pathlib.Path, arg: str | None = None) -> ml_collections.ConfigDict:
  """Loads `get_config(arg)` from a config file by path (variants load `base.py` this way)."""
  path = pathlib.Path(path)
  if not path.exists():
    raise ConfigError(f"config file {path} does not exist")
  spec = importlib.util.spec_from_file_location(f"vin_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def parse_variants(arg: str | None) -> dict[str, str | bool]:
  """'runlocal,steps=10' -> {'runlocal': True, 'steps': '10'}."""
  out: dict[str, str | bool] = {}
  for item in (arg or "").split(","):
    item = item.strip()
    if not item:
      continue
    key, sep, value = item.partition("=")
    out[key] = value if sep else True
  return out


# ----------------------------------------------------------------------------------------------
# Derived quantities (one place for each formula).

def keyframe_stride(config) -> int:
  """Latent frames between VIN keyframes: max(1, round(T_s * fps / temporal_factor))."""
  return max(1, round(config.chunking.keyframe_seconds * config.data.fps / config.autoencoder.temporal_factor))


def latent_shape(config, size: tuple[int, int] | None = None) -> tuple[int, int, int]:
  """(h, w, c) of one latent frame of pixel frames `size` = (height, width) (None: data.height x data.width)."""
  s = config.autoencoder.spatial_factor
  height, width = size or (config.data.height, config.data.width)
  return height // s, width // s, latent_channels(config)


def sample_size(config) -> tuple[int, int]:
  """The (height, width) in pixels that `sample` generates: sampling.resolution, else data.height x data.width."""
  size = tuple(int(x) for x in config.sampling.get("resolution", ()))
  return size or (int(config.data.height), int(config.data.width))


def latent_channels(config) -> int:
  ae = config.autoencoder
  if ae.kind == "patch":
    return 3 * ae.spatial_factor ** 2 * int(round(ae.temporal_factor))
  return ae.latent_channels


def pixel_frames_per_chunk(config) -> int:
  """Pixel frames a chunk of latent frames stands for (a causal VAE's first chunk has tf - 1 fewer)."""
  return int(round(config.chunking.chunk_frames * config.autoencoder.temporal_factor))


def is_causal(config) -> bool:
  """Whether the autoencoder is causal in time (wan_vae): its first latent frame holds one pixel frame."""
  return config.autoencoder.kind == "wan_vae"


def latent_frames_of(config, pixel_frames: int) -> float:
  """Latent frames of a video of `pixel_frames`: T / tf, or 1 + (T - 1) / tf for a causal VAE (not whole when
  the autoencoder cannot encode that length)."""
  tf = float(config.autoencoder.temporal_factor)
  return 1 + (pixel_frames - 1) / tf if is_causal(config) else pixel_frames / tf


def pixel_frames_of(config, latent_frames: int) -> int:
  """Pixel frames that `latent_frames` decode to: t tf, or 1 + (t - 1) tf for a causal VAE."""
  tf = float(config.autoencoder.temporal_factor)
  return int(round(1 + (latent_frames - 1) * tf if is_causal(config) else latent_frames * tf))


def fusion_steps(config) -> int:
  """How many sampling steps every fusion preset (but 'none') fuses."""
  return config.sampling.num_steps - config.sampling.t_alpha


# ----------------------------------------------------------------------------------------------

_CHOICES = {
    "model.window_mode": ("chunked", "full"),
    "model.dtype": ("float32", "bfloat16"),
    "model.attention": ("auto", "einsum", "blocked", "xla", "cudnn", "splash"),
    "model.remat": ("none", "full", "dots"),
    "model.attention_layout": ("joint", "factorised"),
    "model.global_tokens_in_dit": ("joint", "keys_values"),
    "autoencoder.kind": ("patch", "sd_vae", "wan_vae"),
    "text.encoder": ("bytes", "t5", "precomputed"),
    "autoencoder.dtype": ("float32", "bfloat16"),
    "diffusion.objective": ("eps", "v", "flow"),
    "diffusion.schedule": ("cosine", "linear"),
    "diffusion.t_sampling": ("default", "uniform", "logit_normal"),
    "diffusion.network_output": ("target", "x0"),
    "sampling.fusion": ("early", "mid", "late", "none"),
    "chunking.context_mode": ("recompute", "shared"),
    "sampling.method": ("vin", "full", "autoregressive", "no_global", "freenoise"),
    "sampling.noise": ("independent", "rescheduled"),
    "data.name": ("sprites", "video_folder"),
    "train.optimizer": ("adamw", "adafactor"),
}


# Fields a config.json saved before they existed lacks; validation and the loaders take their defaults.
_ADDED_LATER = ("chunking.context_mode", "autoencoder.dtype", "model.attention_layout",
                "model.global_tokens_in_dit")


def get_field(config, dotted: str):
  node = config
  for part in dotted.split("."):
    node = node[part]
  return node


def override(config, fields: dict):
  """Sets dotted fields in place, e.g. override(config, {"mesh.chunk": 4}); returns the config.

  Like --config.a.b=v on the command line: an unknown field raises, a value of the wrong type too.
  """
  for dotted, value in fields.items():
    *parents, leaf = dotted.split(".")
    node = get_field(config, ".".join(parents)) if parents else config
    node[leaf] = value
  return config


def validate(config, num_devices: int | None = None, *, purpose: str = "train") -> None:
  """Raises ConfigError on the first inconsistent setting. Cheap: no JAX computation.

  `purpose` ("train", "sample", "data", ...) decides which mesh checks apply: the training batch and
  buckets must split over the mesh only for training, the sampled videos only for sampling.
  """

  def fail(field, msg):
    raise ConfigError(f"{field}={get_field(config, field)!r}: {msg}")

  def positive(*fields):
    for f in fields:
      if not get_field(config, f) > 0:
        fail(f, "must be > 0")

  def probability(*fields):
    for f in fields:
      if not 0.0 <= get_field(config, f) <= 1.0:
        fail(f, "must be a probability in [0, 1]")

  for field, choices in _CHOICES.items():
    if field in _ADDED_LATER and field.split(".")[-1] not in config[field.split(".")[0]]:
      continue   # a config saved before the field existed (an export's config.json) means its default
    if get_field(config, field) not in choices:
      fail(field, f"must be one of {choices}")

  positive("model.width", "model.depth", "model.num_heads", "model.patch_size", "model.temporal_patch",
           "model.mlp_ratio", "chunking.chunk_frames", "chunking.keyframe_seconds",
           "autoencoder.spatial_factor", "autoencoder.temporal_factor", "text.max_length", "text.width",
           "text.num_heads", "sampling.num_steps", "sampling.num_chunks", "sampling.num_samples",
           "sampling.freenoise_stride", "data.num_examples", "data.num_frames", "data.height", "data.width",
           "data.fps", "data.batch_size", "data.sprite_size", "train.steps", "train.learning_rate",
           "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "mesh.data", "mesh.chunk",
           "mesh.fsdp", "vin.width", "vin.num_heads", "vin.mlp_ratio")
  if not isinstance(config.model.scan_layers, bool):
    fail("model.scan_layers", "must be True or False")
  if config.vin.num_global_tokens <= 0:
    fail("vin.num_global_tokens", "must be > 0 (turn the VIN off with vin.enabled=False)")
  if config.vin.processor_depth < 0:
    fail("vin.processor_depth", "must be >= 0")
  if config.text.depth < 0:
    fail("text.depth", "must be >= 0")
  if config.data.num_sprites < 0:
    fail("data.num_sprites", "must be >= 0")
  if not 0 <= config.data.get("hide_frames", 0) < config.data.num_frames:   # .get: exported configs predate it
    fail("data.hide_frames", f"must be in [0, data.num_frames={config.data.num_frames}) (frame 0 shows every "
         "sprite)")
  if config.data.caption_detail not in (0, 1, 2):
    fail("data.caption_detail", "must be 0 (count only), 1 (+ shapes) or 2 (+ colours)")
  probability("text.drop_prob", "diffusion.first_frame_cond_prob", "diffusion.first_frame_drop_prob",
              "diffusion.clean_context_prob", "train.ema_decay")
  if not 0.0 <= config.diffusion.get("per_chunk_t_prob", 0.0) <= 1.0:   # .get: added after configs were exported
    fail("diffusion.per_chunk_t_prob", "must be a probability in [0, 1]")
  if config.diffusion.network_output == "x0" and not 0 < config.diffusion.x0_min_sigma < 1:
    fail("diffusion.x0_min_sigma", "must be in (0, 1): the noise level below which an x0 output's target "
         "is no longer amplified")
  if config.diffusion.context_loss_weight < 0:
    fail("diffusion.context_loss_weight", "must be >= 0")
  # learning_rate_schedule decays over max(steps, 2) - max(warmup, 1) steps, which optax needs positive.
  if config.train.warmup_steps < 0 or max(config.train.warmup_steps, 1) >= max(config.train.steps, 2):
    fail("train.warmup_steps", f"must be >= 0 and shorter than training (train.steps={config.train.steps})")
  if config.train.grad_clip < 0:
    fail("train.grad_clip", "must be >= 0 (0 turns clipping off)")
  if "mask_ratio" in config.train:   # masked training (a config saved before it existed: off)
    if not 0.0 <= config.train.mask_ratio < 1.0:
      fail("train.mask_ratio", "must be in [0, 1): the fraction of each window's tokens dropped in training")
    if config.train.mask_ratio > 0 and config.chunking.get("context_mode", "recompute") != "recompute":
      fail("train.mask_ratio", "needs chunking.context_mode='recompute' (shared context reads the previous "
           "chunk's keys of tokens that masking drops)")
    if config.train.mask_ratio > 0 and config.model.get("attention_layout", "joint") != "joint":
      fail("train.mask_ratio", "needs model.attention_layout='joint': masked training keeps a random subset of "
           "tokens, which no longer forms the frames and positions the factorised attention runs along")
  if "unmask_finetune_steps" in config.train:
    u = config.train.unmask_finetune_steps
    if u != int(u) or not 0 <= u <= config.train.steps:
      fail("train.unmask_finetune_steps", f"must be a whole number in [0, train.steps={config.train.steps}]")
  if config.sampling.guidance_scale < 0:
    fail("sampling.guidance_scale", "must be >= 0")
  if config.sampling.get("image_guidance_scale", 1.0) < 0:
    fail("sampling.image_guidance_scale", "must be >= 0 (1: the given frames are not guided)")
  if not 0.0 <= config.vin.get("drop_prob", 0.0) < 1.0:
    fail("vin.drop_prob", "must be in [0, 1): the fraction of training videos whose windows see no global tokens")
  global_scale = config.sampling.get("global_guidance_scale", 1.0)
  if global_scale < 0:
    fail("sampling.global_guidance_scale", "must be >= 0 (1: off)")
  if global_scale != 1.0 and (not config.vin.enabled or config.model.window_mode == "full"):
    fail("sampling.global_guidance_scale", "guides the global tokens of a chunked VIN model, but this model has "
         f"vin.enabled={config.vin.enabled}, model.window_mode={config.model.window_mode!r}; leave it at 1")
  if not 0.0 < config.sampling.get("global_guidance_fraction", 1.0) <= 1.0:
    fail("sampling.global_guidance_fraction", "must be in (0, 1]: the fraction of the first sampling steps that "
         "sampling.global_guidance_scale guides (1: every step)")
  if global_scale != 1.0 and config.sampling.get("image_guidance_scale", 1.0) != 1.0:
    fail("sampling.global_guidance_scale", "cannot be combined with sampling.image_guidance_scale != 1 (STIV's "
         "joint guidance); set one of them to 1")
  clean_every = config.diffusion.get("clean_every", 0)
  if clean_every != int(clean_every) or clean_every < 0 or clean_every == 1:
    fail("diffusion.clean_every", "must be 0 (off) or a whole number >= 2 (2: interpolation training; 1 would "
         "give every frame clean and leave nothing to learn)")
  if clean_every and config.model.temporal_patch != 1:
    fail("diffusion.clean_every", f"needs model.temporal_patch=1: with {config.model.temporal_patch} latent frames "
         "per token, every token would mix a clean frame with noisy ones (configs/tiny.py:interpolate sets both)")

  for field in ("model.width", "vin.width", "text.width"):
    heads = {"model.width": "model.num_heads", "vin.width": "vin.num_heads", "text.width": "text.num_heads"}[field]
    if get_field(config, field) % get_field(config, heads):
      fail(field, f"must be divisible by {heads}={get_field(config, heads)}")
  if (config.model.width // config.model.num_heads) % 2:
    fail("model.num_heads", f"head dim model.width/num_heads={config.model.width // config.model.num_heads} "
         "must be even for RoPE")

  # Chunks, windows and temporal patches (all in latent frames).
  F, pt = config.chunking.chunk_frames, config.model.temporal_patch
  for field in ("chunking.context_frames", "chunking.inference_context_frames"):
    L = get_field(config, field)
    if L < 0:
      fail(field, "must be >= 0")
    if L > F:
      fail(field, f"a context longer than a chunk (chunking.chunk_frames={F}) is not allowed")
    if L % pt:
      fail(field, f"must be a multiple of model.temporal_patch={pt}")
  if F % pt:
    fail("chunking.chunk_frames", f"must be a multiple of model.temporal_patch={pt}")
  stride = keyframe_stride(config)
  if F % stride:
    fail("chunking.chunk_frames", f"must be divisible by the keyframe stride {stride} "
         f"(= round(keyframe_seconds * fps / temporal_factor))")

  # Resolution: pixels -> latents -> tokens.
  ae = config.autoencoder
  if ae.kind == "patch" and float(ae.temporal_factor) != int(ae.temporal_factor):
    fail("autoencoder.temporal_factor", "must be a whole number for the patch autoencoder")
  if ae.kind in ("sd_vae", "wan_vae"):
    if not ae.get("latent_channels", 0) > 0:
      fail("autoencoder.latent_channels", f"must be > 0 for autoencoder.kind={ae.kind!r} (4 for SD's VAE, 16 for "
           "Wan 2.1's)")
    if ae.kind == "sd_vae" and float(ae.temporal_factor) != 1.0:
      fail("autoencoder.temporal_factor", "must be 1: autoencoder.kind='sd_vae' encodes frame by frame")
    if ae.kind == "wan_vae" and float(ae.temporal_factor) not in (1.0, 2.0, 4.0, 8.0):
      fail("autoencoder.temporal_factor", "must be the converted Wan VAE's (4 for Wan 2.1)")
    if not ae.get("weights", "") and not (purpose == "train" and config.data.get("latents", False)):
      fail("autoencoder.weights", f"must name the `convert --kind={ae.kind}` output directory for "
           f"autoencoder.kind={ae.kind!r} (only training on precomputed latents, data.latents=True, runs without it)")
    if ae.get("frames_per_batch", 1) <= 0:
      fail("autoencoder.frames_per_batch", "must be > 0")
  if is_causal(config):
    stored = latent_frames_of(config, config.data.num_frames)
    if stored != int(stored) or stored < 1:
      fail("data.num_frames", f"must be 1 + {ae.temporal_factor:g} k pixel frames for the causal "
           f"autoencoder.kind={ae.kind!r}, got {config.data.num_frames}")
    if purpose == "train" and not config.data.get("latents", False):
      fail("data.latents", f"must be True to train with the causal autoencoder.kind={ae.kind!r}: run `precompute` "
           "first (each clip is encoded once from its first frame; training crops latent frames)")
  t = config.text
  if t.encoder in ("t5", "precomputed") and not t.precomputed_dim > 0:
    fail("text.precomputed_dim", f"must be > 0 (the T5 width) for text.encoder={t.encoder!r}")
  if purpose == "train" and t.encoder == "precomputed" and not config.data.get("latents", False):
    fail("text.encoder", "'precomputed' trains on the T5 embeddings that `precompute` stored: set "
         "data.latents=True (after precompute), or text.encoder='t5' to run T5 on the captions")
  if t.encoder == "t5" and not t.get("t5_dir", ""):
    fail("text.t5_dir", "must name the `convert --kind=t5` output directory for text.encoder='t5'")
  factor = ae.spatial_factor * config.model.patch_size
  for field in ("data.height", "data.width"):
    if get_field(config, field) % factor:
      fail(field, f"must be divisible by autoencoder.spatial_factor * model.patch_size = {factor}")
  sizes = [("data.resolutions", size) for size in config.data.get("resolutions", ())]
  if config.sampling.get("resolution", ()):
    sizes.append(("sampling.resolution", config.sampling.resolution))
  for field, size in sizes:
    if (not isinstance(size, (tuple, list)) or len(size) != 2
        or any(not isinstance(x, int) or x <= 0 or x % factor for x in size)):
      fail(field, f"{size!r} must be (height, width): positive pixel counts divisible by "
           f"autoencoder.spatial_factor * model.patch_size = {factor}")
  if config.data.get("resolutions", ()) and config.data.get("latents", False):
    fail("data.resolutions", "rescales pixel frames: precomputed latents (data.latents=True) have one size")
  chunk_pixels = F * ae.temporal_factor
  if abs(chunk_pixels - round(chunk_pixels)) > 1e-6:
    fail("chunking.chunk_frames", f"times autoencoder.temporal_factor={ae.temporal_factor} must be a whole "
         "number of pixel frames")

  # Data buckets.
  buckets: Sequence[int] = tuple(config.data.bucket_chunks)
  weights: Sequence[float] = tuple(config.data.bucket_weights)
  if not buckets or any(n <= 0 for n in buckets):
    fail("data.bucket_chunks", "must be a non-empty tuple of positive chunk counts")
  if len(weights) != len(buckets):
    fail("data.bucket_weights", f"must have one weight per bucket ({len(buckets)})")
  if any(w < 0 for w in weights) or sum(weights) <= 0:
    fail("data.bucket_weights", "must be non-negative and not all zero")
  longest = max(buckets) * config.chunking.chunk_frames
  if latent_frames_of(config, config.data.num_frames) < longest:
    fail("data.num_frames", f"must hold the longest bucket: {max(buckets)} chunks = {longest} latent frames = "
         f"{pixel_frames_of(config, longest)} pixel frames")
  strides = tuple(config.data.get("frame_strides", (1,)))   # (a config saved before it existed: (1,))
  if not strides or any(not isinstance(k, int) or k < 1 for k in strides):
    fail("data.frame_strides", f"must be a non-empty tuple of positive integers, got {strides}")
  if max(strides) > 1:
    stored = (latent_frames_of(config, config.data.num_frames) if config.data.get("latents", False)
              else config.data.num_frames)
    per_chunk = config.chunking.chunk_frames if config.data.get("latents", False) else pixel_frames_per_chunk(config)
    span = (max(buckets) * per_chunk - 1) * max(strides) + 1
    if stored < span:
      fail("data.num_frames", f"must hold the longest bucket at the largest of data.frame_strides={strides}: "
           f"{span} {'latent' if config.data.get('latents', False) else 'pixel'} frames, the data has {stored}")
    if config.data.get("latents", False) and config.autoencoder.temporal_factor != 1:
      fail("data.frame_strides", f"cannot subsample precomputed latents of a temporally compressing "
           f"autoencoder (autoencoder.temporal_factor={config.autoencoder.temporal_factor:g}): stride the pixel "
           "frames (data.latents=False) or precompute at each frame rate")
  if config.sampling.get("fps", 0.0) < 0:
    fail("sampling.fps", "must be >= 0 (0: data.fps)")
  if config.sampling.get("fps", 0.0) > 0 and not config.model.get("micro_conditions", False):
    fail("sampling.fps", "sets the fps micro-condition: it needs model.micro_conditions=True")
  if config.data.sprite_size > min(config.data.height, config.data.width):
    fail("data.sprite_size", "must fit in the frame")

  if config.data.name == "video_folder" and not config.data.video_dir:
    fail("data.video_dir", "must name a folder of videos when data.name='video_folder'")
  if config.data.name == "video_folder" and config.data.validation_clips < 1:
    fail("data.validation_clips", "must be >= 1: sample (without --prompt), evaluate and ablate read the "
         "validation split")
  if config.data.name == "video_folder":  # the data engine's (a config saved before these fields means defaults)
    from vin_jax.data import engine
    if not isinstance(config.data.get("split_scenes", True), bool):
      fail("data.split_scenes", "must be True or False")
    try:
      engine.check_settings(scene_threshold=config.data.get("scene_threshold", engine.DEFAULT_SCENE_THRESHOLD),
                            min_motion=config.data.get("min_motion", 0.0),
                            captions_file=config.data.get("captions_file", ""))
    except (ValueError, TypeError, OSError) as e:  # its messages name the field
      raise ConfigError(str(e)) from e

  # Sampling.
  s = config.sampling
  if config.chunking.get("context_mode", "recompute") == "shared":
    if s.fusion != "none":
      fail("sampling.fusion", f"{s.fusion!r} fuses recomputed context frames, but chunking.context_mode="
           "'shared' gives each frame one prediction: set sampling.fusion='none'")
    if config.model.window_mode == "full":
      fail("chunking.context_mode", "'shared' needs chunk windows; model.window_mode='full' has one window")
  if not 0 <= s.t_alpha <= s.num_steps:
    fail("sampling.t_alpha", f"the fusion range must lie inside the step range [0, num_steps={s.num_steps}]")
  if s.method == "freenoise" and s.freenoise_stride > F:
    fail("sampling.freenoise_stride", f"must be <= chunking.chunk_frames={F}")

  # Mesh.
  if purpose == "train" and config.model.window_mode == "full" and config.mesh.chunk > 1:
    fail("model.window_mode", f"one window over the whole video cannot be split over mesh.chunk="
         f"{config.mesh.chunk} devices: train a full-attention model with mesh.chunk=1 (rows over mesh.data)")
  batch_devices = config.mesh.data * config.mesh.fsdp
  if purpose == "train" and config.data.batch_size % batch_devices:
    fail("data.batch_size", f"must be divisible by mesh.data * mesh.fsdp = {batch_devices}")
  if purpose == "sample" and config.sampling.num_samples % batch_devices:
    fail("sampling.num_samples", f"must be divisible by mesh.data * mesh.fsdp = {batch_devices}")
  if num_devices is not None:
    product = config.mesh.data * config.mesh.chunk * config.mesh.fsdp
    if product != num_devices:
      fail("mesh.chunk", f"mesh.data * mesh.chunk * mesh.fsdp = {product} must equal the device count "
           f"{num_devices}")
  for n in buckets if purpose == "train" else ():
    if n % config.mesh.chunk:
      fail("data.bucket_chunks", f"bucket of {n} chunks is not divisible by mesh.chunk={config.mesh.chunk}")
  if purpose == "sample" and s.num_chunks % config.mesh.chunk:
    fail("sampling.num_chunks", f"must be divisible by mesh.chunk={config.mesh.chunk}")
  if not math.isfinite(config.train.learning_rate):
    fail("train.learning_rate", "must be finite")


def resolve_data_dir(config, workdir: str | None) -> str:
  """data.data_dir if set, else $TFDS_DATA_DIR, else WORKDIR/data."""
  import os
  if config.data.data_dir:
    return config.data.data_dir
  if os.environ.get("TFDS_DATA_DIR"):
    return os.environ["TFDS_DATA_DIR"]
  if not workdir:
    raise ConfigError("data.data_dir='' and TFDS_DATA_DIR is unset: say where the data set lives")
  return os.path.join(workdir, "data")
