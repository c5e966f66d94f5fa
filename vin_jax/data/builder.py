"""TFDS builders written as ArrayRecord (no TensorFlow, no downloads): synthetic sprites, or a video folder.

    builder = build_dataset(config, data_dir)            # generates once, then reuses
    source = data_source(config, data_dir, "train")     # random access: source[i] -> dict of numpy arrays

`config.data.name` picks the builder. Each setting gets its own directory,
`data_dir/<builder name>/<config name>/<version>/`. Both builders store `frames` uint8 [T, H, W, 3] and
`caption`, which is all the input pipeline reads.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

from vin_jax.data import sprites

FILE_FORMAT = "array_record"
# Example i of a split is generated from (salt, i); each split has its own salt, so validation videos are
# never training videos.
_SPLIT_SALTS = {"train": 0x5eed_0001, "validation": 0x5eed_0002}


def example_seed(split: str, index: int) -> int:
  """The `generate_video` seed of example `index` of `split` (regenerates its ground truth without the files)."""
  if split not in _SPLIT_SALTS:
    raise ValueError(f"split={split!r} is not one of {tuple(_SPLIT_SALTS)}")
  return int(np.random.SeedSequence([_SPLIT_SALTS[split], index]).generate_state(1)[0])


def validation_size(num_examples: int) -> int:
  """Videos in the validation split: max(8, num_examples // 16)."""
  return max(8, num_examples // 16)


@dataclasses.dataclass(eq=False)
class SpritesConfig(tfds.core.BuilderConfig):
  """Generator settings; `name` is derived from them so different settings never share a directory."""
  num_examples: int = 256
  num_frames: int = 32      # pixel frames per video
  height: int = 16
  width: int = 16
  num_sprites: int = 1
  sprite_size: int = 6      # pixels
  max_speed: float = 0.5    # pixels per pixel frame
  caption_detail: int = 0

  @classmethod
  def from_settings(cls, **settings) -> "SpritesConfig":
    probe = cls(name="probe", **settings)
    name = (f"n{probe.num_examples}-t{probe.num_frames}-{probe.height}x{probe.width}-k{probe.num_sprites}"
            f"-s{probe.sprite_size}-v{float(probe.max_speed)!r}-d{probe.caption_detail}")
    return cls(name=name, description=f"Sprite videos: {name}", **settings)


def sprites_config_from(config) -> SpritesConfig:
  """The builder config of a run config (its `data` group)."""
  d = config.data
  return SpritesConfig.from_settings(
      num_examples=int(d.num_examples), num_frames=int(d.num_frames), height=int(d.height), width=int(d.width),
      num_sprites=int(d.num_sprites), sprite_size=int(d.sprite_size), max_speed=float(d.max_speed),
      caption_detail=int(d.caption_detail))


@contextlib.contextmanager
def _deterministic_serialization():
  """Within the block, tfds serialises examples with sorted feature keys.

  Why: the upb protobuf runtime writes the feature map of a tf.Example in a per-process random order, so the
  same data set built twice would give different bytes. tfds has no option for this; the patch is undone on exit.
  """
  cls = example_serializer.ExampleSerializer
  original = cls.serialize_example

  def serialize_example(self, example):
    return self.get_tf_example(example).SerializeToString(deterministic=True)

  cls.serialize_example = serialize_example
  try:
    yield
  finally:
    cls.serialize_example = original


class _ReproducibleBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A builder whose record files are byte-identical whenever the same examples are generated."""

  def _download_and_prepare(self, dl_manager, download_config=None):
    with _deterministic_serialization():
      return super()._download_and_prepare(dl_manager, download_config)


class Sprites(_ReproducibleBuilder):
  """Long videos of coloured shapes bouncing over a background (see vin_jax/data/sprites.py)."""

  name = "sprites"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = []  # configs are made from run configs, see `sprites_config_from`

  def _info(self) -> tfds.core.DatasetInfo:
    c: SpritesConfig = self.builder_config
    n = c.num_sprites
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(shape=(c.num_frames, c.height, c.width, 3), dtype=np.uint8),
            "caption": tfds.features.Text(),
            "colors": tfds.features.Tensor(shape=(n,), dtype=np.int32),
            "shapes": tfds.features.Tensor(shape=(n,), dtype=np.int32),
            "background": tfds.features.Tensor(shape=(), dtype=np.int32),
            "trajectories": tfds.features.Tensor(shape=(n, c.num_frames, 2), dtype=np.float32),
        }),
        description="Synthetic sprite videos; frames uint8 [T, H, W, 3], trajectories (y, x) in pixels.",
        # Records stay in generation order: source[i] is example i, generated from example_seed(split, i).
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing to download
    c: SpritesConfig = self.builder_config
    return {
        "train": self._generate_examples("train", c.num_examples),
        "validation": self._generate_examples("validation", validation_size(c.num_examples)),
    }

  def _generate_examples(self, split: str, count: int):
    c: SpritesConfig = self.builder_config
    for i in range(count):
      video = sprites.generate_video(
          example_seed(split, i), num_frames=c.num_frames, height=c.height, width=c.width,
          num_sprites=c.num_sprites, sprite_size=c.sprite_size, max_speed=c.max_speed,
          caption_detail=c.caption_detail)
      yield i, video


# ----------------------------------------------------------------------------------------------
# A folder of the user's own videos.

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def list_videos(video_dir: str | pathlib.Path) -> list[pathlib.Path]:
  """Video files under `video_dir` (recursive), sorted by relative path."""
  root = pathlib.Path(video_dir)
  if not root.is_dir():
    raise FileNotFoundError(f"data.video_dir={str(video_dir)!r} is not a directory")
  return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())


@dataclasses.dataclass(eq=False)
class VideoFolderConfig(tfds.core.BuilderConfig):
  """Clips of `num_frames` frames at `fps`, centre-cropped and resized to height x width; `validation_clips`
  sets the size of the validation split (see `VideoFolder`).

  The name carries a digest of the folder's path and listing (names and sizes), so adding a video builds anew.
  """
  video_dir: str = ""
  num_frames: int = 32      # pixel frames per clip, at `fps`
  height: int = 16
  width: int = 16
  fps: float = 8.0
  validation_clips: int = 8  # at least this many clips, as whole videos, unless the folder is too small

  @classmethod
  def from_settings(cls, **settings) -> "VideoFolderConfig":
    probe = cls(name="probe", **settings)
    if int(probe.validation_clips) < 1:
      raise ValueError(f"data.validation_clips={probe.validation_clips} must be >= 1: sample (without --prompt), "
                       "evaluate and ablate read the validation split")
    root = pathlib.Path(probe.video_dir).resolve()
    listing = [f"{p.relative_to(root)}:{p.stat().st_size}" for p in list_videos(root)]
    digest = hashlib.sha1("\n".join([str(root), *listing]).encode()).hexdigest()[:10]
    stem = re.sub(r"[^\w\-.]", "_", root.name) or "videos"
    name = (f"{stem}-t{probe.num_frames}-{probe.height}x{probe.width}-fps{float(probe.fps)!r}"
            f"-val{int(probe.validation_clips)}-{digest}")
    return cls(name=name, description=f"Video folder {root}: {name}", **settings)


def video_folder_config_from(config) -> VideoFolderConfig:
  """The builder config of a run config; needs `data.video_dir`."""
  d = config.data
  video_dir = d.get("video_dir", None)
  if not video_dir:
    raise ValueError(f"data.name='video_folder' needs data.video_dir (a folder of videos), got {video_dir!r}")
  return VideoFolderConfig.from_settings(video_dir=str(video_dir), num_frames=int(d.num_frames),
                                         height=int(d.height), width=int(d.width), fps=float(d.fps),
                                         validation_clips=int(d.validation_clips))


def _decoded_frames(path: pathlib.Path, height: int, width: int, fps: float):
  """Streams uint8 [H, W, 3] frames of a video resampled to `fps`, scaled to cover H x W and centre-cropped."""
  import imageio_ffmpeg  # only this builder decodes video

  # ffmpeg does the resampling and resizing while decoding, so a long video never sits in memory.
  filters = (f"fps={fps!r},scale={width}:{height}:force_original_aspect_ratio=increase:flags=area,"
             f"crop={width}:{height}")
  reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24", output_params=["-vf", filters])
  try:
    next(reader)  # metadata of the source
  except (RuntimeError, StopIteration) as error:
    raise ValueError(f"cannot decode video {str(path)!r}: {error}") from error
  for buffer in reader:
    yield np.frombuffer(buffer, np.uint8).reshape(height, width, 3)


def _clips(path: pathlib.Path, c: VideoFolderConfig):
  """Streams (start_frame, uint8 [num_frames, H, W, 3]) of the non-overlapping clips of one video; a shorter
  tail is dropped."""
  clip, start_frame = [], 0
  for frame in _decoded_frames(path, c.height, c.width, c.fps):
    clip.append(frame)
    if len(clip) == c.num_frames:
      yield start_frame, np.stack(clip)
      clip, start_frame = [], start_frame + c.num_frames


def _count_clips(path: pathlib.Path, c: VideoFolderConfig, enough: int) -> int:
  """Clips of one video, counted up to `enough` (decoding stops there)."""
  count = 0
  with contextlib.closing(_clips(path, c)) as clips:
    for _ in clips:
      count += 1
      if count >= enough:
        break
  return count


def validation_start(videos: list[pathlib.Path], c: VideoFolderConfig) -> int:
  """Index into the sorted listing `videos` of the first validation video (see `VideoFolder`).

  Takes videos from the end of the listing until they hold `validation_clips` clips, never the first video.
  """
  if len(videos) < 2:
    raise ValueError(
        f"data.validation_clips={c.validation_clips}: data.video_dir={c.video_dir!r} holds {len(videos)} video, "
        "but the validation split holds whole videos, so that no video is in both splits: add a second video "
        "(or cut this one in two, e.g. with ffmpeg -ss/-t)")
  start, held = len(videos), 0
  while start > 1 and held < c.validation_clips:
    start -= 1
    held += _count_clips(videos[start], c, c.validation_clips - held)
  if held == 0:
    raise ValueError(
        f"data.validation_clips={c.validation_clips}: no video of data.video_dir={c.video_dir!r} after the first "
        f"({videos[0].name}) holds a clip of data.num_frames={c.num_frames} frames at data.fps={c.fps}, so the "
        "validation split would be empty: add longer videos")
  return start


class VideoFolder(_ReproducibleBuilder):
  """Non-overlapping clips of every video in a folder; a video's caption is its sidecar `<stem>.txt`, or "".

  Splits: `validation` holds whole videos taken from the end of the sorted listing (`list_videos`) until they
  hold at least `data.validation_clips` clips; `train` holds every other video. No video is in both splits,
  and the split depends only on the listing and the clip settings, so rebuilds are identical. The first video
  always stays in train: in a small folder validation gets every later video, even if they hold fewer clips
  than asked for (`validation_inputs` then repeats them). A folder of one video, or one whose videos after the
  first are all shorter than a clip, raises a ValueError naming `data.validation_clips`; so does a train split
  left without a clip (its videos all shorter than one clip).
  """

  name = "video_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = []

  def _info(self) -> tfds.core.DatasetInfo:
    c: VideoFolderConfig = self.builder_config
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "frames": tfds.features.Tensor(shape=(c.num_frames, c.height, c.width, 3), dtype=np.uint8),
            "caption": tfds.features.Text(),
            "source": tfds.features.Text(),  # the file, relative to the folder
            "start_frame": tfds.features.Tensor(shape=(), dtype=np.int32),  # first frame of the clip, at fps
        }),
        description="Clips of a folder of videos; frames uint8 [T, H, W, 3] at the configured fps.",
        disable_shuffling=True,
    )

  def _split_generators(self, dl_manager):
    del dl_manager
    c: VideoFolderConfig = self.builder_config
    videos = list_videos(pathlib.Path(c.video_dir).resolve())
    if not videos:
      raise ValueError(f"data.video_dir={c.video_dir!r} holds no video ({', '.join(VIDEO_SUFFIXES)})")
    start = validation_start(videos, c)
    return {"train": self._generate_examples("train", videos, range(start)),
            "validation": self._generate_examples("validation", videos, range(start, len(videos)))}

  def _generate_examples(self, split: str, videos: list[pathlib.Path], indices: range):
    c: VideoFolderConfig = self.builder_config
    root = pathlib.Path(c.video_dir).resolve()
    count = 0
    for file_index in indices:
      path = videos[file_index]
      sidecar = path.with_suffix(".txt")
      caption = sidecar.read_text(encoding="utf-8").strip() if sidecar.exists() else ""
      for start_frame, frames in _clips(path, c):
        yield f"{file_index:06d}-{start_frame:09d}", {
            "frames": frames, "caption": caption, "source": str(path.relative_to(root)),
            "start_frame": np.int32(start_frame)}
        count += 1
    if count == 0:
      if split == "train":
        raise ValueError(
            f"data.num_frames={c.num_frames}: the train videos of {c.video_dir!r} (all but the validation "
            f"split's, see data.validation_clips={c.validation_clips}) are shorter than one clip at "
            f"data.fps={c.fps}; add videos, or lower data.validation_clips (validation keeps at least the last video)")
      raise ValueError(f"data.num_frames={c.num_frames}: the validation videos of {c.video_dir!r} are shorter "
                       f"than one clip at data.fps={c.fps}")


# ----------------------------------------------------------------------------------------------

def make_builder(config, data_dir: str | pathlib.Path) -> tfds.core.DatasetBuilder:
  """The builder for `config.data` under `data_dir` (nothing is generated); with data.latents, the builder of
  its precomputed latents (vin_jax/data/latents.py)."""
  if config.data.get("latents", False):
    from vin_jax.data import latents
    return latents.Latents(config=latents.latents_config_from(config, data_dir), data_dir=str(data_dir),
                           file_format=FILE_FORMAT)
  name = config.data.name
  if name == "sprites":
    return Sprites(config=sprites_config_from(config), data_dir=str(data_dir), file_format=FILE_FORMAT)
  if name == "video_folder":
    return VideoFolder(config=video_folder_config_from(config), data_dir=str(data_dir), file_format=FILE_FORMAT)
  raise ValueError(f"data.name={name!r} must be 'sprites' or 'video_folder'")


def build_dataset(config, data_dir: str | pathlib.Path) -> tfds.core.DatasetBuilder:
  """Generates the data set of `config.data` into `data_dir` unless it is there already; returns the builder."""
  builder = make_builder(config, data_dir)
  builder.download_and_prepare(file_format=FILE_FORMAT)
  return builder


def data_source(config, data_dir: str | pathlib.Path, split: str = "train"):
  """Random-access source of one split: len(source), source[i] -> dict of numpy arrays (caption as bytes)."""
  builder = make_builder(config, data_dir)
  if not builder.is_prepared():
    if config.data.get("latents", False):
      raise FileNotFoundError(f"data.latents=True: the precomputed latents are not in {builder.data_dir}; run "
                              "`python -m vin_jax.main precompute` with this config first")
    raise FileNotFoundError(f"data.name={config.data.name!r} is not built in {builder.data_dir}; run "
                            "vin_jax.data.builder.build_dataset(config, data_dir) first")
  if split not in builder.info.splits:
    raise ValueError(f"split={split!r} is not one of {list(builder.info.splits)} in {builder.data_dir}")
  return builder.as_data_source()[split]
