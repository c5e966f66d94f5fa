"""Scene cuts (StreamingT2V's SCuts): PySceneDetect `AdaptiveDetector` with default parameters.

Frames are fed from memory through a numpy-backed `VideoStream`, so `SceneManager` runs exactly as it does
on a file (same auto-downscaling, same detector calls) without encoding a temporary MP4.
The count is the number of detected cuts (= number of scenes - 1), 0 for a single shot; lower is better
for a video that should be one continuous shot.
Defaults in scenedetect 0.7.2: adaptive_threshold=3.0, min_scene_len=15 frames, window_width=2,
min_content_val=15.0: two cuts closer than 15 frames count once, and a video shorter than about
2 * window_width + 1 frames cannot show a cut at all.
"""
import logging
from fractions import Fraction

import numpy as np
from scenedetect import AdaptiveDetector, FrameTimecode, SceneManager
from scenedetect.common import Timecode
from scenedetect.video_stream import VideoStream

# "Detecting scenes..." at INFO for every video would drown the evaluation's own output.
logging.getLogger("pyscenedetect").setLevel(logging.WARNING)

# AdaptiveDetector's colour statistics are resolution independent, but smaller frames are upscaled
# (nearest neighbour, which adds no new colours) so that any size-dependent default (edge kernel) is sane.
MIN_DETECT_SIZE = 64


class ArrayVideoStream(VideoStream):
  """A scenedetect VideoStream over uint8 RGB frames [T, H, W, 3] held in memory (yields BGR)."""

  BACKEND_NAME = "numpy_array"

  def __init__(self, frames_rgb, fps, name="array"):
    self._frames_bgr = np.ascontiguousarray(frames_rgb[..., ::-1])
    self._rate = Fraction(fps).limit_denominator(1001)
    self._name = name
    self._num_read = 0

  @property
  def path(self):
    return self._name

  @property
  def name(self):
    return self._name

  @property
  def is_seekable(self):
    return True

  @property
  def frame_rate(self):
    return self._rate

  @property
  def duration(self):
    return FrameTimecode(len(self._frames_bgr), fps=self._rate)

  @property
  def frame_size(self):
    return (self._frames_bgr.shape[2], self._frames_bgr.shape[1])

  @property
  def aspect_ratio(self):
    return 1.0

  @property
  def position(self):
    if self._num_read < 1:
      return self.base_timecode
    # Presentation time of the last frame read (frame 1 is at time 0), as the OpenCV backend reports it.
    timecode = Timecode(pts=(self._num_read - 1) * self._rate.denominator,
                        time_base=Fraction(1, self._rate.numerator))
    return FrameTimecode(timecode=timecode, fps=self._rate)

  @property
  def position_ms(self):
    return 0.0 if self._num_read < 1 else 1000.0 * (self._num_read - 1) / float(self._rate)

  @property
  def frame_number(self):
    return self._num_read

  def read(self, decode=True):
    if self._num_read >= len(self._frames_bgr):
      return False
    self._num_read += 1
    return self._frames_bgr[self._num_read - 1] if decode else True

  def reset(self):
    self._num_read = 0

  def seek(self, target):
    if not isinstance(target, FrameTimecode):
      target = FrameTimecode(target, fps=self._rate)
    self._num_read = int(min(max(target.frame_num, 0), len(self._frames_bgr)))


def _upscale_small(frames):
  """uint8 [T, H, W, 3] -> nearest-neighbour upscaled so that min(H, W) >= MIN_DETECT_SIZE."""
  factor = -(-MIN_DETECT_SIZE // min(frames.shape[1:3]))
  if factor <= 1:
    return frames
  return np.repeat(np.repeat(frames, factor, axis=1), factor, axis=2)


def scene_cut_frames(frames, fps):
  """Frame indices at which AdaptiveDetector (default parameters) starts a new scene.

  frames: uint8 [T, H, W, 3] RGB; fps: frames per second (used for timecodes only).
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if not fps > 0:
    raise ValueError(f"fps={fps!r} must be positive")
  manager = SceneManager()
  manager.add_detector(AdaptiveDetector())
  manager.detect_scenes(video=ArrayVideoStream(_upscale_small(frames), fps))
  scenes = manager.get_scene_list(start_in_scene=True)  # [(start, end)], one scene if no cut
  return [int(start.frame_num) for start, _ in scenes[1:]]


def count_scene_cuts(frames, fps):
  """Number of scene cuts in a video (number of scenes - 1; 0 for one continuous shot)."""
  return len(scene_cut_frames(frames, fps))

