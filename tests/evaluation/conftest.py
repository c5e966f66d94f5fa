"""Constructed videos with known answers for the evaluation tests (drawn by hand, no generator)."""
import cv2
import numpy as np
import pytest

from vin_jax.data.sprites import BACKGROUNDS, PALETTE


def textured_image(seed, size=128):
  """A smooth random RGB texture uint8 [size, size, 3] (enough structure for optical flow)."""
  coarse = np.random.RandomState(seed).rand(size // 8, size // 8, 3)
  return (cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC).clip(0, 1) * 255).astype(np.uint8)


def translating_video(seed, num_frames=30, size=64, step=1):
  """uint8 [T, size, size, 3]: a window sliding `step` px per frame to the right over a texture."""
  texture = textured_image(seed, size + num_frames * step + 16)
  return np.stack([texture[8:8 + size, 8 + t * step:8 + t * step + size] for t in range(num_frames)])


def bounce(t, span=12):
  """Sprite position that goes 0..span..0 one pixel per frame (no teleporting)."""
  return span - abs(span - (t % (2 * span)))


def sprite_video(color_at, num_frames=32, size=16, sprite=4, background="grey", background_at=None):
  """uint8 [T, size, size, 3]: one square sprite bouncing horizontally.

  color_at(t) -> palette name; background_at(t) -> background name (default: `background` throughout).
  """
  frames = np.empty((num_frames, size, size, 3), np.uint8)
  top = (size - sprite) // 2
  for t in range(num_frames):
    frames[t] = BACKGROUNDS[background_at(t) if background_at else background]
    x = bounce(t, size - sprite)
    frames[t, top:top + sprite, x:x + sprite] = PALETTE[color_at(t)]
  return frames


@pytest.fixture
def make_sprite_video():
  return sprite_video


@pytest.fixture
def make_translating_video():
  return translating_video
