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


def train_batch(config, batch=2, num_chunks=2):
  """A uint8 pixel batch {"frames" [B, T, 8, 8, 3], "text_tokens" [B, Lt]} for the tiny:test config."""
  frames = jax.random.randint(jax.random.key(1), (batch, num_chunks * config.chunking.chunk_frames, 8, 8, 3), 0, 256)
  text = jax.random.randint(jax.random.key(2), (batch, config.text.max_length), 1, 200)
  return {"frames": np.asarray(frames, np.uint8), "text_tokens": np.asarray(text, np.int32)}


def loss_and_grads(config, params, batch):
  """The training loss of `batch` and its parameter gradients (jitted, fixed rng), as the train step takes them."""
  from vin_jax import train as train_lib
  loss_sums = train_lib.make_loss_sums(ModelDef(config), config)
  fn = lambda p, frames, text: loss_sums(p, frames, text, jax.random.key(3))["loss"]
  return jax.jit(jax.value_and_grad(fn))(params, batch["frames"], batch["text_tokens"])
