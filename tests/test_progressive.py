"""STIV's progressive training: a text-to-image model (configs/tiny.py:image) initialises a video model with
`train --init_from`, the DiT's patch embedding and output layer inflated along time."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax import config as config_lib
from vin_jax.export import init_from, names
from vin_jax.model import ModelDef
from vin_jax.text import tokenizer

from tests.model.helpers import perturbed_params


def _image_and_video_configs():
  image = config_lib.load_config_file("configs/tiny.py", "test,image")
  video = config_lib.load_config_file("configs/tiny.py", "test")
  # One temporal patch per window and no VIN on either side: an identical-frame video is then the image.
  video.chunking.chunk_frames, video.chunking.context_frames = video.model.temporal_patch, 0
  video.chunking.inference_context_frames, video.vin.enabled = 0, False
  video.chunking.keyframe_seconds = video.model.temporal_patch / video.data.fps
  for c in (image, video):
    config_lib.validate(c)
  assert (image.model.temporal_patch, video.model.temporal_patch) == (1, 2)
  return image, video


def test_init_from_an_image_model_inflates_the_patch_embedding_exactly():
  image_config, video_config = _image_and_video_configs()
  image_def, video_def = ModelDef(image_config), ModelDef(video_config)
  image_params = perturbed_params(image_def)
  source = init_from.Source("image", "export", 7, "ema",
                            {n: np.asarray(x) for n, x in names.flatten(image_params).items()})
  params, report = init_from.merge(video_def.init(jax.random.key(5)), source)
  inflated = {row["name"]: (row["source_shape"], row["shape"]) for row in report["inflated"]}
  assert inflated == {"dit.patch_embed.kernel": ([48, 32], [96, 32]), "dit.final.kernel": ([32, 48], [32, 96]),
                      "dit.final.bias": ([48], [96])}
  assert report["counts"]["shape_mismatch"] == 0 and report["counts"]["loaded"] > 20
  assert "inflated along time" in init_from.format_report(report)

  h, w, c = config_lib.latent_shape(image_config)
  frame = jax.random.normal(jax.random.key(1), (2, 1, 1, h, w, c))
  text = jnp.asarray(tokenizer.tokenize(["one red square", "two sprites"], image_config.text.max_length))
  t = jnp.full((2, 1, 1), 0.6)
  image_pred, _ = image_def.bind(image_params)(frame, t, text, context_frames=0)
  video = jnp.repeat(frame, 2, axis=2)                         # [B, 1 chunk, 2 identical frames, ...]
  video_pred, _ = video_def.bind(params)(video, jnp.repeat(t, 2, axis=2), text, context_frames=0)
  for k in range(2):
    np.testing.assert_allclose(np.asarray(video_pred[:, :, k]), np.asarray(image_pred[:, :, 0]), atol=1e-5)


def test_inflation_refuses_what_is_not_a_temporal_inflation():
  kernel = np.ones((48, 32), np.float32)
  assert init_from.inflated("dit.patch_embed.kernel", kernel, (72, 32)) is None   # 1.5x: not whole
  assert init_from.inflated("dit.patch_embed.kernel", kernel, (96, 16)) is None   # another axis changed
  assert init_from.inflated("dit.blocks.0.attn.qkv.kernel", kernel, (96, 32)) is None   # not inflatable
  np.testing.assert_allclose(init_from.inflated("dit.patch_embed.kernel", kernel, (96, 32)), 0.5)


def test_a_factorised_video_model_from_an_image_model_predicts_the_image_at_every_time_patch():
  """STIV's recipe: the image model's weights, the temporal attention new (reported) and gated at zero, so a
  window of several time patches of one repeated image gives the image model's prediction at each of them."""
  image_config, video_config = _image_and_video_configs()
  video_config.model.attention_layout = "factorised"
  video_config.chunking.chunk_frames = 2 * video_config.model.temporal_patch       # two time patches
  video_config.chunking.keyframe_seconds = video_config.chunking.chunk_frames / video_config.data.fps
  config_lib.validate(video_config)
  image_def, video_def = ModelDef(image_config), ModelDef(video_config)
  image_params = perturbed_params(image_def)
  source = init_from.Source("image", "export", 7, "ema",
                            {n: np.asarray(x) for n, x in names.flatten(image_params).items()})
  params, report = init_from.merge(video_def.init(jax.random.key(5)), source)
  new = {row["name"].split(".", 3)[-1].split(".")[0] for row in report["new"]}
  assert new == {"temporal_attn", "post_temporal", "temporal_table"}, report["new"]
  assert report["counts"]["shape_mismatch"] == 0

  h, w, c = config_lib.latent_shape(image_config)
  frame = jax.random.normal(jax.random.key(1), (2, 1, 1, h, w, c))
  text = jnp.asarray(tokenizer.tokenize(["one red square", "two sprites"], image_config.text.max_length))
  t = jnp.full((2, 1, 1), 0.6)
  image_pred, _ = image_def.bind(image_params)(frame, t, text, context_frames=0)
  f = video_config.chunking.chunk_frames
  video_pred, _ = video_def.bind(params)(jnp.repeat(frame, f, axis=2), jnp.repeat(t, f, axis=2), text,
                                         context_frames=0)
  for k in range(f):
    np.testing.assert_allclose(np.asarray(video_pred[:, :, k]), np.asarray(image_pred[:, :, 0]), atol=1e-5)
