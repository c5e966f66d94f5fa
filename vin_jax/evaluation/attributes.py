"""Attribute (identity) consistency across chunks for the synthetic sprite videos; no learned features.

Per frame, the background is the frame's median colour. A pixel is foreground if it is farther than
`FOREGROUND_DISTANCE` from it; it is then explained as a blend `background + alpha * (colour - background)`
of each palette colour (faint or half-transparent sprites, as early samples are, still get their hue), and
assigned to the colour with the smallest residual, if alpha >= MIN_ALPHA and the residual <= MAX_RESIDUAL
(otherwise it is noise and ignored). Per chunk of `chunk_frames` pixel frames, the pixel counts give the
dominant colour (the identity of a single sprite) and the set of colours holding >= MIN_SET_SHARE of the
foreground (several sprites, best effort). The shape is the majority vote over the chunk's frames of
`blob_shape` on the largest blob of the dominant colour (best effort: sprites touching each other or the
border can be misread).
A chunk without foreground has identity None, which never agrees with anything (a blank video is not
"consistent").
"""
import cv2
import numpy as np

from vin_jax.data.sprites import COLOR_NAMES, PALETTE, SHAPES

FOREGROUND_DISTANCE = 40.0  # L2 in RGB [0, 255] from the frame's median colour.
MIN_ALPHA = 0.3
MAX_RESIDUAL = 60.0
MIN_SET_SHARE = 0.2
MIN_CHUNK_PIXELS = 2
SQUARE_FILL = 0.95
TRIANGLE_ASYMMETRY = 0.15
_PALETTE_RGB = np.array([PALETTE[name] for name in COLOR_NAMES], np.float32)  # [K, 3]


def classify_pixels(frames):
  """uint8 [T, H, W, 3] -> int [T, H, W]: index into COLOR_NAMES, or -1 (background / unexplained)."""
  frames_f = frames.astype(np.float32)
  background = np.median(frames_f.reshape(len(frames), -1, 3), axis=1)  # [T, 3]
  offset = frames_f - background[:, None, None, :]  # [T, H, W, 3]
  foreground = np.linalg.norm(offset, axis=-1) > FOREGROUND_DISTANCE
  direction = _PALETTE_RGB[None, :, :] - background[:, None, :]  # [T, K, 3]
  length_sq = np.maximum(np.sum(direction ** 2, -1), 1e-6)  # [T, K]
  alpha = np.einsum("thwc,tkc->thwk", offset, direction) / length_sq[:, None, None, :]
  alpha = np.clip(alpha, 0.0, 1.0)  # [T, H, W, K]
  residual = np.linalg.norm(
      offset[..., None, :] - alpha[..., None] * direction[:, None, None, :, :], axis=-1)  # [T, H, W, K]
  best = np.argmin(residual, axis=-1)
  best_alpha = np.take_along_axis(alpha, best[..., None], -1)[..., 0]
  best_residual = np.take_along_axis(residual, best[..., None], -1)[..., 0]
  ok = foreground & (best_alpha >= MIN_ALPHA) & (best_residual <= MAX_RESIDUAL)
  return np.where(ok, best, -1)


def blob_shape(mask):
  """Shape name of the largest 8-connected blob of bool [H, W], or None if it has < 4 pixels.

  Fill ratio of the bounding box >= SQUARE_FILL: square. Otherwise the blob is a triangle if its area is
  lopsided (|top half - bottom half| or |left half - right half| >= TRIANGLE_ASYMMETRY of the area: a
  triangle has its base on one side), else a disc. Fill ratios alone (1, pi/4, 1/2) do not separate
  discs from triangles at a few pixels, which is the size of our sprites.
  """
  count, components, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
  if count < 2:
    return None
  largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
  area = int(stats[largest, cv2.CC_STAT_AREA])
  if area < 4:
    return None
  left, top = stats[largest, cv2.CC_STAT_LEFT], stats[largest, cv2.CC_STAT_TOP]
  width, height = stats[largest, cv2.CC_STAT_WIDTH], stats[largest, cv2.CC_STAT_HEIGHT]
  blob = components[top:top + height, left:left + width] == largest
  if area >= SQUARE_FILL * width * height:
    return "square"
  rows, cols = blob.sum(1), blob.sum(0)
  vertical = abs(int(rows[:height // 2].sum()) - int(rows[height - height // 2:].sum()))
  horizontal = abs(int(cols[:width // 2].sum()) - int(cols[width - width // 2:].sum()))
  return "triangle" if max(vertical, horizontal) >= TRIANGLE_ASYMMETRY * area else "disc"


def _dominant(labels):
  """int labels [..] -> (dominant colour name or None, sorted list of colours with >= MIN_SET_SHARE)."""
  counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(COLOR_NAMES))
  total = counts.sum()
  if total < MIN_CHUNK_PIXELS:
    return None, []
  colour_set = sorted(COLOR_NAMES[k] for k in np.flatnonzero(counts >= MIN_SET_SHARE * total))
  return COLOR_NAMES[int(np.argmax(counts))], colour_set


def _agree_fraction(pairs):
  """Fraction of (a, b) pairs with a == b and a not None/empty; 1.0 for no pairs."""
  if not pairs:
    return 1.0
  return float(np.mean([bool(a) and a == b for a, b in pairs]))


def _check_true_colors(true_colors):
  if isinstance(true_colors, str):
    true_colors = [true_colors]
  true_colors = list(true_colors)
  for name in true_colors:
    if name not in PALETTE:
      raise ValueError(f"true colour {name!r} is not a palette colour; expected one of {COLOR_NAMES}")
  return true_colors


def attribute_consistency(frames, chunk_frames, true_colors=None):
  """Colour/shape identity per chunk and how consistent it is across chunks.

  frames: uint8 [T, H, W, 3] with T divisible by chunk_frames (pixel frames per chunk).
  true_colors: optional colour name or list of names (one per sprite) known from the generator.
  Returns a dict:
    num_chunks, chunk_colors (dominant colour name or None per chunk), chunk_color_sets, chunk_shapes;
    identity_consistency: fraction of chunks after the first whose dominant colour equals the first's
      (1.0 for a single chunk with a detected sprite);
    all_chunks_agree: 1.0 if every chunk has the first chunk's dominant colour, else 0.0;
    adjacent_agreement: fraction of adjacent chunk pairs with the same dominant colour;
    color_set_consistency, shape_consistency: as identity_consistency, for colour sets and shapes;
    half_chunk_agreement: fraction of chunks whose two halves have the same dominant colour (stability
      within a chunk);
    chunk_sprite_area: per chunk, the mean fraction of pixels explained as a sprite colour, and
      sprite_area_last_over_first: its last chunk / first chunk (sprites fading along the video: < 1);
    with true_colors also true_color_match (fraction of chunks whose dominant colour is a true colour)
      and true_color_set_match (fraction of chunks whose colour set is exactly the true set).
  """
  frames = np.asarray(frames)
  if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
    raise ValueError(f"frames must be uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
  if int(chunk_frames) != chunk_frames or chunk_frames < 1:
    raise ValueError(f"chunk_frames={chunk_frames!r} must be a positive integer")
  chunk_frames = int(chunk_frames)
  if len(frames) % chunk_frames:
    raise ValueError(f"T={len(frames)} frames is not divisible by chunk_frames={chunk_frames}")
  labels = classify_pixels(frames)
  num_chunks = len(frames) // chunk_frames
  colours, colour_sets, shapes, halves = [], [], [], []
  for i in range(num_chunks):
    chunk = labels[i * chunk_frames:(i + 1) * chunk_frames]
    colour, colour_set = _dominant(chunk)
    colours.append(colour)
    colour_sets.append(colour_set)
    shape = None
    if colour is not None:
      index = COLOR_NAMES.index(colour)
      votes = [v for v in (blob_shape(frame == index) for frame in chunk) if v is not None]
      shape = max(SHAPES, key=votes.count) if votes else None  # ties: first in SHAPES
    shapes.append(shape)
    if chunk_frames >= 2:
      half = chunk_frames // 2
      halves.append((_dominant(chunk[:half])[0], _dominant(chunk[half:])[0]))
  first = colours[0]
  area = (labels >= 0).reshape(num_chunks, -1).mean(axis=1)  # [num_chunks]
  result = {
      "num_chunks": num_chunks,
      "chunk_colors": colours,
      "chunk_color_sets": colour_sets,
      "chunk_shapes": shapes,
      "identity_consistency": (_agree_fraction([(first, c) for c in colours[1:]])
                               if first is not None else 0.0),
      "all_chunks_agree": float(first is not None and all(c == first for c in colours)),
      "adjacent_agreement": (_agree_fraction(list(zip(colours[:-1], colours[1:])))
                             if num_chunks > 1 else float(first is not None)),
      "color_set_consistency": (_agree_fraction([(colour_sets[0], s) for s in colour_sets[1:]])
                                if colour_sets[0] else 0.0),
      "shape_consistency": (_agree_fraction([(shapes[0], s) for s in shapes[1:]])
                            if shapes[0] is not None else 0.0),
      "half_chunk_agreement": _agree_fraction(halves) if halves else 1.0,
      "chunk_sprite_area": [float(a) for a in area],
      "sprite_area_last_over_first": float(area[-1] / area[0]) if area[0] > 0 else None,
  }
  if true_colors is not None:
    true_colors = _check_true_colors(true_colors)
    result["true_color_match"] = float(np.mean([c in true_colors for c in colours]))
    result["true_color_set_match"] = float(np.mean([s == sorted(set(true_colors)) for s in colour_sets]))
  return result
