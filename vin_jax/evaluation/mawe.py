"""MAWE-DIS: StreamingT2V's motion-aware warp error, with OpenCV DIS optical flow instead of RAFT.

StreamingT2V (Henschel et al., CVPR 2025, appendix "MAWE Definition") defines
  MAWE(V) = W(V) / (c * OFS(V)),
W(V) the mean warp error (squared pixel distance from a frame to its warped neighbour, occluded pixels
excluded) and OFS(V) the mean optical-flow magnitude between consecutive frames; low is good: consistent
*and* moving. The VIN paper reports MAWE with this definition. Their reference code (`mawe.py`, RAFT) resizes
every video to 720x720, takes W as the mean over valid pixels *and channels* of the squared difference of
[0, 255] values, OFS as the mean flow magnitude in pixels (not squared, although the paper text says
squared), and c = 9.5.

What we do, and where it differs (so numbers are *not* comparable with published MAWE values):
- Flow: OpenCV DIS (`cv2.DISOpticalFlow_create`, MEDIUM preset) on grey frames, no learned weights.
- Frames are resized (bilinear) to `flow_size` x `flow_size` (default 256) before flow, as the reference
  resizes to 720x720; this also makes tiny 16x16 videos work. Flow magnitudes are then multiplied by
  720 / flow_size, i.e. reported in pixels of a 720x720 frame, so that c = 9.5 keeps its role.
- Warping: frame t+1 is warped back onto frame t along the forward flow (`cv2.remap`, bilinear).
  Occluded pixels are found by the forward-backward consistency check of Sundaram et al. (2010), as in the
  warp error of Lai et al. (2018) that StreamingT2V cites:
  |F(x) + B(x + F(x))|^2 > 0.01 (|F(x)|^2 + |B(x + F(x))|^2) + 0.5, plus pixels warped from outside the frame.
  (The reference code instead forward-splats frame t and drops pixels no source lands on.)
- W: mean over non-occluded pixels and the 3 RGB channels of the squared difference, values in [0, 255].
- Aggregation: the paper's ratio of video means, W(V) / (c * (OFS(V) + flow_floor)), rather than the
  reference code's mean of per-pair ratios, which is undefined for any pair without motion. The additive
  `flow_floor` (0.1 px at 720x720, far below visible motion) makes a static video score W / (c * 0.1) = 0
  instead of 0 / 0.
Upscaling tiny frames smooths them, so W (and MAWE) depends on flow_size: compare videos only at the same
size and flow_size (e.g. a 16x16 sprite video gave MAWE 0.05 at flow_size 256 and 0.12 at 128).
"""
import cv2
import numpy as np

MAWE_C = 9.5  # StreamingT2V reference code's default `coeff`.
REFERENCE_SIZE = 720  # StreamingT2V resizes videos to 720x720 before flow.
DEFAULT_FLOW_SIZE = 256
DEFAULT_FLOW_FLOOR = 0.1  # pixels per frame at REFERENCE_SIZE.
# Forward-backward consistency thresholds (Sundaram et al. 2010; Lai et al. 2018).
_FB_ALPHA = 0.01
_FB_BETA = 0.5


def _resize_video(frames, size):
  """uint8 [T, H, W, 3] -> float32 RGB [T, size, size, 3] and uint8 grey [T, size, size]."""
  rgb = np.stack([cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR) for frame in frames])
  grey = np.stack([cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in rgb])
  return rgb.astype(np.float32), grey


def _sample(image, map_x, map_y):
  """Bilinear lookup image[y + ..., x + ...] at float maps [S, S]; zeros outside the frame."""
  return cv2.remap(image, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                   borderValue=0)


def pair_warp_error(rgb_t, rgb_next, flow_fwd, flow_bwd):
  """Warp error of one frame pair at the working size.

  rgb_*: float32 [S, S, 3] in [0, 255]; flow_fwd (t -> t+1), flow_bwd (t+1 -> t): float32 [S, S, 2] (dx, dy).
  Returns (mean squared error over valid pixels and channels, fraction of pixels occluded).
  """
  size_h, size_w = flow_fwd.shape[:2]
  grid_x, grid_y = np.meshgrid(np.arange(size_w, dtype=np.float32), np.arange(size_h, dtype=np.float32))
  map_x = grid_x + flow_fwd[..., 0]
  map_y = grid_y + flow_fwd[..., 1]
  warped_next = _sample(rgb_next, map_x, map_y)
  bwd_at_target = _sample(flow_bwd, map_x, map_y)
  round_trip = flow_fwd + bwd_at_target
  consistent = (np.sum(round_trip ** 2, -1)
                <= _FB_ALPHA * (np.sum(flow_fwd ** 2, -1) + np.sum(bwd_at_target ** 2, -1)) + _FB_BETA)
  inside = (map_x >= 0) & (map_x <= size_w - 1) & (map_y >= 0) & (map_y <= size_h - 1)
  valid = consistent & inside
  occluded_fraction = 1.0 - float(valid.mean())
  if not valid.any():
    # Nothing trustworthy to compare: count the whole frame, like the reference code does.
    valid = np.ones_like(valid)
  squared = (warped_next - rgb_t) ** 2
  return float(squared[valid].mean()), occluded_fraction


def mawe_components(frames, *, c=MAWE_C, flow_size=DEFAULT_FLOW_SIZE, flow_floor=DEFAULT_FLOW_FLOOR):
  """MAWE-DIS of one video and its parts.

  frames: uint8 [T, H, W, 3], T >= 2, any H, W (resized to flow_size x flow_size).
  Returns {"mawe": W / (c * (OFS + flow_floor)), "warp_error": W (mean squared [0, 255] error over
  non-occluded pixels and channels, averaged over pairs), "flow_score": OFS (mean flow magnitude in
  pixels of a 720x720 frame, averaged over pairs), "occluded_fraction": mean fraction of occluded pixels}.
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if frames.shape[0] < 2:
    raise ValueError(f"MAWE needs at least 2 frames, got T={frames.shape[0]}")
  if int(flow_size) < 32:
    raise ValueError(f"flow_size={flow_size} is too small for DIS flow; use >= 32 (default 256)")
  if not c > 0:
    raise ValueError(f"c={c!r} must be positive")
  rgb, grey = _resize_video(frames, int(flow_size))
  to_reference_px = REFERENCE_SIZE / float(flow_size)
  dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
  warp_errors, flow_scores, occluded = [], [], []
  for t in range(len(frames) - 1):
    flow_fwd = dis.calc(grey[t], grey[t + 1], None)
    flow_bwd = dis.calc(grey[t + 1], grey[t], None)
    error, occluded_fraction = pair_warp_error(rgb[t], rgb[t + 1], flow_fwd, flow_bwd)
    warp_errors.append(error)
    occluded.append(occluded_fraction)
    flow_scores.append(float(np.linalg.norm(flow_fwd, axis=-1).mean()) * to_reference_px)
  warp_error = float(np.mean(warp_errors))
  flow_score = float(np.mean(flow_scores))
  return {
      "mawe": warp_error / (c * (flow_score + flow_floor)),
      "warp_error": warp_error,
      "flow_score": flow_score,
      "occluded_fraction": float(np.mean(occluded)),
  }


def mawe_dis(frames, **kwargs):
  """MAWE-DIS of one video (float, lower is better); see `mawe_components` for arguments."""
  return mawe_components(frames, **kwargs)["mawe"]
