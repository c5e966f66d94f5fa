"""Attribute (colour / shape identity) consistency across chunks of sprite videos."""
import numpy as np
import pytest

from vin_jax.data import sprites
from vin_jax.data.sprites import generate_video
from vin_jax.evaluation import attributes


def test_kept_colour_vs_colour_change(make_sprite_video):
  kept = attributes.attribute_consistency(make_sprite_video(lambda t: "red"), 8, true_colors="red")
  changed = attributes.attribute_consistency(
      make_sprite_video(lambda t: "red" if t < 16 else "blue"), 8, true_colors=["red"])
  assert kept["chunk_colors"] == ["red"] * 4
  assert kept["identity_consistency"] == kept["all_chunks_agree"] == kept["adjacent_agreement"] == 1.0
  assert kept["true_color_match"] == kept["true_color_set_match"] == 1.0
  assert changed["chunk_colors"] == ["red", "red", "blue", "blue"]
  assert changed["identity_consistency"] == pytest.approx(1 / 3)
  assert changed["all_chunks_agree"] == 0.0
  assert changed["adjacent_agreement"] == pytest.approx(2 / 3)
  assert changed["true_color_match"] == 0.5
  assert kept["half_chunk_agreement"] == changed["half_chunk_agreement"] == 1.0


def test_sprite_area_per_chunk_sees_a_fading_sprite(make_sprite_video):
  steady = attributes.attribute_consistency(make_sprite_video(lambda t: "red"), 8)
  video = make_sprite_video(lambda t: "red").astype(np.float32)
  background = video[:, :1, :1]  # the corner pixel is background in every frame
  fade = np.where(np.arange(len(video)) < 16, 1.0, 0.0)[:, None, None, None]  # gone after two chunks
  faded = attributes.attribute_consistency((background + fade * (video - background)).astype(np.uint8), 8)
  assert steady["sprite_area_last_over_first"] == pytest.approx(1.0, abs=0.05)
  assert min(steady["chunk_sprite_area"]) > 0
  assert faded["chunk_sprite_area"][2:] == [0.0, 0.0] and faded["sprite_area_last_over_first"] == 0.0


def test_faint_noisy_sprite_keeps_its_hue(make_sprite_video):
  video = make_sprite_video(lambda t: "magenta", background="navy").astype(np.float32)
  background = np.array(sprites.BACKGROUNDS["navy"], np.float32)
  video = background + 0.45 * (video - background)  # a sprite at 45% opacity
  video += np.random.RandomState(0).randn(*video.shape) * 8
  result = attributes.attribute_consistency(video.clip(0, 255).astype(np.uint8), 8)
  assert result["chunk_colors"] == ["magenta"] * 4


def test_shapes_and_multiple_sprites():
  frames = np.zeros((8, 32, 32, 3), np.uint8)
  frames[:] = sprites.BACKGROUNDS["black"]
  yy, xx = np.mgrid[:32, :32] + 0.5
  disc = (yy - 16) ** 2 + (xx - 16) ** 2 <= 36
  triangle = (yy >= 8) & (yy < 20) & (np.abs(xx - 16) <= (yy - 8) / 2 + 0.5)
  frames[:4][:, disc] = sprites.PALETTE["green"]
  frames[4:][:, triangle] = sprites.PALETTE["green"]
  frames[:, 24:30, 1:7] = sprites.PALETTE["yellow"]  # a second, smaller sprite
  result = attributes.attribute_consistency(frames, 4, true_colors=["green", "yellow"])
  assert result["chunk_shapes"] == ["disc", "triangle"]
  assert result["shape_consistency"] == 0.0
  assert result["chunk_colors"] == ["green", "green"]
  assert result["chunk_color_sets"] == [["green", "yellow"]] * 2
  assert result["color_set_consistency"] == result["true_color_set_match"] == 1.0


def test_blank_video_is_not_consistent():
  result = attributes.attribute_consistency(np.full((8, 16, 16, 3), 60, np.uint8), 4)
  assert result["chunk_colors"] == [None, None]
  assert result["identity_consistency"] == result["all_chunks_agree"] == 0.0


def test_generated_sprite_video():
  video = generate_video(3, num_frames=16, height=16, width=16, num_sprites=1, sprite_size=6, max_speed=1.0,
                   caption_detail=0)
  true_color = sprites.COLOR_NAMES[int(video["colors"][0])]
  result = attributes.attribute_consistency(video["frames"], 4, true_colors=[true_color])
  assert result["chunk_colors"] == [true_color] * 4
  assert result["chunk_shapes"] == [sprites.SHAPES[int(video["shapes"][0])]] * 4


def test_bad_arguments_are_named(make_sprite_video):
  video = make_sprite_video(lambda t: "red", num_frames=10)
  with pytest.raises(ValueError, match="chunk_frames=4"):
    attributes.attribute_consistency(video, 4)
  with pytest.raises(ValueError, match="'purple'"):
    attributes.attribute_consistency(video, 5, true_colors=["purple"])
