"""Writing and reading videos: MP4 (bundled ffmpeg), GIF, PNG contact sheets.

Frames are uint8 [T, H, W, 3] RGB unless said otherwise. Every writer is atomic: it writes a temporary
file in the target directory and `os.replace`s it, so a crash or preemption never leaves a half-written
video behind (and an existing file is either the old or the new one).
"""
import contextlib
import os
import pathlib
import tempfile

import imageio_ffmpeg
import numpy as np
from PIL import Image

# H.264 in yuv420p needs even sizes; most players and imageio-ffmpeg prefer multiples of 16.
MACRO_BLOCK = 16
# Near-lossless H.264 so that metrics computed on a written MP4 stay close to the array's.
DEFAULT_CRF = 12
# Contact-sheet colours (RGB).
_SHEET_BACKGROUND = (255, 255, 255)
_CHUNK_BOUNDARY = (230, 30, 30)
_CHUNK_BANDS = ((40, 40, 40), (150, 150, 150))
_GIF_COMMENT_PREFIX = "vin_jax frame_ms="


@contextlib.contextmanager
def atomic_output(path):
  """Yields a temporary path next to `path` (same suffix); moves it onto `path` on success.

  The temporary file is removed if the body raises, so no partial output is ever left.
  """
  path = os.fspath(path)
  directory = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(directory):
    raise FileNotFoundError(f"output directory {directory!r} for {path!r} does not exist")
  base = os.path.basename(path)
  suffix = os.path.splitext(base)[1]
  fd, tmp_path = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{suffix}", dir=directory)
  os.close(fd)
  try:
    yield tmp_path
    os.chmod(tmp_path, 0o644)  # mkstemp makes it private; the output should read like any other file
    os.replace(tmp_path, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp_path)
    raise


def check_frames(frames, name="frames"):
  """Returns `frames` as a uint8 array [T, H, W, 3]; raises a ValueError naming the bad shape/dtype."""
  frames = np.asarray(frames)
  if frames.dtype != np.uint8:
    raise ValueError(f"{name} must be uint8 [T, H, W, 3], got dtype {frames.dtype}")
  if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
    raise ValueError(f"{name} must be uint8 [T, H, W, 3] with T, H, W >= 1, got shape {frames.shape}")
  return frames


def _check_scale(scale):
  if int(scale) != scale or scale < 1:
    raise ValueError(f"scale={scale!r} must be a positive integer")
  return int(scale)


def upscale_nearest(frames, scale):
  """[..., H, W, C] -> [..., H*scale, W*scale, C] by pixel repetition (keeps tiny sprites crisp)."""
  scale = _check_scale(scale)
  if scale == 1:
    return frames
  return np.repeat(np.repeat(frames, scale, axis=-3), scale, axis=-2)


def _pad_to_multiple(frames, multiple):
  """Pads [T, H, W, 3] at the bottom/right by edge replication so H and W are multiples of `multiple`."""
  _, height, width, _ = frames.shape
  pad_h = (-height) % multiple
  pad_w = (-width) % multiple
  if pad_h == 0 and pad_w == 0:
    return frames
  return np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")


def write_mp4(path, frames, fps, scale=1, crf=DEFAULT_CRF):
  """Writes uint8 [T, H, W, 3] as H.264 MP4 with the ffmpeg bundled by imageio-ffmpeg.

  Frames are upscaled by the integer `scale` (nearest neighbour), then padded at the bottom/right by edge
  replication to multiples of 16, so the file is [T, ceil(H*scale/16)*16, ceil(W*scale/16)*16, 3].
  """
  frames = check_frames(frames)
  if not fps > 0:
    raise ValueError(f"fps={fps!r} must be positive (writing {path!r})")
  frames = _pad_to_multiple(upscale_nearest(frames, scale), MACRO_BLOCK)
  _, height, width, _ = frames.shape
  with atomic_output(path) as tmp_path:
    writer = imageio_ffmpeg.write_frames(
        tmp_path, (width, height), fps=float(fps), codec="libx264", pix_fmt_in="rgb24",
        pix_fmt_out="yuv420p", quality=None, macro_block_size=MACRO_BLOCK,
        output_params=["-crf", str(int(crf))], ffmpeg_log_level="error")
    writer.send(None)  # start the generator
    try:
      for frame in frames:
        writer.send(np.ascontiguousarray(frame))
    finally:
      writer.close()


def write_gif(path, frames, fps, scale=1):
  """Writes uint8 [T, H, W, 3] as a looping GIF (Pillow), upscaled by the integer `scale`.

  GIF delays are whole centiseconds, so the stored frame rate is approximate. Pillow merges identical
  consecutive frames into one longer frame; the nominal frame delay is stored in the GIF comment so that
  `read_video` restores all T frames.
  """
  frames = check_frames(frames)
  if not fps > 0:
    raise ValueError(f"fps={fps!r} must be positive (writing {path!r})")
  frames = upscale_nearest(frames, scale)
  images = [Image.fromarray(frame) for frame in frames]
  duration_ms = max(10, int(round(1000.0 / fps / 10.0)) * 10)
  with atomic_output(path) as tmp_path:
    images[0].save(tmp_path, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration_ms, loop=0, optimize=False, disposal=1,
                   comment=f"{_GIF_COMMENT_PREFIX}{duration_ms}")


def shown_frame_indices(num_frames, num_frames_shown):
  """Evenly spaced frame indices in [0, num_frames - 1], first and last included, no repeats."""
  count = max(1, min(int(num_frames_shown), num_frames))
  return np.unique(np.round(np.linspace(0, num_frames - 1, count)).astype(int))


def contact_sheet_size(num_videos, num_columns, height, width, scale=1, chunk_frames=None, gap=2):
  """(sheet_height, sheet_width) in pixels of the PNG written by `contact_sheet`."""
  band = gap if chunk_frames else 0
  tile_h = height * scale + band
  tile_w = width * scale
  return (num_videos * tile_h + (num_videos + 1) * gap, num_columns * tile_w + (num_columns + 1) * gap)


def contact_sheet(path, videos, num_frames_shown=8, scale=1, chunk_frames=None, gap=2):
  """Writes a PNG grid: one row per video, `num_frames_shown` evenly spaced frames per row.

  videos: uint8 [num, T, H, W, 3]. Tiles are upscaled by `scale` and separated by `gap` white pixels.
  With `chunk_frames` (pixel frames per chunk), each tile gets a `gap`-pixel band above it whose shade
  alternates with the chunk index, and the separator between two shown frames from different chunks is
  red. Returns the sheet's (height, width); see `contact_sheet_size`.
  """
  videos = np.asarray(videos)
  if videos.ndim != 5:
    raise ValueError(f"videos must be uint8 [num, T, H, W, 3], got shape {videos.shape} (for {path!r})")
  for index, video in enumerate(videos):
    check_frames(video, name=f"videos[{index}]")
  if chunk_frames is not None and int(chunk_frames) < 1:
    raise ValueError(f"chunk_frames={chunk_frames!r} must be a positive integer")
  scale = _check_scale(scale)
  num_videos, num_frames, height, width, _ = videos.shape
  columns = shown_frame_indices(num_frames, num_frames_shown)
  sheet_h, sheet_w = contact_sheet_size(num_videos, len(columns), height, width, scale, chunk_frames, gap)
  sheet = np.empty((sheet_h, sheet_w, 3), np.uint8)
  sheet[:] = _SHEET_BACKGROUND
  band = gap if chunk_frames else 0
  tile_h, tile_w = height * scale + band, width * scale
  chunk_of = (columns // int(chunk_frames)) if chunk_frames else np.zeros_like(columns)
  for row in range(num_videos):
    top = gap + row * (tile_h + gap)
    for col, frame_index in enumerate(columns):
      left = gap + col * (tile_w + gap)
      if band:
        sheet[top:top + band, left:left + tile_w] = _CHUNK_BANDS[chunk_of[col] % 2]
      tile = upscale_nearest(videos[row, frame_index], scale)
      sheet[top + band:top + tile_h, left:left + tile_w] = tile
      if col > 0 and chunk_of[col] != chunk_of[col - 1]:
        sheet[top:top + tile_h, left - gap:left] = _CHUNK_BOUNDARY
  with atomic_output(path) as tmp_path:
    Image.fromarray(sheet).save(tmp_path, format="PNG")
  return sheet_h, sheet_w


def _read_gif(path):
  """GIF -> (uint8 [T, H, W, 3], fps); frames shown for k nominal delays are repeated k times."""
  frames, durations = [], []
  with Image.open(path) as image:
    comment = image.info.get("comment", b"")
    comment = comment.decode("latin-1") if isinstance(comment, bytes) else str(comment)
    for index in range(getattr(image, "n_frames", 1)):
      image.seek(index)
      frames.append(np.asarray(image.convert("RGB")))
      durations.append(int(image.info.get("duration", 0) or 0))
  nominal_ms = None
  if comment.startswith(_GIF_COMMENT_PREFIX):
    nominal_ms = int(comment[len(_GIF_COMMENT_PREFIX):])
  elif any(durations):
    nominal_ms = min(d for d in durations if d > 0)
  if not nominal_ms:
    return np.stack(frames), None
  repeats = [max(1, int(round(d / nominal_ms))) for d in durations]
  return np.repeat(np.stack(frames), repeats, axis=0), 1000.0 / nominal_ms


def read_video(path, return_fps=False):
  """Reads an MP4 (or anything ffmpeg decodes) or a GIF into uint8 [T, H, W, 3].

  With return_fps=True returns (frames, fps); fps is None if the file does not say.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video {path!r} does not exist")
  if path.lower().endswith(".gif"):
    frames, fps = _read_gif(path)
  else:
    reader = imageio_ffmpeg.read_frames(path, pix_fmt="rgb24")
    try:
      meta = next(reader)
    except (RuntimeError, StopIteration) as error:
      raise ValueError(f"cannot decode video {path!r}: {error}") from error
    width, height = meta["size"]
    fps = meta.get("fps")
    frames = [np.frombuffer(buffer, np.uint8).reshape(height, width, 3) for buffer in reader]
    if not frames:
      raise ValueError(f"video {path!r} has no frames")
    frames = np.stack(frames)
  return (frames, fps) if return_fps else frames


def read_image(path, height: int, width: int):
  """An image file (PNG, JPEG, ... through Pillow) as uint8 [height, width, 3]: scaled to cover height x width
  (area filter) and centre-cropped, the way the data sets resize videos. Raises FileNotFoundError or ValueError
  naming the file."""
  from PIL import UnidentifiedImageError
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"image {path!r} does not exist")
  try:
    with Image.open(path) as image:
      image = image.convert("RGB")
  except (UnidentifiedImageError, OSError) as error:
    raise ValueError(f"cannot read image {path!r}: {error}") from error
  return cover_and_crop(image, height, width)


def cover_and_crop(image, height: int, width: int):
  """A PIL image or uint8 [H, W, 3] array -> uint8 [height, width, 3]: scaled to cover height x width (area
  filter when shrinking, bicubic when growing) and centre-cropped."""
  if isinstance(image, np.ndarray):
    image = Image.fromarray(image)
  scale = max(height / image.height, width / image.width)
  size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
  image = image.resize(size, Image.Resampling.BOX if scale < 1 else Image.Resampling.BICUBIC)
  left, top = (size[0] - width) // 2, (size[1] - height) // 2
  return np.asarray(image.crop((left, top, left + width, top + height)), np.uint8)


def resize_frames(frames_TxHxWx3, height: int, width: int):
  """uint8 frames [T, H, W, 3] -> [T, height, width, 3], each by `cover_and_crop` (unchanged at their size)."""
  frames = np.asarray(frames_TxHxWx3, np.uint8)
  if frames.shape[1:3] == (height, width):
    return frames
  return np.stack([cover_and_crop(frame, height, width) for frame in frames])


def read_video_resized(path, height: int, width: int, fps: float):
  """A video as uint8 [T, height, width, 3], resampled to `fps`, scaled to cover and centre-cropped (as the
  video_folder builder decodes). Raises FileNotFoundError or ValueError naming the file."""
  from vin_jax.data import engine
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"video {path!r} does not exist")
  try:
    frames = list(engine.decoded_frames(pathlib.Path(path), height, width, fps))
  except RuntimeError as error:
    raise ValueError(f"cannot decode video {path!r}: {error}") from error
  if not frames:
    raise ValueError(f"video {path!r} has no frames at {fps:g} fps")
  return np.stack(frames)
