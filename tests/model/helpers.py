"""Small models for the model tests: tiny:test config, params perturbed so no path is zero at init."""
import jax
import numpy as np

from vin_jax import config as config_lib
from vin_jax.model import ModelDef

from tests.conftest import REPO


def tiny_test_config(**overrides):
  return config_lib.override(config_lib.load_config_file(REPO / "configs" / "tiny.py", "test"), overrides)


def perturbed_params(model_def: ModelDef, seed: int = 0, scale: float = 0.05):
  """Init params plus noise: zero-initialised gates and output layers would hide gradient paths."""
  params = model_def.init(jax.random.key(seed))
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(treedef, [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


def random_inputs(config, batch=2, num_chunks=3, seed=0):
  h, w, c = config_lib.latent_shape(config)
  f = config.chunking.chunk_frames
  x = jax.random.normal(jax.random.key(seed), (batch, num_chunks, f, h, w, c))
  t = jax.numpy.full((batch, num_chunks, f), 0.6)
  text = jax.numpy.asarray(np.random.RandomState(seed).randint(1, 200, (batch, config.text.max_length)),
                           jax.numpy.int32)
  return x, t, text
