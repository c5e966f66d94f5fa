"""Frames given clean at sampling (STIV's conditioning tasks): joint image-text guidance, image-to-video from any
image, video prediction and frame interpolation, and interpolation training's clean mask. On a randomly
initialised tiny model (configs/tiny.py:test), perturbed so that nothing is trivially zero."""
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from vin_jax import config as config_lib
from vin_jax import sampling, video_io
from vin_jax.diffusion import loss as loss_lib
from vin_jax.diffusion import sampler
from vin_jax.model import ModelDef
from vin_jax.text import tokenizer

from tests.model.helpers import perturbed_params

REPO = pathlib.Path(__file__).resolve().parents[2]
NUM_CHUNKS = 3


@pytest.fixture(scope="module")
def config():
  c = config_lib.load_config_file(REPO / "configs" / "tiny.py", "test")
  c.sampling.guidance_scale = 3.0
  c.sampling.num_samples = 2
  config_lib.validate(c)
  return c


@pytest.fixture(scope="module")
def model_def(config):
  return ModelDef(config)


@pytest.fixture(scope="module")
def params(model_def):
  return perturbed_params(model_def, seed=3)


@pytest.fixture(scope="module")
def text(config):
  return jnp.asarray(tokenizer.tokenize(["one red square", "two sprites"], config.text.max_length))


def _video(config, seed, frames):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (frames, config.data.height, config.data.width, 3), dtype=np.uint8)


def _generate(config, model_def, params, text, condition, **sampling_overrides):
  c = config.copy_and_resolve_references()
  for key, value in sampling_overrides.items():
    c.sampling[key] = value
  clean_x0, clean_mask = condition if condition is not None else (None, None)
  return np.asarray(sampling.generate(c, model_def, params, text, jax.random.key(0), num_chunks=NUM_CHUNKS,
                                      clean_x0=clean_x0, clean_mask=clean_mask))


def test_joint_guidance_is_stiv_formula_over_three_branches(config, model_def, params, text):
  model = model_def.bind(params)
  settings = dataclasses.replace(sampler.SamplerSettings.from_config(config), image_guidance_scale=1.7)
  h, w, c = config_lib.latent_shape(config)
  shape = (2, NUM_CHUNKS, config.chunking.chunk_frames, h, w, c)
  x_free = jax.random.normal(jax.random.key(1), shape)
  clean_x0, hold = sampling.first_frame_condition(config, jax.random.normal(jax.random.key(2), (2, h, w, c)),
                                                  NUM_CHUNKS)
  t_free = jnp.full(shape[:3], 0.6)
  t_given = jnp.where(hold, 0.0, t_free)
  x_given = jnp.where(hold[..., None, None, None], clean_x0, x_free)
  guided, free = sampler.joint_guided_prediction(model, x_given, t_given, x_free, t_free, text, settings)
  L = settings.context_frames
  call = lambda x, t, drop: model(x, t, text, context_frames=L, drop_text_B=jnp.full((2,), drop))[0]
  cond, image_only, uncond = call(x_given, t_given, False), call(x_given, t_given, True), call(x_free, t_free, True)
  want = uncond + 1.7 * (image_only - uncond) + 3.0 * (cond - image_only)
  np.testing.assert_allclose(np.asarray(guided), np.asarray(want), atol=2e-5, rtol=1e-4)
  np.testing.assert_allclose(np.asarray(free), np.asarray(uncond), atol=2e-5, rtol=1e-4)
  assert np.abs(np.asarray(image_only - uncond)).max() > 1e-3   # the given frame matters to the model


def test_image_guidance_keeps_the_given_frame_and_changes_the_rest(config, model_def, params, text):
  h, w, c = config_lib.latent_shape(config)
  condition = sampling.first_frame_condition(config, 2.0 * jax.random.normal(jax.random.key(4), (2, h, w, c)),
                                             NUM_CHUNKS)
  plain = _generate(config, model_def, params, text, condition)
  joint = _generate(config, model_def, params, text, condition, image_guidance_scale=2.5)
  np.testing.assert_array_equal(joint[:, 0, 0], np.asarray(condition[0][:, 0, 0]))
  assert np.abs(joint[:, 0, 1:] - plain[:, 0, 1:]).max() > 1e-4
  # Without given frames the image scale has nothing to act on: the two-branch text guidance, exactly.
  np.testing.assert_array_equal(_generate(config, model_def, params, text, None, image_guidance_scale=2.5),
                                _generate(config, model_def, params, text, None))


def test_image_to_video_from_any_image_file(config, model_def, params, text, tmp_path):
  """A non-square PNG (not a data set video) is cover-resized and centre-cropped, encoded, and kept as frame 0;
  the rest of the video reacts to it."""
  rng = np.random.default_rng(0)
  big = rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)       # 40 x 64: scaled to 8 x 12.8, cropped to 8 x 8
  Image.fromarray(big).save(tmp_path / "image.png")
  image = video_io.read_image(tmp_path / "image.png", config.data.height, config.data.width)
  assert image.shape == (8, 8, 3) and image.dtype == np.uint8
  other = video_io.read_image(tmp_path / "image.png", 8, 4)
  assert other.shape == (8, 4, 3)
  latent = sampling.image_latent(config, image)
  ae_latent = sampling.encode_frames(config, image[None])[0]
  np.testing.assert_array_equal(latent, ae_latent)
  outs = []
  for img in (image, 255 - image):
    lat = np.repeat(sampling.image_latent(config, img)[None], 2, axis=0)
    condition = sampling.first_frame_condition(config, lat, NUM_CHUNKS)
    out = _generate(config, model_def, params, text, condition)
    np.testing.assert_allclose(out[:, 0, 0], lat, atol=1e-6)
    outs.append(out)
  assert np.abs(outs[0][:, :, 1:] - outs[1][:, :, 1:]).max() > 1e-3
  (tmp_path / "bad.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match="bad.png"):
    video_io.read_image(tmp_path / "bad.png", 8, 8)


def test_video_prediction_keeps_the_given_frames_across_a_chunk_boundary(config, model_def, params, text):
  f = config.chunking.chunk_frames
  k = f + 1                                   # the whole first chunk and the first frame of the second
  frames = _video(config, 1, k + 3)
  clean_x0, clean_mask = sampling.prediction_condition(config, frames, k, 2, NUM_CHUNKS)
  assert clean_mask.shape == (2, NUM_CHUNKS, f) and int(clean_mask[0].sum()) == k
  assert bool(clean_mask[0, 1, 0]) and not bool(clean_mask[0, 1, 1])
  out = _generate(config, model_def, params, text, (clean_x0, clean_mask))
  flat = out.reshape(2, NUM_CHUNKS * f, *out.shape[3:])
  np.testing.assert_allclose(flat[:, :k], np.repeat(sampling.encode_frames(config, frames[:k])[None], 2, 0),
                             atol=1e-6)
  with pytest.raises(ValueError, match="condition video has 4 frames"):
    sampling.prediction_condition(config, frames[:4], k, 2, NUM_CHUNKS)
  with pytest.raises(ValueError, match="condition_frames=12"):
    sampling.prediction_condition(config, frames, NUM_CHUNKS * f, 2, NUM_CHUNKS)


def test_interpolation_keeps_the_given_frames_and_doubles_the_length(config, model_def, params, text):
  c = config_lib.load_config_file(REPO / "configs" / "tiny.py", "test,interpolate")
  config_lib.validate(c)
  assert c.diffusion.clean_every == 2 and c.model.temporal_patch == 1
  f = c.chunking.chunk_frames
  given = NUM_CHUNKS * f // 2
  frames = _video(c, 2, given + 5)
  clean_x0, clean_mask = sampling.interpolation_condition(c, frames, 2, NUM_CHUNKS)
  np.testing.assert_array_equal(np.asarray(clean_mask[0]).ravel(), np.arange(NUM_CHUNKS * f) % 2 == 0)
  model_def_i = ModelDef(c)
  out = np.asarray(sampling.generate(c, model_def_i, model_def_i.init(jax.random.key(0)), text, jax.random.key(0),
                                     num_chunks=NUM_CHUNKS, clean_x0=clean_x0, clean_mask=clean_mask))
  flat = out.reshape(2, NUM_CHUNKS * f, *out.shape[3:])
  assert flat.shape[1] == 2 * given
  np.testing.assert_allclose(flat[:, ::2], np.repeat(sampling.encode_frames(c, frames[:given])[None], 2, 0),
                             atol=1e-6)
  with pytest.raises(ValueError, match="interpolate 6 frames, the video has 5"):
    sampling.interpolation_condition(c, frames[:5], 2, NUM_CHUNKS)
  with pytest.raises(config_lib.ConfigError, match="autoencoder.temporal_factor=1"):
    c.autoencoder.temporal_factor = 2.0
    sampling.interpolation_condition(c, frames, 2, NUM_CHUNKS)


def test_interpolation_training_gives_every_other_frame_clean_in_video_positions(config):
  c = config.copy_and_resolve_references()
  c.diffusion.clean_every, c.diffusion.first_frame_drop_prob = 2, 0.0
  f = c.chunking.chunk_frames
  mask = np.asarray(loss_lib.clean_frame_mask(jax.random.key(0), 3, 2, f, c, chunk_offset=1))
  frame_index = (1 + np.arange(2))[:, None] * f + np.arange(f)[None, :]
  np.testing.assert_array_equal(mask, np.broadcast_to(frame_index % 2 == 0, mask.shape))
  c.diffusion.first_frame_drop_prob = 1.0              # the condition dropped in every row
  assert not np.asarray(loss_lib.clean_frame_mask(jax.random.key(0), 3, 2, f, c)).any()
  c.diffusion.clean_every = 0
  c.diffusion.first_frame_drop_prob = 0.0
  assert not np.asarray(loss_lib.clean_frame_mask(jax.random.key(0), 3, 2, f, c)).any()
