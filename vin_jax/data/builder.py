"""TFDS builder of the synthetic sprite videos, written as ArrayRecord (no TensorFlow, no downloads).

    builder = build_dataset(config, data_dir)            # generates once, then reuses
    source = data_source(config, data_dir, "train")     # random access: source[i] -> dict of numpy arrays

Each `config.data` setting gets its own directory, `data_dir/sprites/<config name>/<version>/`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import pathlib

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


def make_builder(config, data_dir: str | pathlib.Path) -> tfds.core.DatasetBuilder:
  """The builder for `config.data` under `data_dir` (nothing is generated)."""
  name = config.data.name
  if name != "sprites":
    raise ValueError(f"data.name={name!r}: only 'sprites' has a builder here")
  return Sprites(config=sprites_config_from(config), data_dir=str(data_dir), file_format=FILE_FORMAT)


def build_dataset(config, data_dir: str | pathlib.Path) -> tfds.core.DatasetBuilder:
  """Generates the data set of `config.data` into `data_dir` unless it is there already; returns the builder."""
  builder = make_builder(config, data_dir)
  builder.download_and_prepare(file_format=FILE_FORMAT)
  return builder


def data_source(config, data_dir: str | pathlib.Path, split: str = "train"):
  """Random-access source of one split: len(source), source[i] -> dict of numpy arrays (caption as bytes)."""
  builder = make_builder(config, data_dir)
  if not builder.is_prepared():
    raise FileNotFoundError(f"data.name={config.data.name!r} is not built in {builder.data_dir}; run "
                            "vin_jax.data.builder.build_dataset(config, data_dir) first")
  if split not in builder.info.splits:
    raise ValueError(f"split={split!r} is not one of {list(builder.info.splits)} in {builder.data_dir}")
  return builder.as_data_source()[split]
