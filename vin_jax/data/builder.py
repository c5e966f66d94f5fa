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
from unittest import mock

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import example_serializer

from vin_jax.data import engine, sprites

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
  hide_frames: int = 0      # pixel frames each sprite is hidden for (0: never; then no "visible" feature)

  @classmethod
  def from_settings(cls, **settings) -> "SpritesConfig":
    probe = cls(name="probe", **settings)
    name = (f"n{probe.num_examples}-t{probe.num_frames}-{probe.height}x{probe.width}-k{probe.num_sprites}"
            f"-s{probe.sprite_size}-v{float(probe.max_speed)!r}-d{probe.caption_detail}"
            + (f"-h{probe.hide_frames}" if probe.hide_frames else ""))
    return cls(name=name, description=f"Sprite videos: {name}", **settings)


def sprites_config_from(config) -> SpritesConfig:
  """The builder config of a run config (its `data` group)."""
  d = config.data
  return SpritesConfig.from_settings(
      num_examples=int(d.num_examples), num_frames=int(d.num_frames), height=int(d.height), width=int(d.width),
      num_sprites=int(d.num_sprites), sprite_size=int(d.sprite_size), max_speed=float(d.max_speed),
      caption_detail=int(d.caption_detail), hide_frames=int(d.get("hide_frames", 0)))


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

  def __init__(self, **kwargs):
    # For a data set not built yet, tfds's constructor looks its metadata up on the tfds GCS bucket, and makes
    # an empty `tmp*tfds` directory for it that it never removes (DatasetInfo.initialize_from_bucket). Ours are
    # generated here and are never on that bucket, so the lookup is skipped.
    with mock.patch.object(tfds.core.DatasetInfo, "initialize_from_bucket", lambda info: None):
      super().__init__(**kwargs)

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
    features = {
        "frames": tfds.features.Tensor(shape=(c.num_frames, c.height, c.width, 3), dtype=np.uint8),
        "caption": tfds.features.Text(),
        "colors": tfds.features.Tensor(shape=(n,), dtype=np.int32),
        "shapes": tfds.features.Tensor(shape=(n,), dtype=np.int32),
        "background": tfds.features.Tensor(shape=(), dtype=np.int32),
        "trajectories": tfds.features.Tensor(shape=(n, c.num_frames, 2), dtype=np.float32),
    }
    if c.hide_frames:   # only then: data sets built before the option keep their features
      features["visible"] = tfds.features.Tensor(shape=(n, c.num_frames), dtype=np.bool_)
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
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
          caption_detail=c.caption_detail, hide_frames=c.hide_frames)
      if not c.hide_frames:
        del video["visible"]
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
  sets the size of the validation split (see `VideoFolder`); `split_scenes`, `scene_threshold`, `min_motion`
  and `captions_file` are the data engine's (vin_jax/data/engine.py).

  The name carries a digest of the folder's path and listing (names and sizes) and of the captions index (path
  and contents), so adding a video or changing a caption of the index builds anew.
  """
  video_dir: str = ""
  num_frames: int = 32      # pixel frames per clip, at `fps`
  height: int = 16
  width: int = 16
  fps: float = 8.0
  validation_clips: int = 8  # at least this many clips, as whole videos, unless the folder is too small
  split_scenes: bool = True  # clips never cross a scene cut (PySceneDetect's ContentDetector)
  scene_threshold: float = engine.DEFAULT_SCENE_THRESHOLD
  min_motion: float = 0.0    # clips of a lower mean optical-flow magnitude (pixels per frame) are dropped
  captions_file: str = ""    # a .jsonl or .csv index of captions; wins over the sidecar .txt

  @classmethod
  def from_settings(cls, **settings) -> "VideoFolderConfig":
    probe = cls(name="probe", **settings)
    if int(probe.validation_clips) < 1:
      raise ValueError(f"data.validation_clips={probe.validation_clips} must be >= 1: sample (without --prompt), "
                       "evaluate and ablate read the validation split")
    engine.check_settings(scene_threshold=probe.scene_threshold, min_motion=probe.min_motion,
                          captions_file=probe.captions_file)
    root = pathlib.Path(probe.video_dir).resolve()
    listing = [f"{p.relative_to(root)}:{p.stat().st_size}" for p in list_videos(root)]
    digest = hashlib.sha1("\n".join([str(root), *listing, engine.captions_digest(probe.captions_file)])
                          .encode()).hexdigest()[:10]
    stem = re.sub(r"[^\w\-.]", "_", root.name) or "videos"
    scenes = f"scenes{float(probe.scene_threshold)!r}" if probe.split_scenes else "noscenes"
    name = (f"{stem}-t{probe.num_frames}-{probe.height}x{probe.width}-fps{float(probe.fps)!r}"
            f"-val{int(probe.validation_clips)}-{scenes}-motion{float(probe.min_motion)!r}-{digest}")
    return cls(name=name, description=f"Video folder {root}: {name}", **settings)

  def engine_settings(self) -> dict:
    """The keyword arguments of `engine.clips` (but the path)."""
    return dict(num_frames=int(self.num_frames), height=int(self.height), width=int(self.width),
                fps=float(self.fps), split_scenes=bool(self.split_scenes),
                scene_threshold=float(self.scene_threshold), min_motion=float(self.min_motion))


def video_folder_config_from(config) -> VideoFolderConfig:
  """The builder config of a run config; needs `data.video_dir`."""
  d = config.data
  video_dir = d.get("video_dir", None)
  if not video_dir:
    raise ValueError(f"data.name='video_folder' needs data.video_dir (a folder of videos), got {video_dir!r}")
  split_scenes = d.get("split_scenes", True)
  if not isinstance(split_scenes, bool):
    raise ValueError(f"data.split_scenes={split_scenes!r} must be True or False")
  return VideoFolderConfig.from_settings(
      video_dir=str(video_dir), num_frames=int(d.num_frames), height=int(d.height), width=int(d.width),
      fps=float(d.fps), validation_clips=int(d.validation_clips), split_scenes=split_scenes,
      scene_threshold=float(d.get("scene_threshold", engine.DEFAULT_SCENE_THRESHOLD)),
      min_motion=float(d.get("min_motion", 0.0)), captions_file=str(d.get("captions_file", "") or ""))


def _count_clips(path: pathlib.Path, c: VideoFolderConfig, enough: int,
                 report: engine.SplitReport | None = None) -> int:
  """Kept clips of one video (as `VideoFolder` generates them: `engine.clips`), counted up to `enough`
  (decoding stops there)."""
  count = 0
  with contextlib.closing(engine.clips(path, **c.engine_settings(), report=report, name=path.name)) as clips:
    for _ in clips:
      count += 1
      if count >= enough:
        break
  return count


def validation_start(videos: list[pathlib.Path], c: VideoFolderConfig) -> int:
  """Index into the sorted listing `videos` of the first validation video (see `VideoFolder`).

  Takes videos from the end of the listing until they hold `validation_clips` kept clips, never the first video.
  """
  if len(videos) < 2:
    raise ValueError(
        f"data.validation_clips={c.validation_clips}: data.video_dir={c.video_dir!r} holds {len(videos)} video, "
        "but the validation split holds whole videos, so that no video is in both splits: add a second video "
        "(or cut this one in two, e.g. with ffmpeg -ss/-t)")
  start, held, report = len(videos), 0, engine.SplitReport()
  while start > 1 and held < c.validation_clips:
    start -= 1
    held += _count_clips(videos[start], c, c.validation_clips - held, report)
  if held == 0:
    broken = [f"{s['file']}: {s['error']}" for s in report.skipped + report.truncated]
    raise ValueError(
        f"data.validation_clips={c.validation_clips}: no video of data.video_dir={c.video_dir!r} after the first "
        f"({videos[0].name}) holds a clip of data.num_frames={c.num_frames} frames at data.fps={c.fps} (within "
        f"one scene, data.split_scenes={c.split_scenes}; moving at least data.min_motion={c.min_motion}; broken "
        "files are skipped), so the validation split would be empty: add longer videos"
        + (f" (broken: {'; '.join(broken)})" if broken else ""))
  return start


class VideoFolder(_ReproducibleBuilder):
  """Non-overlapping clips of every video in a folder, made by the data engine (vin_jax/data/engine.py): within
  one scene (`data.split_scenes`), moving at least `data.min_motion`, captioned by the index
  `data.captions_file` or else the sidecar `<stem>.txt` (else ""). Broken files are skipped or truncated, never
  fatal; `build_report.json` in the data dir, next to the records, says what every split kept and dropped.

  Splits: `validation` holds whole videos taken from the end of the sorted listing (`list_videos`) until they
  hold at least `data.validation_clips` kept clips; `train` holds every other video. No video is in both
  splits, and the split depends only on the listing and the clip settings, so rebuilds are identical. The first
  video always stays in train: in a small folder validation gets every later video, even if they hold fewer
  clips than asked for (`validation_inputs` then repeats them). A folder of one video, or one whose videos after
  the first hold no kept clip, raises a ValueError naming `data.validation_clips`; so does a train split left
  without a clip (its videos all shorter than one clip, or broken).
  """

  name = "video_folder"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = []

  report: engine.BuildReport | None = None  # of the last generation, written to build_report.json

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

  def _download_and_prepare(self, dl_manager, download_config=None):
    result = super()._download_and_prepare(dl_manager, download_config)
    # Here self.data_dir is still tfds's temporary directory (renamed to the real one once everything in it is
    # written), so the report lands together with the records, or not at all.
    self.report.write(self.data_dir)
    return result

  def _split_generators(self, dl_manager):
    del dl_manager
    c: VideoFolderConfig = self.builder_config
    root = pathlib.Path(c.video_dir).resolve()
    videos = list_videos(root)
    if not videos:
      raise ValueError(f"data.video_dir={c.video_dir!r} holds no video ({', '.join(VIDEO_SUFFIXES)})")
    index = engine.load_captions(c.captions_file, root) if c.captions_file else {}
    listed = {v.relative_to(root).as_posix() for v in videos}
    settings = {"video_dir": str(root), **c.engine_settings(), "validation_clips": int(c.validation_clips),
                "captions_file": str(pathlib.Path(c.captions_file).resolve()) if c.captions_file else ""}
    self.report = engine.BuildReport(settings=settings,
                                     captions_unmatched=sorted(k for k in index if k not in listed))
    start = validation_start(videos, c)
    return {"train": self._generate_examples("train", videos, range(start), index),
            "validation": self._generate_examples("validation", videos, range(start, len(videos)), index)}

  def _generate_examples(self, split: str, videos: list[pathlib.Path], indices: range, index: dict[str, str]):
    c: VideoFolderConfig = self.builder_config
    root = pathlib.Path(c.video_dir).resolve()
    report = self.report.split(split)
    report.files = len(indices)
    for file_index in indices:
      path = videos[file_index]
      name = path.relative_to(root).as_posix()
      caption, origin = engine.caption_of(path, root, index)
      report.captions[origin] += 1
      for clip in engine.clips(path, **c.engine_settings(), report=report, name=name):
        yield f"{file_index:06d}-{clip.start_frame:09d}", {
            "frames": clip.frames, "caption": caption, "source": name,
            "start_frame": np.int32(clip.start_frame)}
    if report.clips_kept == 0:
      why = (f"the {split} videos of {c.video_dir!r} hold no clip of data.num_frames={c.num_frames} frames at "
             f"data.fps={c.fps} (within one scene, data.split_scenes={c.split_scenes}; moving at least "
             f"data.min_motion={c.min_motion}; broken files are skipped). {self.report.summary()}")
      if split == "train":
        raise ValueError(
            f"data.num_frames={c.num_frames}: {why}. The train videos are all but the validation split's (see "
            f"data.validation_clips={c.validation_clips}): add videos, or lower data.validation_clips "
            "(validation keeps at least the last video)")
      raise ValueError(f"data.num_frames={c.num_frames}: {why}")


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
  if getattr(builder, "report", None) is not None:  # generated now (a reused data set has its build_report.json)
    print(builder.report.summary(), flush=True)
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
