"""The data engine of the video_folder builder (vin_jax/data/engine.py): scene cuts, motion, captions, broken
files and the build report, on tiny videos made here with ffmpeg (32x32, 8 fps, clips of 4 frames)."""
import json
import pathlib

import numpy as np
import pytest

from vin_jax import config as config_lib
from vin_jax.data import builder, engine

SIZE, FPS, CLIP = 32, 8, 4
ENGINE = dict(num_frames=CLIP, height=SIZE, width=SIZE, fps=float(FPS), scene_threshold=27.0)


def scene(seed, color, frames, dy=0, dx=1):
  """uint8 [frames, SIZE, SIZE, 3]: a smooth random texture tinted `color`, moving (dy, dx) pixels a frame.

  A texture, not a stripe pattern: optical flow sees the motion of a texture (a 1D pattern has none it can see).
  """
  import cv2
  rng = np.random.default_rng(seed)
  side = 2 * SIZE + frames
  texture = cv2.GaussianBlur(rng.random((side, side)).astype(np.float32), (0, 0), 2.0)
  texture = (texture - texture.min()) / (texture.max() - texture.min())
  o = SIZE // 2 + frames  # crops from the far corner towards (0, 0): the content moves by (+dy, +dx)
  crops = [texture[o - dy * t:o - dy * t + SIZE, o - dx * t:o - dx * t + SIZE] for t in range(frames)]
  return ((0.2 + 0.8 * np.stack(crops)[..., None]) * np.array(color, np.float32)).round().astype(np.uint8)


def write_mp4(path, frames, *, faststart=False):
  """Lossless H.264 at FPS; `faststart` puts the index (moov) first, so that a file cut short still opens."""
  import imageio_ffmpeg
  path.parent.mkdir(parents=True, exist_ok=True)
  extra = ["-movflags", "+faststart"] if faststart else []
  writer = imageio_ffmpeg.write_frames(str(path), frames.shape[2:0:-1], fps=FPS, codec="libx264",
                                       pix_fmt_out="yuv420p", quality=None, macro_block_size=16,
                                       output_params=["-crf", "0", *extra], ffmpeg_log_level="error")
  writer.send(None)
  for frame in frames:
    writer.send(np.ascontiguousarray(frame))
  writer.close()
  return path


def cut_video(path):
  """6 frames of a blue texture moving right, then a hard cut to 6 of an orange one moving down."""
  return write_mp4(path, np.concatenate([scene(1, (60, 110, 255), 6), scene(2, (255, 150, 30), 6, dy=1, dx=0)]))


def moving_video(path, seed=3, frames=12):
  return write_mp4(path, scene(seed, (80, 220, 90), frames))


def still_video(path):
  return write_mp4(path, scene(4, (80, 220, 90), 12, dx=0))


def truncated_video(path):
  """48 frames (12 clips), cut to half its bytes: it opens (faststart), but decoding breaks off."""
  write_mp4(path, scene(5, (200, 60, 200), 48), faststart=True)
  data = path.read_bytes()
  path.write_bytes(data[:len(data) // 2])
  return path


def unreadable_video(path):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(np.random.default_rng(0).bytes(5000))
  return path


def run_clips(path, **settings):
  report = engine.SplitReport()
  clips = list(engine.clips(path, **{**ENGINE, "split_scenes": True, "min_motion": 0.0, **settings},
                            report=report))
  return clips, report


def folder_config(video_dir, **data):
  config = config_lib.load_config_file(pathlib.Path(__file__).parents[2] / "configs" / "tiny.py", "test")
  config.data.name = "video_folder"
  config.data.video_dir = str(video_dir)
  config.data.num_frames, config.data.height, config.data.width, config.data.fps = CLIP, SIZE, SIZE, float(FPS)
  config.data.bucket_chunks, config.data.bucket_weights = (1,), (1.0,)
  config.data.validation_clips = 1
  for field, value in data.items():
    config.data[field] = value
  return config


def clips_of(source):
  return [(source[i]["source"].decode(), int(source[i]["start_frame"])) for i in range(len(source))]


# ----------------------------------------------------------------------------------------------
# The engine on one video.

def test_no_clip_crosses_a_hard_cut(tmp_path):
  path = cut_video(tmp_path / "cut.mp4")
  clips, report = run_clips(path)
  assert [c.start_frame for c in clips] == [0, 6]  # one clip of each scene; frames 4-5 and 10-11 are left over
  assert report.scene_cuts == 1 and report.clips_kept == 2
  assert report.dropped == {"static": 0, "tail": 1, "scene_tail": 1, "truncated": 0}
  frames = np.stack(list(engine.decoded_frames(path, SIZE, SIZE, FPS)))
  np.testing.assert_array_equal(clips[1].frames, frames[6:10])
  assert clips[0].frames[..., 2].mean() > clips[0].frames[..., 0].mean()  # blue
  assert clips[1].frames[..., 0].mean() > clips[1].frames[..., 2].mean()  # orange
  # Without scene splitting the clip at frame 4 holds both scenes.
  unsplit, report = run_clips(path, split_scenes=False)
  assert [c.start_frame for c in unsplit] == [0, 4, 8] and report.scene_cuts == 0


def test_min_motion_drops_static_clips(tmp_path):
  still, moving = still_video(tmp_path / "still.mp4"), moving_video(tmp_path / "moving.mp4")
  clips, report = run_clips(still, min_motion=0.5)
  assert clips == [] and report.dropped["static"] == 3 and report.clips_kept == 0
  assert max(report.motion) < 0.1
  clips, report = run_clips(moving, min_motion=0.5)
  assert [c.start_frame for c in clips] == [0, 4, 8] and report.dropped["static"] == 0
  for clip in clips:  # the texture moves 1 pixel a frame
    assert 0.8 < clip.motion < 1.2 and clip.motion == engine.motion_score(clip.frames)
  clips, report = run_clips(still, min_motion=0.0)  # 0 keeps all
  assert len(clips) == 3 and report.dropped["static"] == 0


def test_broken_files_are_skipped_or_truncated(tmp_path):
  clips, report = run_clips(unreadable_video(tmp_path / "garbage.mp4"))
  assert clips == [] and [s["file"] for s in report.skipped] == ["garbage.mp4"] and not report.truncated
  clips, report = run_clips(truncated_video(tmp_path / "half.mp4"))
  assert not report.skipped and [t["file"] for t in report.truncated] == ["half.mp4"]
  kept = report.truncated[0]["clips_kept"]
  assert 1 <= kept < 12 and len(clips) == kept == report.clips_kept
  assert [c.start_frame for c in clips] == [CLIP * k for k in range(kept)]
  assert report.dropped["truncated"] >= 1  # the clip before the break may hold its damaged frames


# ----------------------------------------------------------------------------------------------
# The builder: the report, broken files, captions.

def test_build_report(tmp_path, monkeypatch, capsys):
  videos = tmp_path / "videos"
  cut_video(videos / "a_cut.mp4")
  still_video(videos / "b_still.mp4")
  unreadable_video(videos / "c_garbage.mp4")
  truncated_video(videos / "d_truncated.mp4")
  moving_video(videos / "e_moving.mp4")
  config = folder_config(videos, min_motion=0.5)
  written = []
  write = engine.BuildReport.write
  monkeypatch.setattr(engine.BuildReport, "write", lambda self, d: written.append(pathlib.Path(d)) or write(self, d))

  built = builder.build_dataset(config, tmp_path / "data")
  path = pathlib.Path(built.data_dir) / engine.REPORT_NAME
  # Written into tfds's temporary directory, which then became the data dir along with the records.
  assert len(written) == 1 and written[0] != pathlib.Path(built.data_dir) and not written[0].exists()
  assert written[0].parent == pathlib.Path(built.data_dir).parent and path.is_file()

  report = json.loads(path.read_text())
  train, validation = report["splits"]["train"], report["splits"]["validation"]
  truncated_kept = train["truncated"][0]["clips_kept"]
  assert clips_of(builder.data_source(config, tmp_path / "data", "train")) == (
      [("a_cut.mp4", 0), ("a_cut.mp4", 6)] + [("d_truncated.mp4", CLIP * k) for k in range(truncated_kept)])
  assert clips_of(builder.data_source(config, tmp_path / "data", "validation")) == [
      ("e_moving.mp4", 0), ("e_moving.mp4", 4), ("e_moving.mp4", 8)]
  assert train["files"] == 4 and validation["files"] == 1
  assert train["scene_cuts"] == 1 and report["total"]["scene_cuts"] == 1
  assert train["dropped"]["static"] == 3 and train["dropped"]["scene_tail"] == 1
  assert [s["file"] for s in train["skipped"]] == ["c_garbage.mp4"] and train["skipped"][0]["error"]
  assert [t["file"] for t in train["truncated"]] == ["d_truncated.mp4"] and 1 <= truncated_kept < 12
  assert train["clips_kept"] == 2 + truncated_kept and validation["clips_kept"] == 3
  assert report["total"]["clips_kept"] == 5 + truncated_kept
  assert report["settings"]["min_motion"] == 0.5 and report["settings"]["split_scenes"] is True
  assert train["captions"] == {"index": 0, "sidecar": 0, "none": 4} and report["captions_unmatched"] == []
  assert set(train["motion_quantiles"]) == {"0.0", "0.1", "0.5", "0.9", "1.0"}
  # The user sees the summary.
  out = capsys.readouterr().out
  assert f"video_folder: {5 + truncated_kept} clips kept (train {2 + truncated_kept}, validation 3)" in out
  assert "c_garbage.mp4" in out and "1 truncated (d_truncated.mp4" in out


def test_splits_left_without_a_clip_raise(tmp_path):
  first_broken = tmp_path / "first_broken"
  unreadable_video(first_broken / "a.mp4")
  moving_video(first_broken / "b.mp4")
  with pytest.raises(ValueError, match=r"(?s)train videos.*1 files skipped \(a.mp4.*data.validation_clips=1"):
    builder.build_dataset(folder_config(first_broken), tmp_path / "data")
  last_broken = tmp_path / "last_broken"
  moving_video(last_broken / "a.mp4")
  truncated_video(last_broken / "b.mp4")
  (last_broken / "b.mp4").write_bytes((last_broken / "b.mp4").read_bytes()[:100])  # not even a clip left
  with pytest.raises(ValueError, match=r"data.validation_clips=1.*validation split would be empty.*broken: b.mp4"):
    builder.build_dataset(folder_config(last_broken), tmp_path / "data")


INDEX = {"one.mp4": "index one", "sub/two.mp4": "index two, with a comma", "ghost.mp4": "no such video"}


def write_index(path):
  if path.suffix == ".jsonl":
    path.write_text("".join(json.dumps({"path": k, "caption": v}) + "\n" for k, v in INDEX.items()) + "\n")
  else:
    path.write_text("path,caption\n" + "".join(f'./{k},"{v}"\n' for k, v in INDEX.items()))
  return path


@pytest.fixture(scope="module")
def caption_videos(tmp_path_factory):
  root = tmp_path_factory.mktemp("caption_videos")
  for seed, name in enumerate(("one", "sub/two", "three")):
    path = moving_video(root / f"{name}.mp4", seed=seed, frames=CLIP)
    path.with_suffix(".txt").write_text(f"sidecar {path.stem}\n")
  return root


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_captions_index_wins_over_the_sidecar(caption_videos, tmp_path, suffix):
  index = write_index(tmp_path / f"captions{suffix}")
  config = folder_config(caption_videos, captions_file=str(index))
  built = builder.build_dataset(config, tmp_path / "data")
  train = builder.data_source(config, tmp_path / "data", "train")
  validation = builder.data_source(config, tmp_path / "data", "validation")
  # Listing order: one.mp4, sub/two.mp4, three.mp4; validation takes the last.
  assert {train[i]["source"].decode(): train[i]["caption"].decode() for i in range(len(train))} == {
      "one.mp4": "index one", "sub/two.mp4": "index two, with a comma"}
  assert clips_of(validation) == [("three.mp4", 0)] and validation[0]["caption"].decode() == "sidecar three"
  report = json.loads((pathlib.Path(built.data_dir) / engine.REPORT_NAME).read_text())
  assert report["captions_unmatched"] == ["ghost.mp4"]
  assert report["splits"]["train"]["captions"] == {"index": 2, "sidecar": 0, "none": 0}
  assert report["splits"]["validation"]["captions"] == {"index": 0, "sidecar": 1, "none": 0}
  # Another caption in the index is another data set.
  name = builder.video_folder_config_from(config).name
  index.write_text(index.read_text().replace("index one", "index one, changed"))
  assert builder.video_folder_config_from(config).name != name


@pytest.mark.parametrize("name, text, line", [
    ("bad.jsonl", '{"path": "a.mp4", "caption": "a"}\n{"path": "b.mp4", "caption": \n', 2),
    ("bad.jsonl", '{"path": "a.mp4", "caption": "a"}\n\n{"path": "b.mp4"}\n', 3),
    ("bad.jsonl", '{"path": "a.mp4", "caption": "a"}\n{"path": "./a.mp4", "caption": "again"}\n', 2),
    ("bad.csv", "video,text\na.mp4,a\n", 1),
    ("bad.csv", "path,caption\na.mp4,a\nb.mp4,b,c\n", 3),
])
def test_malformed_index_names_the_file_and_line(tmp_path, name, text, line):
  path = tmp_path / name
  path.write_text(text)
  with pytest.raises(ValueError, match=rf"data.captions_file='[^']*{name}', line {line}:"):
    engine.load_captions(path, tmp_path)


def test_build_with_a_malformed_index_fails(caption_videos, tmp_path):
  index = tmp_path / "captions.jsonl"
  index.write_text('{"path": "one.mp4", "caption": "fine"}\nnot json\n')
  with pytest.raises(ValueError, match=r"captions.jsonl', line 2: not JSON"):
    builder.build_dataset(folder_config(caption_videos, captions_file=str(index)), tmp_path / "data")


# ----------------------------------------------------------------------------------------------
# Config.

def test_engine_settings_choose_the_directory(caption_videos, tmp_path):
  name = builder.video_folder_config_from(folder_config(caption_videos)).name
  index = write_index(tmp_path / "captions.jsonl")
  for field, value in (("split_scenes", False), ("scene_threshold", 20.0), ("min_motion", 0.5),
                       ("captions_file", str(index))):
    assert builder.video_folder_config_from(folder_config(caption_videos, **{field: value})).name != name, field


def test_defaults_validate(tmp_path):
  config = folder_config(tmp_path)
  assert (config.data.split_scenes, config.data.scene_threshold, config.data.min_motion,
          config.data.captions_file) == (True, 27.0, 0.0, "")
  config_lib.validate(config, num_devices=1, purpose="data")
  config_lib.validate(folder_config(tmp_path, captions_file=str(write_index(tmp_path / "c.csv"))), 1,
                      purpose="data")


@pytest.mark.parametrize("field, value", [
    ("split_scenes", "yes"), ("scene_threshold", 0.0), ("scene_threshold", -3.0), ("scene_threshold", float("nan")),
    ("min_motion", -0.1), ("min_motion", float("nan")), ("captions_file", "captions.txt"),
    ("captions_file", "/no/such/captions.jsonl")])
def test_engine_settings_are_validated(tmp_path, field, value):
  config = folder_config(tmp_path)
  with config.ignore_type():
    config.data[field] = value
  with pytest.raises(config_lib.ConfigError, match=f"^data.{field}="):
    config_lib.validate(config, num_devices=1, purpose="data")
