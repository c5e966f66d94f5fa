import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from tests.conftest import REPO, SUBPROCESS_TIMEOUT_SECONDS
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


def test_an_unbuilt_builder_leaves_no_temporary_directory(config, tmp_path, monkeypatch):
  """tfds makes an empty `tmp*tfds` directory to look a not-yet-built data set up on its GCS bucket and never
  removes it; our builders skip that lookup."""
  scratch = tmp_path / "tmp"
  scratch.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))
  builder.make_builder(config, tmp_path / "data")
  assert list(scratch.iterdir()) == []


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
  # The ramp's solid colour changes hue at once when its red passes the green: a cut to ContentDetector.
  config.data.split_scenes = False
  builder.build_dataset(config, tmp_path)
  source = builder.data_source(config, tmp_path, "train")
  validation = builder.data_source(config, tmp_path, "validation")
  sources = [source[i]["source"].decode() for i in range(len(source))]
  assert sources == ["ramp.mp4"] * 5  # 20 frames -> 5 clips of 4
  # 6 frames -> 1 clip: fewer than data.validation_clips=8, but the first video stays in train
  assert [validation[i]["source"].decode() for i in range(len(validation))] == ["sub/short.mp4"]
  first = source[1]
  assert first["frames"].shape == (4, 16, 16, 3) and first["frames"].dtype == np.uint8
  assert first["caption"].decode() == "a red ramp" and validation[0]["caption"].decode() == ""
  assert int(first["start_frame"]) == 4
  red = first["frames"][..., 0].mean(axis=(1, 2))
  np.testing.assert_allclose(red, np.arange(4, 8) * 12, atol=4)

  again = tmp_path.with_name(tmp_path.name + "-again")  # not under tmp_path, whose files are compared
  builder.build_dataset(config, again)
  first, second = record_files(tmp_path), record_files(again)
  assert len(first) == 2 and [p.relative_to(tmp_path) for p in first] == [p.relative_to(again) for p in second]
  for a, b in zip(first, second):
    assert a.read_bytes() == b.read_bytes(), a.name


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


# Real encoded videos from ffmpeg's test sources: (file, source filter, seconds at 8 fps, caption). At the
# builder tests' 4-frame clips they hold 12, 8, 4 and 4 clips; at configs/tiny.py:test's 16 frames 3, 2, 1, 1.
FFMPEG_VIDEOS = (("1_testsrc.mp4", "testsrc", 6, "a test pattern with a counter"),
                 ("2_testsrc2.mp4", "testsrc2", 4, "a colourful test pattern"),
                 ("3_smptebars.mp4", "smptebars", 2, "colour bars"),
                 ("4_more/mandelbrot.mp4", "mandelbrot", 2, "a mandelbrot zoom"))
FFMPEG_CLIPS = {name: seconds * 2 for name, _, seconds, _ in FFMPEG_VIDEOS}  # 8 fps / 4 frames a clip
CAPTIONS = {name: caption for name, _, _, caption in FFMPEG_VIDEOS}


@pytest.fixture(scope="module")
def ffmpeg_video_dir(tmp_path_factory):
  import imageio_ffmpeg
  root = tmp_path_factory.mktemp("ffmpeg_videos")
  for name, source, seconds, caption in FFMPEG_VIDEOS:
    path = root / name
    path.parent.mkdir(exist_ok=True)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                    f"{source}=size=64x48:rate=8", "-t", str(seconds), "-pix_fmt", "yuv420p", str(path)],
                   check=True, capture_output=True)
    path.with_suffix(".txt").write_text(caption + "\n")
  return root


def clips_of(source):
  return [(source[i]["source"].decode(), int(source[i]["start_frame"])) for i in range(len(source))]


def test_video_folder_validation_holds_whole_videos(config, ffmpeg_video_dir, tmp_path):
  config = video_folder_config(config, ffmpeg_video_dir)  # data.validation_clips: the default 8
  assert config.data.validation_clips == 8
  builder.build_dataset(config, tmp_path)
  train = builder.data_source(config, tmp_path, "train")
  validation = builder.data_source(config, tmp_path, "validation")
  # From the end of the listing: mandelbrot (4 clips), smptebars (4 more: 8) -> validation.
  names = list(FFMPEG_CLIPS)
  assert clips_of(train) == [(n, 4 * k) for n in names[:2] for k in range(FFMPEG_CLIPS[n])]
  assert clips_of(validation) == [(n, 4 * k) for n in names[2:] for k in range(FFMPEG_CLIPS[n])]
  assert len(train) == 20 and len(validation) == 8
  # no clip, and no source video, in both splits
  assert not {s for s, _ in clips_of(train)} & {s for s, _ in clips_of(validation)}
  train_frames = {train[i]["frames"].tobytes() for i in range(len(train))}
  assert not any(validation[i]["frames"].tobytes() in train_frames for i in range(len(validation)))
  for source in (train, validation):
    for i in range(len(source)):
      assert source[i]["caption"].decode() == CAPTIONS[source[i]["source"].decode()]
      assert source[i]["frames"].shape == (4, 16, 16, 3) and source[i]["frames"].std() > 0

  again = tmp_path.with_name(tmp_path.name + "-again")  # not under tmp_path, whose files are compared
  builder.build_dataset(config, again)
  first, second = record_files(tmp_path), record_files(again)
  assert len(first) == 2 and [p.relative_to(tmp_path) for p in first] == [p.relative_to(again) for p in second]
  for a, b in zip(first, second):
    assert a.read_bytes() == b.read_bytes(), a.name


@pytest.mark.parametrize("validation_clips, start", [(1, 3), (4, 3), (5, 2), (8, 2), (9, 1), (100, 1)])
def test_validation_takes_whole_videos_from_the_end(config, ffmpeg_video_dir, validation_clips, start):
  # Clips per video: 12, 8, 4, 4. The first video always stays in train, however many clips are asked for.
  config = video_folder_config(config, ffmpeg_video_dir)
  config.data.validation_clips = validation_clips
  c = builder.video_folder_config_from(config)
  assert builder.validation_start(builder.list_videos(ffmpeg_video_dir), c) == start


def test_validation_clips_chooses_the_directory(config, ffmpeg_video_dir):
  config = video_folder_config(config, ffmpeg_video_dir)
  name = builder.video_folder_config_from(config).name
  assert name == builder.video_folder_config_from(config).name
  config.data.validation_clips = 4
  assert builder.video_folder_config_from(config).name != name
  config.data.validation_clips = 0
  with pytest.raises(ValueError, match="data.validation_clips=0"):
    builder.video_folder_config_from(config)


def test_one_video_cannot_be_split(config, ffmpeg_video_dir, tmp_path):
  folder = tmp_path / "one"
  folder.mkdir()
  (folder / "only.mp4").write_bytes((ffmpeg_video_dir / "1_testsrc.mp4").read_bytes())
  config = video_folder_config(config, folder)
  with pytest.raises(ValueError, match="data.validation_clips=8.*holds 1 video"):
    builder.build_dataset(config, tmp_path / "data")


def test_train_left_without_a_clip_raises(config, ffmpeg_video_dir, tmp_path):
  import imageio_ffmpeg
  folder = tmp_path / "short_first"
  folder.mkdir()
  subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-f", "lavfi", "-i",
                  "testsrc=size=64x48:rate=8", "-t", "0.25", "-pix_fmt", "yuv420p", str(folder / "a.mp4")],
                 check=True, capture_output=True)  # 2 frames: shorter than a clip of 4
  (folder / "b.mp4").write_bytes((ffmpeg_video_dir / "3_smptebars.mp4").read_bytes())
  config = video_folder_config(config, folder)
  with pytest.raises(ValueError, match="data.validation_clips=8"):
    builder.build_dataset(config, tmp_path / "data")


def test_video_folder_command_line_end_to_end(ffmpeg_video_dir, tmp_path):
  """data, train, sample without --prompt (the validation captions) and evaluate on a folder of videos."""
  workdir, out = tmp_path / "run", tmp_path / "run" / "samples"
  env = {k: v for k, v in os.environ.items() if not k.startswith(("VIN_", "XLA_", "TPU_", "TFDS_"))}
  env["JAX_PLATFORMS"] = "cpu"  # one CPU device, as a user's run
  common = ["--config=configs/tiny.py:test", f"--workdir={workdir}", "--config.data.name=video_folder",
            f"--config.data.video_dir={ffmpeg_video_dir}", "--config.data.bucket_chunks=(1,)",
            "--config.data.bucket_weights=(1.0,)"]
  commands = (["data", *common],
              ["train", *common, "--config.train.steps=2"],
              ["sample", *common, f"--out={out}", "--num_chunks=2", "--config.sampling.num_steps=2"],
              ["evaluate", f"--samples={out}"])
  for command in commands:
    result = subprocess.run([sys.executable, "-m", "vin_jax.main", *command], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)
    assert result.returncode == 0, (command[0], result.stderr[-3000:])
  info = json.loads((out / "sample_info.json").read_text())
  # 16-frame clips: 3, 2, 1, 1 per video; validation_clips=8 asks for more than the last three videos hold,
  # so they are all validation and the first validation clip is the second video's.
  assert info["prompts"] == [CAPTIONS["2_testsrc2.mp4"]] and info["num_chunks"] == 2
  for name in ("sample_00.mp4", "sample_00.gif", "contact_sheet.png", "samples.npz", "metrics.json"):
    assert (out / name).is_file(), name
  assert json.loads((out / "metrics.json").read_text())["num_videos"] == 1


def test_hidden_sprites_data_set_stores_visibility(config, tmp_path):
  c = config.copy_and_resolve_references()
  c.data.hide_frames = 5
  assert builder.sprites_config_from(c).name == builder.sprites_config_from(config).name + "-h5"
  builder.build_dataset(c, tmp_path)
  ex = builder.data_source(c, tmp_path, "train")[0]
  g = builder.sprites_config_from(c)
  v = sprites.generate_video(builder.example_seed("train", 0), num_frames=g.num_frames, height=g.height,
                             width=g.width, num_sprites=g.num_sprites, sprite_size=g.sprite_size,
                             max_speed=g.max_speed, caption_detail=g.caption_detail, hide_frames=5)
  np.testing.assert_array_equal(ex["visible"], v["visible"])
  np.testing.assert_array_equal(ex["frames"], v["frames"])
  assert (~ex["visible"]).sum() == 5 * c.data.num_sprites
