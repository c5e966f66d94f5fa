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


# ----------------------------------------------------------------------------------------------
# video_folder

def write_mp4(path, frames, fps):
  import imageio_ffmpeg
  writer = imageio_ffmpeg.write_frames(str(path), frames.shape[2:0:-1], fps=fps, codec="libx264",
                                       pix_fmt_out="yuv420p", quality=None, macro_block_size=16,
                                       output_params=["-crf", "0"], ffmpeg_log_level="error")
  writer.send(None)
  for frame in frames:
    writer.send(np.ascontiguousarray(frame))
  writer.close()


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("videos")
  # 20 solid frames at 8 fps whose red channel counts the frame; and 12 frames at 16 fps (= 6 at 8 fps).
  ramp = np.zeros((20, 32, 48, 3), np.uint8)
  ramp[..., 0] = (np.arange(20) * 12)[:, None, None]
  ramp[..., 1:] = 128
  write_mp4(root / "ramp.mp4", ramp, fps=8)
  (root / "ramp.txt").write_text("a red ramp\n")
  (root / "sub").mkdir()
  write_mp4(root / "sub" / "short.mp4", np.full((12, 32, 32, 3), 200, np.uint8), fps=16)
  return root


def video_folder_config(config, video_dir):
  config.data.name = "video_folder"
  config.data.video_dir = str(video_dir)
  config.data.num_frames, config.data.height, config.data.width, config.data.fps = 4, 16, 16, 8.0
  config.data.bucket_chunks, config.data.bucket_weights = (1,), (1.0,)
  return config


def test_video_folder_clips(config, video_dir, tmp_path):
  config = video_folder_config(config, video_dir)
  builder.build_dataset(config, tmp_path)
  source = builder.data_source(config, tmp_path, "train")
  sources = [source[i]["source"].decode() for i in range(len(source))]
  assert sources == ["ramp.mp4"] * 5 + ["sub/short.mp4"]  # 20 frames -> 5 clips of 4; 6 frames -> 1 clip
  first = source[1]
  assert first["frames"].shape == (4, 16, 16, 3) and first["frames"].dtype == np.uint8
  assert first["caption"].decode() == "a red ramp" and source[5]["caption"].decode() == ""
  assert int(first["start_frame"]) == 4
  red = first["frames"][..., 0].mean(axis=(1, 2))
  np.testing.assert_allclose(red, np.arange(4, 8) * 12, atol=4)

  again = tmp_path / "again"
  builder.build_dataset(config, again)
  for a, b in zip(record_files(tmp_path), record_files(again)):
    assert a.read_bytes() == b.read_bytes()


def test_video_folder_feeds_the_pipeline(config, video_dir, tmp_path):
  from vin_jax.data import pipeline
  config = video_folder_config(config, video_dir)
  builder.build_dataset(config, tmp_path)
  batch = next(pipeline.make_train_iterator(config, tmp_path, process_index=0, process_count=1))
  assert batch["frames"].shape == (config.data.batch_size, 4, 16, 16, 3)


def test_video_folder_needs_a_folder(config, tmp_path):
  config.data.name = "video_folder"
  with pytest.raises(ValueError, match="data.video_dir"):
    builder.make_builder(config, tmp_path)
  config.data.video_dir = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="data.video_dir"):
    builder.make_builder(config, tmp_path)
