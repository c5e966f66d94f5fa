"""Weight-free proxies of VBench's subject and background consistency.

VBench scores a video by
  (1 / (T - 1)) * sum_{t=2..T} (max(0, cos(f_1, f_t)) + max(0, cos(f_{t-1}, f_t))) / 2
with f_t the frame's DINO features (subject) or CLIP features (background). We keep the formula and swap
the learned features for ones computed from pixels, so no weights are downloaded:
- subject: a joint RGB colour histogram (8 bins per channel, 512 dims) of the frame's foreground pixels,
  i.e. pixels farther than `threshold` (default 40, L2 in RGB [0, 255]) from the frame's median colour,
  which for sprite videos is the background. A frame without foreground has a zero feature; we define
  cos(0, 0) = 1 (both frames agree that there is no subject) and cos(0, x) = 0.
- background: the frame with its foreground pixels (as above) replaced by the median colour, mean-pooled
  to a 4x4 grid (cv2 INTER_AREA) and flattened to 48 values in [0, 255]. Removing the foreground matters
  for small frames, where one sprite would otherwise dominate a grid cell.
These are proxies: they react to colour and layout changes the way the VBench scores are meant to, but
their values are not comparable with VBench's DINO/CLIP numbers (pixel features of non-negative values
give high cosines by construction, so look at differences between models, not absolute levels).
"""
import cv2
import numpy as np

HIST_BINS = 8
DEFAULT_FOREGROUND_THRESHOLD = 40.0
BACKGROUND_GRID = 4


def vbench_consistency(features):
  """VBench's consistency score from per-frame features [T, D] (float). 1.0 for T == 1.

  Zero vectors are allowed: cos(0, 0) = 1, cos(0, x) = 0.
  """
  features = np.asarray(features, np.float64)
  if features.ndim != 2 or len(features) < 1:
    raise ValueError(f"features must be [T, D] with T >= 1, got shape {features.shape}")
  if len(features) == 1:
    return 1.0
  norms = np.linalg.norm(features, axis=1)
  empty = norms == 0
  unit = features / np.where(empty, 1.0, norms)[:, None]

  def cosine(i, j):
    if empty[i] or empty[j]:
      return 1.0 if (empty[i] and empty[j]) else 0.0
    return max(0.0, float(unit[i] @ unit[j]))

  scores = [(cosine(0, t) + cosine(t - 1, t)) / 2.0 for t in range(1, len(features))]
  return float(np.mean(scores))


def foreground_mask(frame, threshold=DEFAULT_FOREGROUND_THRESHOLD):
  """[H, W] bool: pixels of uint8 [H, W, 3] farther than `threshold` from the frame's median colour."""
  background = np.median(frame.reshape(-1, 3), axis=0)
  distance = np.linalg.norm(frame.astype(np.float32) - background.astype(np.float32), axis=-1)
  return distance > threshold


def subject_features(frames, threshold=DEFAULT_FOREGROUND_THRESHOLD):
  """uint8 [T, H, W, 3] -> [T, HIST_BINS**3] normalised foreground colour histograms (zeros if none)."""
  features = np.zeros((len(frames), HIST_BINS ** 3), np.float64)
  for t, frame in enumerate(frames):
    pixels = frame[foreground_mask(frame, threshold)]
    if len(pixels) == 0:
      continue
    bins = (pixels.astype(np.int64) * HIST_BINS) // 256
    flat = (bins[:, 0] * HIST_BINS + bins[:, 1]) * HIST_BINS + bins[:, 2]
    features[t] = np.bincount(flat, minlength=HIST_BINS ** 3) / len(pixels)
  return features


def background_features(frames, grid=BACKGROUND_GRID, threshold=DEFAULT_FOREGROUND_THRESHOLD):
  """uint8 [T, H, W, 3] -> [T, grid * grid * 3]: frames with foreground pixels set to the frame's median
  colour, mean-pooled to grid x grid (values in [0, 255])."""
  features = []
  for frame in frames:
    background_only = frame.copy()
    background_only[foreground_mask(frame, threshold)] = np.median(frame.reshape(-1, 3), axis=0)
    features.append(cv2.resize(background_only, (grid, grid), interpolation=cv2.INTER_AREA).reshape(-1))
  return np.stack(features).astype(np.float64)


def _check(frames):
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  return frames


def subject_consistency_proxy(frames, threshold=DEFAULT_FOREGROUND_THRESHOLD):
  """VBench subject-consistency formula on foreground colour histograms; float in [0, 1], higher is better."""
  return vbench_consistency(subject_features(_check(frames), threshold))


def background_consistency_proxy(frames, grid=BACKGROUND_GRID, threshold=DEFAULT_FOREGROUND_THRESHOLD):
  """VBench background-consistency formula on 4x4 mean-pooled, foreground-removed frames; float in
  [0, 1], higher is better."""
  return vbench_consistency(background_features(_check(frames), grid, threshold))
