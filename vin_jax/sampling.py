"""Loading a trained model for sampling, and `generate`: one entry for every sampling method.

Used by the CLI, the ablation runner and the notebooks.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from vin_jax import autoencoder as autoencoder_lib
from vin_jax import checkpointing
from vin_jax import config as config_lib
from vin_jax import train as train_lib
from vin_jax import video_io
from vin_jax.diffusion import sampler
from vin_jax.diffusion.schedules import Schedule
from vin_jax.model import ModelDef
from vin_jax.parallel import mesh as mesh_lib


def load_params(config, workdir: str | pathlib.Path, *, use_ema: bool = True, step: int | None = None, mesh=None):
  """(ModelDef, params, step) from the latest (or given) checkpoint in WORKDIR.

  With `mesh`, the state is restored directly onto that mesh's shardings, whatever mesh wrote it.
  """
  model_def = ModelDef(config)
  weights = "ema" if use_ema else "params"
  abstract = {weights: model_def.abstract_params(), "step": jax.ShapeDtypeStruct((), jnp.int32)}
  if mesh is not None:
    shardings = mesh_lib.state_shardings(abstract, mesh)
  else:
    shardings = jax.tree.map(lambda _: jax.sharding.SingleDeviceSharding(jax.devices()[0]), abstract)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)
  directory = pathlib.Path(workdir) / "checkpoints"
  manager = checkpointing.Manager(directory, async_save=False)
  try:
    if manager.latest_step() is None and step is None:
      raise FileNotFoundError(f"no checkpoint in {directory}: train first (python -m vin_jax.main train ...)")
    state = manager.restore_partial(step, abstract)  # the weights only: no optimizer state is read
  finally:
    manager.close()
  return model_def, state[weights], int(state["step"])


def load_exported(config, path: str | pathlib.Path, *, mesh=None):
  """(ModelDef, params, step) from an export directory (`python -m vin_jax.main export`) for `config`'s model.

  The sibling of `load_params` for exports: safetensors only, every tensor name, shape and checksum checked
  (`vin_jax.export.ExportError` names the one at fault). With `mesh`, placed on its parameter shardings.
  """
  from vin_jax.export import reader
  return reader.load_exported(config, path, mesh=mesh)


SHARDABLE_METHODS = ("vin", "no_global")


def generate(config, model_def: ModelDef, params, text, rng, *, method: str = "vin", num_chunks: int | None = None,
             clean_x0=None, clean_mask=None, progress: Callable | None = None, jit: bool = True, mesh=None):
  """Latent videos [B, N, F, h, w, c] for `text` (byte tokens [B, Lt] or embeddings [B, Lt, E]).

  `method` is one of vin | full | no_global | autoregressive | freenoise; all run on `model_def`'s backbone.
  Latent frames where `clean_mask` [B, N, F] is True are given: held at `clean_x0` [B, N, F, h, w, c]
  (e.g. a clean first frame; the autoregressive method allows them in the first chunk only).
  With a sharded `mesh`, vin and no_global run with the chunks split over 'chunk' and rows over the batch
  axes, given frames included (the other methods have no parallel chunk axis and run unsharded). A model
  with model.window_mode="full" runs `sampler.supported_methods(config)` only.
  """
  num_chunks = num_chunks or config.sampling.num_chunks
  params = model_def.compute_params(params)   # bf16 matmul weights of a bf16 model: half the memory, same output
  settings = sampler.SamplerSettings.for_method(config, method)
  schedule = Schedule.from_config(config)
  h, w, c = config_lib.latent_shape(config, config_lib.sample_size(config))   # sampling.resolution
  shape = (text.shape[0], num_chunks, config.chunking.chunk_frames, h, w, c)
  if (clean_x0 is None) != (clean_mask is None):
    raise ValueError("give both clean_x0 and clean_mask, or neither")
  if clean_mask is None:
    clean_x0, clean_mask = jnp.zeros(shape, jnp.float32), jnp.zeros(shape[:3], bool)
    settings = dataclasses.replace(settings, image_guidance_scale=1.0)   # nothing given: no image branch
  elif tuple(clean_mask.shape) != shape[:3] or tuple(clean_x0.shape) != shape:
    raise ValueError(f"clean_x0 {tuple(clean_x0.shape)} / clean_mask {tuple(clean_mask.shape)} must be "
                     f"{shape} / {shape[:3]}")

  rescheduled = config.sampling.noise == "rescheduled"
  if method == "freenoise":
    noise = _noise(rng, shape, True)
    fn = _compiled(("freenoise", model_def, settings, schedule.key(), progress, jit), lambda: (
        lambda p, z, tx, x0, mask: sampler.sample_freenoise(model_def.bind(p), schedule, settings, z, tx, clean_x0=x0,
                                                            clean_mask_BxNxF=mask, progress=progress)))
    return fn(params, noise, text, clean_x0, clean_mask)
  if mesh_lib.is_sharded(mesh) and method in SHARDABLE_METHODS:
    replicated, rows, video = (mesh_lib.named(mesh, spec) for spec in (mesh_lib.REPLICATED, mesh_lib.ROWS,
                                                                        mesh_lib.VIDEO))
    fn = _compiled(("sharded", model_def, settings, schedule.key(), progress, mesh, rescheduled, jit), lambda: (
        _sharded_sampler(model_def, schedule, settings, mesh, progress, rescheduled=rescheduled)),
        in_shardings=(replicated, rows, replicated, video, video), out_shardings=video)
    return fn(params, _global(text, rows), rng, _global(clean_x0, video), _global(clean_mask, video))
  noise = _noise(rng, shape, rescheduled)
  chain = _compiled(("parallel", model_def, settings, schedule.key(), progress, jit), lambda: (
      lambda p, z, tx, x0, mask: sampler.sample_parallel(model_def.bind(p), schedule, settings, z, tx, clean_x0=x0,
                                                         clean_mask_BxNxF=mask, progress=progress)))
  if method == "autoregressive":
    return sampler.sample_autoregressive(lambda z, tx, x0, mask: chain(params, z, tx, x0, mask), noise, text,
                                         clean_x0=clean_x0, clean_mask_BxNxF=clean_mask)
  return chain(params, noise, text, clean_x0, clean_mask)


_CACHE: dict = {}


def _compiled(key, make, **jit_options):
  """One jitted sampler per (kind, model, settings, schedule, progress, [mesh, ...,] jit): repeated calls
  (ablations, several seeds, the sharded sampler too) reuse the compiled program instead of tracing a fresh
  function each time. `jit_options` (shardings) go to jax.jit."""
  if key not in _CACHE:
    fn = make()
    _CACHE[key] = jax.jit(fn, **jit_options) if key[-1] else fn
  return _CACHE[key]


@functools.partial(jax.jit, static_argnums=(1, 2))
def _noise(rng, shape, rescheduled: bool):
  return sampler.initial_noise(rng, shape, rescheduled=rescheduled)


def _sharded_sampler(model_def, schedule, settings, mesh, progress, *, rescheduled):
  """`sample_parallel` under shard_map, unjitted: (params, text [B, Lt], rng, clean_x0 [B, N, F, h, w, c],
  clean_mask [B, N, F]) -> latents [B, N, F, h, w, c], sharded like the video. Each device draws the noise of
  its own (row, chunk) slots and holds its own given frames, so the result equals the single-device sample."""

  def per_device(params, text, rng, clean_x0, clean_mask):
    rows, chunks = clean_mask.shape[:2]
    noise = sampler.initial_noise(rng, clean_x0.shape, row_offset=mesh_lib.batch_row_offset(rows),
                                  chunk_offset=jax.lax.axis_index(mesh_lib.CHUNK) * chunks,
                                  rescheduled=rescheduled)
    return sampler.sample_parallel(model_def.bind(params), schedule, settings, noise, text, clean_x0=clean_x0,
                                   clean_mask_BxNxF=clean_mask, axis_name=mesh_lib.CHUNK, progress=progress)

  # check_vma=False: no gradient is taken here, and Pallas kernels (model.attention=splash) declare no
  # varying-axes types for their outputs, which a checked shard_map requires.
  return jax.shard_map(per_device, mesh=mesh, out_specs=mesh_lib.VIDEO,
                       in_specs=(mesh_lib.REPLICATED, mesh_lib.ROWS, mesh_lib.REPLICATED, mesh_lib.VIDEO,
                                 mesh_lib.VIDEO), check_vma=False)


def _global(value, sharding):
  """A host value, the same on every process (text, given frames) -> one global array with `sharding`."""
  if isinstance(value, jax.Array) and (value.sharding == sharding or not value.is_fully_addressable):
    return value  # already global: jit reshards it if needed
  host = np.asarray(value)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def validation_inputs(config, data_dir, num: int, *, first_frame: bool = False):
  """Prompts (and what else is known) of the first `num` validation videos; the data set is built if needed.

  Returns (captions [num], first latent frames [num, h, w, c] if `first_frame` else None, true colour names
  per video [num][sprites] for the sprite data set else None). Videos repeat if the split is smaller. First
  frames are rescaled (cover and centre-crop) to sampling.resolution when it differs from the stored size.
  """
  from vin_jax.data import builder
  from vin_jax.data.sprites import COLOR_NAMES
  builder.build_dataset(config, str(data_dir))
  source = builder.data_source(config, str(data_dir), "validation")
  examples = [source[i % len(source)] for i in range(num)]
  captions = [e["caption"].decode() if isinstance(e["caption"], bytes) else str(e["caption"]) for e in examples]
  true_colors = None
  if config.data.name == "sprites" and "colors" in examples[0]:   # precomputed latents keep no colours
    true_colors = [[COLOR_NAMES[int(c)] for c in np.asarray(e["colors"])] for e in examples]
  first = None
  size = config_lib.sample_size(config)
  if first_frame and config.data.get("latents", False):   # precomputed: raw latents, normalised here
    if size != (config.data.height, config.data.width):
      raise config_lib.ConfigError(f"sampling.resolution={size}: the precomputed latents' first frames are "
                                   f"{config.data.height}x{config.data.width} and cannot be rescaled")
    ae = config.autoencoder
    first = np.stack([(np.asarray(e["latents"][0]) - ae.shift) * ae.scale for e in examples]).astype(np.float32)
  elif first_frame:
    ae = autoencoder_lib.make_autoencoder(config)
    t = config_lib.pixel_frames_of(config, 1)   # tf frames, or the one frame of a causal VAE's first latent
    pixels = np.stack([video_io.resize_frames(np.asarray(e["frames"][:t]), *size) for e in examples])
    pixels = pixels.astype(np.float32) / 127.5 - 1.0
    first = np.asarray(ae.encode(pixels))[:, 0]
  return captions, first, true_colors


def frames_condition(config, latents_BxKxhxwxc, positions, num_chunks: int):
  """(clean_x0 [B, N, F, h, w, c], clean_mask [B, N, F]) that give `generate` latent frame k of the input at
  video frame positions[k] (an index into the N * F latent frames, chunk-major); the rest is generated."""
  latents = jnp.asarray(latents_BxKxhxwxc, jnp.float32)
  b, f = latents.shape[0], config.chunking.chunk_frames
  positions = np.asarray(positions, np.int64)
  total = num_chunks * f
  if positions.shape != latents.shape[1:2] or positions.min(initial=0) < 0 or positions.max(initial=0) >= total:
    raise ValueError(f"{latents.shape[1]} given latent frames at positions {positions.tolist()}: a video of "
                     f"{num_chunks} chunks has latent frames 0..{total - 1}")
  frame_shape = tuple(config_lib.latent_shape(config, config_lib.sample_size(config)))
  clean_x0 = jnp.zeros((b, total) + frame_shape, jnp.float32).at[:, positions].set(latents)
  clean_mask = jnp.zeros((b, total), bool).at[:, positions].set(True)
  return clean_x0.reshape(b, num_chunks, f, *frame_shape), clean_mask.reshape(b, num_chunks, f)


def first_frame_condition(config, first_BxHxWxC, num_chunks: int):
  """(clean_x0 [B, N, F, h, w, c], clean_mask [B, N, F]) that give `generate` the first latent frame."""
  return frames_condition(config, jnp.asarray(first_BxHxWxC)[:, None], [0], num_chunks)


def encode_frames(config, frames_TxHxWx3):
  """uint8 pixel frames [T, H, W, 3] -> latents [t, h, w, c] (t = config.latent_frames_of(config, T))."""
  ae = autoencoder_lib.make_autoencoder(config)
  return np.asarray(ae.encode(np.asarray(frames_TxHxWx3, np.uint8)[None]))[0]


def image_latent(config, image_HxWx3):
  """The first latent frame of a video that starts with this uint8 image (repeated over the pixel frames the
  first latent frame stands for: tf, or 1 for a causal VAE): [h, w, c]."""
  repeats = config_lib.pixel_frames_of(config, 1)
  return encode_frames(config, np.repeat(np.asarray(image_HxWx3)[None], repeats, axis=0))[0]


def prediction_condition(config, frames_TxHxWx3, condition_frames: int, num_samples: int, num_chunks: int):
  """Video prediction: the first `condition_frames` latent frames of the given pixel frames (at data.fps),
  given clean in every sample; the rest of the `num_chunks`-chunk video is generated."""
  k = int(condition_frames)
  total = num_chunks * config.chunking.chunk_frames
  if not 0 < k < total:
    raise ValueError(f"--condition_frames={k} must be between 1 and {total - 1} (the video's latent frames - 1)")
  needed = config_lib.pixel_frames_of(config, k)
  if len(frames_TxHxWx3) < needed:
    raise ValueError(f"--condition_frames={k}: the condition video has {len(frames_TxHxWx3)} frames at data.fps="
                     f"{config.data.fps:g}, {k} latent frames need {needed}")
  latents = encode_frames(config, frames_TxHxWx3[:needed])
  return frames_condition(config, np.repeat(latents[None], num_samples, axis=0), np.arange(k), num_chunks)


def interpolation_condition(config, frames_TxHxWx3, num_samples: int, num_chunks: int):
  """Frame interpolation (STIV's temporal upsampler): the given frames' latents at the even latent frames of a
  `num_chunks`-chunk video, the odd ones generated; the video has twice the given frames' rate. Needs a
  per-frame autoencoder (temporal_factor 1) and takes the first N * F / 2 given frames."""
  if config_lib.is_causal(config) or float(config.autoencoder.temporal_factor) != 1.0:
    raise config_lib.ConfigError(f"--interpolate doubles latent frames one for one: it needs a per-frame "
                                 f"autoencoder (autoencoder.temporal_factor=1), not autoencoder.kind="
                                 f"{config.autoencoder.kind!r} with temporal_factor={config.autoencoder.temporal_factor}")
  total = num_chunks * config.chunking.chunk_frames
  if total % 2:
    raise ValueError(f"--interpolate: a video of {num_chunks} chunks of {config.chunking.chunk_frames} frames has "
                     "an odd number of latent frames; pass an even --num_chunks")
  given = total // 2
  if len(frames_TxHxWx3) < given:
    raise ValueError(f"--interpolate: {num_chunks} chunks interpolate {given} frames, the video has "
                     f"{len(frames_TxHxWx3)} at data.fps / 2 = {config.data.fps / 2:g}")
  latents = encode_frames(config, frames_TxHxWx3[:given])
  return frames_condition(config, np.repeat(latents[None], num_samples, axis=0), np.arange(given) * 2, num_chunks)


def decode_to_uint8(config, latents_BxNxFxhxwxc):
  """Chunk-major latents -> uint8 frames [B, T, H, W, 3]."""
  ae = autoencoder_lib.make_autoencoder(config)
  b, n, f = latents_BxNxFxhxwxc.shape[:3]
  pixels = ae.decode(latents_BxNxFxhxwxc.reshape(b, n * f, *latents_BxNxFxhxwxc.shape[3:]))
  return autoencoder_lib.to_uint8(pixels)
