"""All metrics of a video, of a set of video files, or of a sampling run's output directory.

Metric keys (per video; means over videos are taken for every numeric scalar key):
  num_frames, height, width;
  mawe_dis, warp_error, flow_score, occluded_fraction   (evaluation/mawe.py, lower MAWE is better);
  scene_cuts                                            (evaluation/scene_cuts.py, lower is better);
  subject_consistency_proxy, background_consistency_proxy (evaluation/consistency.py, higher is better);
  with chunk_frames: the keys of `attribute_consistency` (evaluation/attributes.py) and
    frame_diff_within_chunk, frame_diff_across_boundary, frame_diff_boundary_ratio (below);
  with true_colors: true_color_match, true_color_set_match.
fps only labels scene-detection timecodes (its defaults count frames), so no metric depends on it.
"""
import glob
import json
import math
import os

import numpy as np

from vin_jax.data.sprites import COLOR_NAMES
from vin_jax.evaluation.attributes import attribute_consistency
from vin_jax.evaluation.consistency import background_consistency_proxy, subject_consistency_proxy
from vin_jax.evaluation.mawe import mawe_components
from vin_jax.evaluation.scene_cuts import count_scene_cuts
from vin_jax.video_io import atomic_output, check_frames, read_video

DEFAULT_FPS = 8.0
SAMPLES_FILE = "samples.npz"
SAMPLE_INFO_FILE = "sample_info.json"


def frame_difference_stats(frames, chunk_frames):
  """Mean absolute change between consecutive frames, inside chunks vs across chunk boundaries.

  frames: uint8 [T, H, W, 3]; chunk_frames: pixel frames per chunk. The pair (t-1, t) straddles a
  boundary when t % chunk_frames == 0. Values are mean |f_t - f_{t-1}| over pixels and channels, in
  [0, 255], averaged over pairs. Returns {"within_chunk", "across_boundary", "boundary_ratio"
  (= across / within)}; a value is None when there is no such pair (or within_chunk is 0 for the ratio).
  A seam between independently generated chunks shows up as boundary_ratio well above 1.
  """
  frames = check_frames(frames)
  if int(chunk_frames) != chunk_frames or chunk_frames < 1:
    raise ValueError(f"chunk_frames={chunk_frames!r} must be a positive integer")
  diffs = np.abs(np.diff(frames.astype(np.float32), axis=0)).mean(axis=(1, 2, 3))  # [T - 1], pair (t-1, t)
  t = np.arange(1, len(frames))
  at_boundary = t % int(chunk_frames) == 0
  within = float(diffs[~at_boundary].mean()) if (~at_boundary).any() else None
  across = float(diffs[at_boundary].mean()) if at_boundary.any() else None
  ratio = across / within if (across is not None and within) else None
  return {"within_chunk": within, "across_boundary": across, "boundary_ratio": ratio}


def evaluate_video(frames, *, fps, chunk_frames=None, true_colors=None):
  """All metrics of one video: uint8 [T, H, W, 3], T >= 2. Returns a flat dict (see module docstring)."""
  frames = check_frames(frames)
  result = {"num_frames": int(frames.shape[0]), "height": int(frames.shape[1]),
            "width": int(frames.shape[2])}
  parts = mawe_components(frames)
  result["mawe_dis"] = parts.pop("mawe")
  result.update(parts)
  result["scene_cuts"] = count_scene_cuts(frames, fps)
  result["subject_consistency_proxy"] = subject_consistency_proxy(frames)
  result["background_consistency_proxy"] = background_consistency_proxy(frames)
  if chunk_frames is not None:
    result.update(attribute_consistency(frames, chunk_frames, true_colors=true_colors))
    for key, value in frame_difference_stats(frames, chunk_frames).items():
      result[f"frame_diff_{key}"] = value
  elif true_colors is not None:
    raise ValueError("true_colors needs chunk_frames (attributes are compared per chunk)")
  return result


def summarize(per_video):
  """Mean over videos of every numeric scalar metric (None values skipped). per_video: list of dicts."""
  values = {}
  for metrics in per_video:
    for key, value in metrics.items():
      if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
        if math.isfinite(float(value)):
          values.setdefault(key, []).append(float(value))
  return {key: float(np.mean(vals)) for key, vals in values.items()}


def evaluate_paths(glob_pattern, *, fps=None, chunk_frames=None):
  """Metrics of every video file matching `glob_pattern` (recursive `**` allowed; MP4, GIF, ...).

  fps: used when a file does not state its own (default DEFAULT_FPS).
  Returns {"videos": {path: metrics}, "mean": {metric: mean over videos}, "num_videos": n}.
  """
  paths = sorted(p for p in glob.glob(os.fspath(glob_pattern), recursive=True) if os.path.isfile(p))
  if not paths:
    raise FileNotFoundError(f"no video files match {glob_pattern!r}")
  per_video = {}
  for path in paths:
    frames, file_fps = read_video(path, return_fps=True)
    per_video[path] = evaluate_video(frames, fps=file_fps or fps or DEFAULT_FPS, chunk_frames=chunk_frames)
  return {"videos": per_video, "mean": summarize(per_video.values()), "num_videos": len(paths)}


def _color_names(entry, where):
  """A sample's true colours (names or indices into COLOR_NAMES) -> list of names."""
  if isinstance(entry, (str, int)):
    entry = [entry]
  names = []
  for item in entry:
    if isinstance(item, str):
      names.append(item)
    elif isinstance(item, int) and 0 <= item < len(COLOR_NAMES):
      names.append(COLOR_NAMES[item])
    else:
      raise ValueError(f"{where}: true colour {item!r} is neither a colour name nor an index < {len(COLOR_NAMES)}")
  return names


def evaluate_samples_dir(outdir, *, out_json=None):
  """Metrics of the videos a sampling run wrote to `outdir`.

  Reads OUTDIR/samples.npz (key "frames": uint8 [num, T, H, W, 3]) and, if present,
  OUTDIR/sample_info.json, whose optional keys are "fps", "chunk_pixel_frames" (enables the per-chunk
  metrics) and "true_colors" (one list of colour names or indices per video). Writes the result to
  `out_json` atomically if given.
  Returns {"videos": [metrics per video], "mean": {...}, "num_videos", "fps", "chunk_frames"}.
  """
  samples_path = os.path.join(outdir, SAMPLES_FILE)
  if not os.path.isfile(samples_path):
    raise FileNotFoundError(f"no {SAMPLES_FILE} in sample directory {outdir!r}")
  with np.load(samples_path) as data:
    if "frames" not in data:
      raise KeyError(f"{samples_path!r} has no 'frames' array (keys: {sorted(data.keys())})")
    videos = data["frames"]
  if videos.dtype != np.uint8 or videos.ndim != 5 or videos.shape[-1] != 3:
    raise ValueError(f"'frames' in {samples_path!r} must be uint8 [num, T, H, W, 3], "
                     f"got {videos.dtype} {videos.shape}")
  info_path = os.path.join(outdir, SAMPLE_INFO_FILE)
  info = {}
  if os.path.isfile(info_path):
    with open(info_path) as f:
      info = json.load(f)
  fps = float(info.get("fps") or DEFAULT_FPS)
  chunk_frames = info.get("chunk_pixel_frames")
  true_colors = info.get("true_colors")
  if true_colors is not None and len(true_colors) != len(videos):
    raise ValueError(f"{info_path!r}: {len(true_colors)} true_colors entries for {len(videos)} videos")
  per_video = []
  for index, video in enumerate(videos):
    colors = None
    if true_colors is not None:
      colors = _color_names(true_colors[index], f"{info_path} true_colors[{index}]")
    per_video.append(evaluate_video(video, fps=fps, chunk_frames=chunk_frames, true_colors=colors))
  result = {"videos": per_video, "mean": summarize(per_video), "num_videos": len(per_video), "fps": fps,
            "chunk_frames": chunk_frames}
  if out_json is not None:
    write_json_atomic(out_json, result)
  return result


def _jsonable(obj):
  """Numpy scalars/arrays -> Python; non-finite floats -> None (strict JSON has no NaN)."""
  if isinstance(obj, dict):
    return {str(key): _jsonable(value) for key, value in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_jsonable(value) for value in obj]
  if isinstance(obj, np.ndarray):
    return _jsonable(obj.tolist())
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if math.isfinite(float(obj)) else None
  return obj


def write_json_atomic(path, obj):
  """Writes `obj` as indented strict JSON to `path` via a temporary file and os.replace."""
  text = json.dumps(_jsonable(obj), indent=2, allow_nan=False)
  with atomic_output(path) as tmp_path:
    with open(tmp_path, "w") as f:
      f.write(text + "\n")
