import pathlib
import subprocess
import sys

import numpy as np
import pytest

from vin_jax.data import builder, sprites


def record_files(data_dir):
  return sorted(p for p in data_dir.rglob("*.array_record-*"))


def test_two_builds_are_byte_identical(data_dir, tmp_path):
  # The second build runs in a fresh process: protobuf map order, the usual culprit, is random per process.
  script = ("import sys, conftest; from vin_jax.data import builder; "
            "builder.build_dataset(conftest.load_test_config(), sys.argv[1])")
  subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, cwd=pathlib.Path(__file__).parent,
                 capture_output=True)
  first, second = record_files(data_dir), record_files(tmp_path)
  assert [p.relative_to(data_dir) for p in first] == [p.relative_to(tmp_path) for p in second]
  assert len(first) >= 2  # train and validation
  for a, b in zip(first, second):
    assert a.read_bytes() == b.read_bytes(), a.name


def test_second_build_reuses_the_data(config, data_dir):
  before = {p: p.stat().st_mtime_ns for p in record_files(data_dir)}
  builder.build_dataset(config, data_dir)
  assert {p: p.stat().st_mtime_ns for p in record_files(data_dir)} == before


def test_examples_shapes_and_dtypes(config, data_dir):
  d = config.data
  train = builder.data_source(config, data_dir, "train")
  validation = builder.data_source(config, data_dir, "validation")
  assert len(train) == d.num_examples and len(validation) == builder.validation_size(d.num_examples)
  ex = train[3]
  assert ex["frames"].shape == (d.num_frames, d.height, d.width, 3) and ex["frames"].dtype == np.uint8
  assert ex["colors"].shape == (d.num_sprites,) and ex["colors"].dtype == np.int32
  assert ex["shapes"].shape == (d.num_sprites,) and ex["shapes"].dtype == np.int32
  assert ex["trajectories"].shape == (d.num_sprites, d.num_frames, 2) and ex["trajectories"].dtype == np.float32
  assert int(ex["background"]) in range(len(sprites.BACKGROUND_NAMES))
  assert ex["caption"].decode().startswith("a video of one sprite")


def test_example_i_is_the_video_of_its_seed(config, data_dir):
  d = config.data
  train = builder.data_source(config, data_dir, "train")
  validation = builder.data_source(config, data_dir, "validation")
  for split, source in (("train", train), ("validation", validation)):
    for i in (0, 5):
      v = sprites.generate_video(builder.example_seed(split, i), num_frames=d.num_frames, height=d.height,
                                 width=d.width, num_sprites=d.num_sprites, sprite_size=d.sprite_size,
                                 max_speed=d.max_speed, caption_detail=d.caption_detail)
      np.testing.assert_array_equal(source[i]["frames"], v["frames"])
      np.testing.assert_array_equal(source[i]["trajectories"], v["trajectories"])
      assert source[i]["caption"].decode() == v["caption"]
  train_videos = {train[i]["frames"].tobytes() for i in range(len(train))}
  assert not any(validation[i]["frames"].tobytes() in train_videos for i in range(len(validation)))


def test_settings_choose_the_directory(config):
  name = builder.sprites_config_from(config).name
  assert name == builder.sprites_config_from(config).name
  for field, value in (("max_speed", 0.25), ("caption_detail", 2), ("num_sprites", 2), ("num_examples", 17)):
    other = config.copy_and_resolve_references()
    other.data[field] = value
    assert builder.sprites_config_from(other).name != name, field


def test_unbuilt_data_set_raises(config, tmp_path):
  with pytest.raises(FileNotFoundError, match="build_dataset"):
    builder.data_source(config, tmp_path, "train")
