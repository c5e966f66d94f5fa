"""The `sample` and `evaluate` commands: file IO around `vin_jax.sampling` and `vin_jax.evaluation`."""
from __future__ import annotations

import json
import os
import pathlib
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from vin_jax import config as config_lib
from vin_jax import sampling, video_io
from vin_jax.diffusion import sampler
from vin_jax.parallel import mesh as mesh_lib
from vin_jax.text import conditioning

SCALE = 8  # nearest-neighbour upscaling of the tiny videos for viewing


class InputError(ValueError):
  """A sampling input (--image, --condition_video, --interpolate and their frame counts) that cannot be used."""


def sample_command(config, workdir: str, *, out: str | None, num_chunks: int | None, method: str | None,
                   seed: int, prompt: str | None, first_frame: bool = False, params_dir: str | None = None,
                   image: str | None = None, condition_video: str | None = None, condition_frames: int | None = None,
                   interpolate: str | None = None) -> dict:
  """Samples `sampling.num_samples` videos and writes mp4/gif per sample, a contact sheet, samples.npz and
  sample_info.json into `out`. Returns the info dict. The weights are WORKDIR's latest checkpoint, or the
  export at `params_dir` (`--params`; then `workdir` only locates the data set, and may be None).

  Without `prompt` the prompts are the validation split's first captions. At most one of these gives frames,
  held clean (and guided with sampling.image_guidance_scale): `first_frame`, each video the first frame of its
  validation video; `image`, an image file as every video's first frame (image-to-video); `condition_video`
  with `condition_frames`, that video's first latent frames (video prediction); `interpolate`, a video read at
  data.fps / 2 in the even latent frames (frame interpolation; written at data.fps, twice its rate).
  """
  if not out:
    print("error: sample needs --out=OUTDIR", file=sys.stderr)
    sys.exit(2)
  given = [name for name, value in (("--first_frame", first_frame), ("--image", image),
                                    ("--condition_video", condition_video), ("--interpolate", interpolate)) if value]
  if len(given) > 1:
    raise InputError(f"{' and '.join(given)}: give frames one way at a time")
  if (condition_video is None) != (condition_frames is None):
    raise InputError("--condition_video and --condition_frames go together (video prediction)")
  if method is None:
    method = sampler.default_method(config)
    if method != config.sampling.method:
      print(f"note: model.window_mode={config.model.window_mode!r} has no chunk windows for sampling.method="
            f"{config.sampling.method!r}; sampling with --method={method}", flush=True)
  elif method not in sampler.supported_methods(config):
    raise config_lib.ConfigError(f"--method={method}: a model with model.window_mode={config.model.window_mode!r} "
                                 f"runs one window over the whole video; pass --method=full (or one of "
                                 f"{sampler.supported_methods(config)})")
  num_chunks = num_chunks or config.sampling.num_chunks
  if num_chunks % config.mesh.chunk:
    raise config_lib.ConfigError(f"num_chunks={num_chunks} must be divisible by mesh.chunk={config.mesh.chunk}")
  mesh = mesh_lib.make_mesh(config)
  sharded = mesh_lib.is_sharded(mesh)
  num = config.sampling.num_samples
  prompt = prompt if prompt is not None else (config.sampling.prompt or None)
  true_colors = first = None
  if prompt is None or first_frame:
    captions, first, true_colors = sampling.validation_inputs(config, config_lib.resolve_data_dir(config, workdir),
                                                              num, first_frame=first_frame)
  prompts = [prompt] * num if prompt is not None else captions
  text = conditioning.encode_captions(config, prompts)   # byte tokens or T5 embeddings
  clean_x0 = clean_mask = None
  if first is not None:
    clean_x0, clean_mask = sampling.first_frame_condition(config, first, num_chunks)
  elif given:
    clean_x0, clean_mask = _given_frames(config, num_chunks, num, image=image, condition_video=condition_video,
                                         condition_frames=condition_frames, interpolate=interpolate)

  if params_dir:
    model_def, params, step = sampling.load_exported(config, params_dir, mesh=mesh if sharded else None)
  else:
    model_def, params, step = sampling.load_params(config, workdir, use_ema=config.sampling.use_ema,
                                                   mesh=mesh if sharded else None)
  steps_total = config.sampling.num_steps * (num_chunks if method == "autoregressive" else 1)
  main_process = jax.process_index() == 0
  bar = tqdm(total=steps_total, desc=f"sample ({method}, {num_chunks} chunks)", dynamic_ncols=True,
             disable=not main_process)

  def progress(i):  # called by every device under shard_map: move the bar to the furthest step seen
    done = int(i) + 1 + (bar.n // config.sampling.num_steps) * config.sampling.num_steps * (method == "autoregressive")
    bar.update(max(0, done - bar.n))

  start = time.time()
  latents = sampling.generate(config, model_def, params, text, jax.random.key(seed), method=method,
                              num_chunks=num_chunks, clean_x0=clean_x0, clean_mask=clean_mask, progress=progress,
                              mesh=mesh)
  latents = jax.block_until_ready(latents)
  wall = time.time() - start
  bar.close()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    latents = multihost_utils.process_allgather(latents, tiled=True)
  if not main_process:
    return {}
  info = {
      "method": method, "num_chunks": num_chunks, "num_samples": num, "seed": seed, "prompts": prompts,
      "checkpoint_step": step, "workdir": str(workdir), "wall_time_sec": wall, "devices": jax.device_count(),
      "mesh": dict(mesh.shape), "first_frame_given": first is not None or image is not None,
      "given": {"image": image, "condition_video": condition_video, "condition_frames": condition_frames,
                "interpolate": interpolate, "latent_frames": int(clean_mask[0].sum()) if clean_mask is not None else 0},
  }
  if params_dir:
    info.update(params=str(params_dir), workdir=str(workdir) if workdir else None)
  if true_colors is not None and prompt is None and (first is not None or config.data.caption_detail == 2):
    # the videos' true colours are known to the sampler: given in the first frame or named in the caption
    info["true_colors"] = true_colors
  out_dir = write_sample_dir(config, out, latents, info)   # --interpolate: data.fps is twice the input's rate
  print(f"wrote {num} videos of {info['frames_shape'][1]} frames ({num_chunks} chunks, {method}) to {out_dir} "
        f"in {wall:.1f}s; contact sheet: {out_dir / 'contact_sheet.png'}")
  return info


def _given_frames(config, num_chunks: int, num: int, *, image, condition_video, condition_frames, interpolate):
  """(clean_x0, clean_mask) for --image, --condition_video or --interpolate; InputError for what cannot be used."""
  (h, w), fps = config_lib.sample_size(config), config.data.fps   # given frames come at sampling.resolution
  try:
    if image:
      latent = sampling.image_latent(config, video_io.read_image(image, h, w))
      return sampling.first_frame_condition(config, np.repeat(latent[None], num, axis=0), num_chunks)
    if condition_video:
      frames = video_io.read_video_resized(condition_video, h, w, fps)
      return sampling.prediction_condition(config, frames, condition_frames, num, num_chunks)
    if not config.diffusion.get("clean_every", 0) == 2:
      print(f"note: --interpolate on a model trained with diffusion.clean_every="
            f"{config.diffusion.get('clean_every', 0)} (interpolation models have 2)", flush=True)
    frames = video_io.read_video_resized(interpolate, h, w, fps / 2)
    return sampling.interpolation_condition(config, frames, num, num_chunks)
  except config_lib.ConfigError:
    raise
  except (FileNotFoundError, ValueError) as error:
    raise InputError(str(error)) from error


def write_sample_dir(config, out, latents_BxNxFxhxwxc, info: dict) -> pathlib.Path:
  """Decodes the latents and writes a sample directory: one mp4 and gif per video, contact_sheet.png,
  samples.npz (frames uint8 [num, T, H, W, 3], latents) and sample_info.json (`info` plus the sampling
  settings of `config`), every file atomically. Returns the directory; adds the settings to `info`."""
  latents = np.asarray(latents_BxNxFxhxwxc)
  frames = np.asarray(sampling.decode_to_uint8(config, latents))
  out_dir = pathlib.Path(out)
  out_dir.mkdir(parents=True, exist_ok=True)
  fps = config.data.fps
  chunk_pixels = config_lib.pixel_frames_per_chunk(config)
  for i, video in enumerate(frames):
    video_io.write_mp4(out_dir / f"sample_{i:02d}.mp4", video, fps, scale=SCALE)
    video_io.write_gif(out_dir / f"sample_{i:02d}.gif", video, fps, scale=SCALE // 2)
  video_io.contact_sheet(out_dir / "contact_sheet.png", frames, num_frames_shown=min(frames.shape[1], 16),
                         scale=SCALE // 2, chunk_frames=chunk_pixels)
  with video_io.atomic_output(out_dir / "samples.npz") as tmp:
    with open(tmp, "wb") as f:
      np.savez_compressed(f, frames=frames, latents=latents)
  info.update({
      "use_ema": bool(config.sampling.use_ema), "num_steps": config.sampling.num_steps,
      "fusion": config.sampling.fusion, "t_alpha": config.sampling.t_alpha, "noise": config.sampling.noise,
      "context_frames": config.chunking.inference_context_frames, "guidance_scale": config.sampling.guidance_scale,
      "chunk_latent_frames": config.chunking.chunk_frames, "chunk_pixel_frames": chunk_pixels, "fps": fps,
      "frames_shape": list(frames.shape),
  })
  with video_io.atomic_output(out_dir / "sample_info.json") as tmp:
    pathlib.Path(tmp).write_text(json.dumps(info, indent=2))
  return out_dir


def evaluate_command(*, videos: str | None, samples: str | None, out: str | None) -> dict:
  from vin_jax.evaluation import report
  if bool(videos) == bool(samples):
    print("error: evaluate needs exactly one of --videos='GLOB' or --samples=OUTDIR", file=sys.stderr)
    sys.exit(2)
  if samples:
    result = report.evaluate_samples_dir(samples)
  else:
    result = report.evaluate_paths(videos)
  out = out or (os.path.join(samples, "metrics.json") if samples else "metrics.json")
  report.write_json_atomic(out, result)
  print(json.dumps(result.get("mean", {}), indent=2))
  print(f"wrote {out}")
  return result
