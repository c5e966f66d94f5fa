"""Seeded generator of long sprite videos (numpy only).

Constants here are shared with the evaluation (attribute consistency) so that both agree on identities.
"""
import numpy as np

# Named RGB colours a sprite can have; far apart so a detector can tell them apart after generation.
PALETTE = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 80, 235),
    "yellow": (235, 215, 40),
    "magenta": (215, 50, 215),
    "cyan": (40, 215, 225),
}
COLOR_NAMES = tuple(PALETTE)
SHAPES = ("square", "disc", "triangle")
# Backgrounds are dark and low-saturation so sprites stand out.
BACKGROUNDS = {
    "black": (10, 10, 10),
    "grey": (60, 60, 60),
    "navy": (20, 20, 70),
}
BACKGROUND_NAMES = tuple(BACKGROUNDS)

# Caption words for sprite counts; larger counts are written as digits.
_COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def shape_mask(shape: str, size: int) -> np.ndarray:
  """Hard mask of one sprite: bool [size, size]. `shape` is one of SHAPES."""
  # Pixel i covers [i, i+1); the sprite's centre is at size/2 in its own box.
  yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
  dy, dx = yy - size / 2, xx - size / 2
  if shape == "square":
    return np.ones((size, size), bool)
  if shape == "disc":
    # The -0.5 drops the corners even at size 3, so a small disc differs from a small square.
    return dy ** 2 + dx ** 2 <= (size / 2) ** 2 - 0.5
  if shape == "triangle":
    # Apex up: row r (from the top) has half-width (r + 1) / 2, so the base spans the whole box.
    return np.abs(dx) <= (yy + 0.5) / 2
  raise ValueError(f"shape={shape!r} is not one of {SHAPES}")


def _fold(p: np.ndarray, lo: float, hi: float) -> np.ndarray:
  """Reflects positions p into [lo, hi] (a sprite bouncing off both borders)."""
  span = hi - lo
  if span <= 0:
    return np.full_like(p, lo)
  q = np.mod(p - lo, 2 * span)
  return lo + np.where(q > span, 2 * span - q, q)


def caption_for(colors: np.ndarray, shapes: np.ndarray, background: int, caption_detail: int) -> str:
  """The caption of a video with these attributes (indices into COLOR_NAMES, SHAPES, BACKGROUND_NAMES).

  detail 0 names the number of sprites only, 1 adds their shapes, 2 adds their colours and the background.
  With detail 0 and 1 no colour name appears: identities must then be kept by the model, not the text.
  """
  n = len(colors)
  count = _COUNT_WORDS[n] if n < len(_COUNT_WORDS) else str(n)
  noun = "sprite" if n == 1 else "sprites"
  if caption_detail == 0 or n == 0:
    items = ""
  elif caption_detail in (1, 2):
    words = []
    for c, s in zip(colors, shapes):
      phrase = f"{COLOR_NAMES[c]} {SHAPES[s]}" if caption_detail == 2 else SHAPES[s]
      words.append(("an " if phrase[0] in "aeiou" else "a ") + phrase)
    listed = words[0] if n == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    items = f" ({listed})"
  else:
    raise ValueError(f"caption_detail={caption_detail!r} must be 0, 1 or 2")
  ground = f"a {BACKGROUND_NAMES[background]} background" if caption_detail == 2 else "a background"
  return f"a video of {count} {noun}{items} moving over {ground}"


def generate_video(seed: int, *, num_frames: int, height: int, width: int, num_sprites: int, sprite_size: int,
                   max_speed: float, caption_detail: int, hide_frames: int = 0) -> dict:
  """One sprite video, a pure function of its arguments.

  Each sprite has a colour, a shape and a constant velocity of 0.3 * max_speed to max_speed pixels per frame
  (direction uniform); it bounces off the borders. Later sprites are drawn over earlier ones.
  `hide_frames` > 0 (beyond the paper, #18): every sprite leaves the picture for that many consecutive frames,
  starting at a uniform frame in [1, T - hide_frames] (frame 0 always shows it), and comes back with the same
  colour and shape where its trajectory has taken it; identity must then outlast any short local context.

  Returns:
    frames: uint8 [T, H, W, 3] (T = num_frames pixel frames).
    caption: str, see `caption_for`.
    colors: int32 [num_sprites], indices into COLOR_NAMES (distinct while num_sprites <= len(PALETTE)).
    shapes: int32 [num_sprites], indices into SHAPES.
    background: int32 scalar, index into BACKGROUND_NAMES.
    trajectories: float32 [num_sprites, T, 2], (y, x) of each sprite's centre in pixels, where pixel i
      spans [i, i + 1); the drawn box is [round(c - size/2), round(c - size/2) + size) along each axis.
    visible: bool [num_sprites, T], False where the sprite is hidden (all True when hide_frames = 0).
  """
  for name, value in (("num_frames", num_frames), ("height", height), ("width", width), ("sprite_size", sprite_size)):
    if value <= 0:
      raise ValueError(f"{name}={value!r} must be > 0")
  if num_sprites < 0:
    raise ValueError(f"num_sprites={num_sprites!r} must be >= 0")
  if sprite_size > min(height, width):
    raise ValueError(f"sprite_size={sprite_size} must fit in the frame {height}x{width}")
  if max_speed < 0:
    raise ValueError(f"max_speed={max_speed!r} must be >= 0 (pixels per frame)")
  if not 0 <= hide_frames < num_frames:
    raise ValueError(f"hide_frames={hide_frames!r} must be in [0, num_frames={num_frames}) (frame 0 shows "
                     "every sprite)")

  rng = np.random.default_rng(seed)
  n, size = num_sprites, sprite_size
  colors = rng.choice(len(COLOR_NAMES), size=n, replace=n > len(COLOR_NAMES)).astype(np.int32)
  shapes = rng.integers(0, len(SHAPES), size=n).astype(np.int32)
  background = np.int32(rng.integers(0, len(BACKGROUND_NAMES)))

  # Centres stay in [size/2, extent - size/2] so the whole sprite is always inside the frame.
  lo = np.full((2,), size / 2)
  hi = np.array([height, width], np.float64) - size / 2
  start_n2 = lo + rng.random((n, 2)) * (hi - lo)
  speed_n = rng.uniform(0.3 * max_speed, max_speed, size=n)
  angle_n = rng.uniform(0.0, 2 * np.pi, size=n)
  velocity_n2 = speed_n[:, None] * np.stack([np.sin(angle_n), np.cos(angle_n)], axis=-1)
  t = np.arange(num_frames, dtype=np.float64)
  straight_nt2 = start_n2[:, None, :] + t[None, :, None] * velocity_n2[:, None, :]
  trajectories = np.stack([_fold(straight_nt2[..., 0], lo[0], hi[0]),
                           _fold(straight_nt2[..., 1], lo[1], hi[1])], axis=-1)

  visible = np.ones((n, num_frames), bool)
  if hide_frames:   # drawn after everything else, so the other draws match a video without hiding
    start_n = rng.integers(1, num_frames - hide_frames + 1, size=n)
    visible &= ~((t[None, :] >= start_n[:, None]) & (t[None, :] < (start_n + hide_frames)[:, None]))

  frames = np.empty((num_frames, height, width, 3), np.uint8)
  frames[...] = np.array(BACKGROUNDS[BACKGROUND_NAMES[background]], np.uint8)
  corners = np.floor(trajectories - size / 2 + 0.5).astype(np.int64)  # round half up
  corners = np.clip(corners, 0, np.array([height - size, width - size]))
  for k in range(n):
    mask = shape_mask(SHAPES[shapes[k]], size)
    rgb = np.array(PALETTE[COLOR_NAMES[colors[k]]], np.uint8)
    for f in np.flatnonzero(visible[k]):
      y, x = corners[k, f]
      frames[f, y:y + size, x:x + size][mask] = rgb

  return {
      "frames": frames,
      "caption": caption_for(colors, shapes, int(background), caption_detail),
      "colors": colors,
      "shapes": shapes,
      "background": background,
      "trajectories": trajectories.astype(np.float32),
      "visible": visible,
  }
