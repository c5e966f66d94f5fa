"""MP4 / GIF / contact sheet writers: shapes, sizes, and no temporary files left behind."""
import os

import numpy as np
import pytest
from PIL import Image

from vin_jax import video_io


def _video(num_frames=12, height=16, width=16, seed=0):
  # Flat 4x4 blocks so chroma subsampling barely changes the colours.
  coarse = np.random.RandomState(seed).randint(0, 256, (num_frames, height // 4, width // 4, 3))
  return np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2).astype(np.uint8)


def test_mp4_round_trip(tmp_path):
  frames = _video()
  path = tmp_path / "v.mp4"
  video_io.write_mp4(path, frames, fps=8, scale=4)
  read, fps = video_io.read_video(path, return_fps=True)
  assert read.shape == (12, 64, 64, 3) and read.dtype == np.uint8
  assert fps == pytest.approx(8)
  assert np.abs(read[:, ::4, ::4].astype(int) - frames).mean() < 12
  assert os.listdir(tmp_path) == ["v.mp4"]


def test_mp4_pads_odd_sizes_to_macro_blocks(tmp_path):
  frames = np.zeros((3, 10, 6, 3), np.uint8)
  video_io.write_mp4(tmp_path / "odd.mp4", frames, fps=4, scale=3)
  assert video_io.read_video(tmp_path / "odd.mp4").shape == (3, 32, 32, 3)


def test_gif_written(tmp_path):
  frames = _video(6)
  video_io.write_gif(tmp_path / "v.gif", frames, fps=10, scale=2)
  read = video_io.read_video(tmp_path / "v.gif")
  assert read.shape == (6, 32, 32, 3)
  # Pillow merges repeated frames; reading restores them from the stored nominal delay.
  still = np.repeat(frames[:2], 3, axis=0)
  video_io.write_gif(tmp_path / "still.gif", still, fps=10)
  read, fps = video_io.read_video(tmp_path / "still.gif", return_fps=True)
  assert fps == pytest.approx(10) and (read == still).all()
  assert sorted(os.listdir(tmp_path)) == ["still.gif", "v.gif"]


def test_contact_sheet_size_and_chunk_marks(tmp_path):
  videos = np.stack([_video(16, seed=1), _video(16, seed=2), _video(16, seed=3)])
  size = video_io.contact_sheet(tmp_path / "sheet.png", videos, num_frames_shown=8, scale=2, chunk_frames=4)
  expected = video_io.contact_sheet_size(3, 8, 16, 16, scale=2, chunk_frames=4)
  assert size == expected == (3 * (32 + 2) + 4 * 2, 8 * 32 + 9 * 2)
  with Image.open(tmp_path / "sheet.png") as image:
    assert (image.height, image.width) == expected
    sheet = np.asarray(image.convert("RGB"))
  # Shown frames 0, 2, 4, ...: the separator before frame 4 (column 2) is red.
  left = 2 + 2 * (32 + 2)
  assert (sheet[10, left - 2:left] == (230, 30, 30)).all()
  assert os.listdir(tmp_path) == ["sheet.png"]


def test_failed_write_leaves_no_temp_and_keeps_old_file(tmp_path):
  path = tmp_path / "keep.txt"
  path.write_text("old")
  with pytest.raises(RuntimeError):
    with video_io.atomic_output(path) as tmp:
      with open(tmp, "w") as f:
        f.write("half")
      raise RuntimeError("preempted")
  assert path.read_text() == "old"
  assert os.listdir(tmp_path) == ["keep.txt"]


def test_bad_input_is_named(tmp_path):
  with pytest.raises(ValueError, match="uint8"):
    video_io.write_mp4(tmp_path / "x.mp4", np.zeros((2, 8, 8, 3), np.float32), fps=8)
  with pytest.raises(ValueError, match="scale"):
    video_io.write_gif(tmp_path / "x.gif", np.zeros((2, 8, 8, 3), np.uint8), fps=8, scale=0)
  with pytest.raises(FileNotFoundError, match="nope.mp4"):
    video_io.read_video(tmp_path / "nope.mp4")
  assert os.listdir(tmp_path) == []
