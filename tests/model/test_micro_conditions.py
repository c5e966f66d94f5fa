"""model.micro_conditions (STIV): fps and resolution embeddings added to the timestep conditioning."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vin_jax import train as train_lib
from vin_jax.model import ModelDef

from tests.model.helpers import perturbed_params, random_inputs, tiny_test_config, train_batch

NAME = "micro"   # the embedders' module name: dit.micro and vin.micro
PARTS = ("dit", "vin")
CONDITIONS = ("fps", "height", "width")


def _on():
  return tiny_test_config(**{"model.micro_conditions": True})


@pytest.fixture(scope="module")
def perturbed():
  """The micro-conditions model's params, all perturbed (its zero `out` layers too)."""
  return perturbed_params(ModelDef(_on()))


def _zero_out(params):
  """`params` with the embedders' `out` layers back at their zero init."""
  params = jax.tree.map(lambda x: x, params)
  for part in PARTS:
    params[part][NAME]["out"] = jax.tree.map(jnp.zeros_like, params[part][NAME]["out"])
  return params


def _names(params):
  return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)]


def _predict(model_def, config):
  @jax.jit
  def predict(params, x, t, text, micro):
    model = model_def.bind(params)
    preds, _ = model(x, t, text, context_frames=config.chunking.context_frames, micro_BxK=micro)
    return preds, model.global_tokens(x, t, *model.encode_text(text), micro_BxK=micro)
  return predict


def test_off_adds_no_parameters_and_on_adds_fp32_embedders():
  off = ModelDef(tiny_test_config())
  assert not [n for n in _names(off.abstract_params()) if NAME in n]
  on = ModelDef(tiny_test_config(**{"model.micro_conditions": True, "model.dtype": "bfloat16"}))
  added = sorted(set(_names(on.abstract_params())) - set(_names(off.abstract_params())))
  assert added and all(f"['{NAME}']" in n for n in added)
  assert {n.split("]")[0] for n in added} == {"['dit'", "['vin'"}
  assert not [path for path in on._cast_paths if NAME in path]   # the embedders compute in fp32


def test_the_conditions_change_the_prediction_per_row_and_equal_ones_are_deterministic(perturbed):
  config = _on()
  model_def = ModelDef(config)
  x, t, text = random_inputs(config)
  predict = _predict(model_def, config)
  default = jnp.array([[config.data.fps, config.data.height, config.data.width]] * x.shape[0], jnp.float32)
  # None: the config's data.fps and the pixel size of x (here data.height, data.width) for every row.
  np.testing.assert_array_equal(model_def.bind(perturbed).micro(None, x.shape), default)
  base, base_g = predict(perturbed, x, t, text, default)
  again, again_g = predict(perturbed, x, t, text, default)
  np.testing.assert_array_equal(base, again)
  np.testing.assert_array_equal(base_g, again_g)
  for column, value in ((0, 24.0), (1, 256.0), (2, 448.0)):   # fps, height, width of row 0 only
    preds, g = predict(perturbed, x, t, text, default.at[0, column].set(value))
    assert float(jnp.abs(preds[0] - base[0]).max()) > 1e-4, column
    assert float(jnp.abs(g[0] - base_g[0]).max()) > 1e-4, column    # the VIN's processor sees it too
    np.testing.assert_array_equal(preds[1], base[1])
    np.testing.assert_array_equal(g[1], base_g[1])


def test_at_init_the_prediction_is_the_model_without_micro_conditions(perturbed):
  """With the zero-initialised `out` layers (the rest of the embedders nonzero), a micro-conditions model
  holding another model's weights (what `train --init_from` gives it) predicts what that model predicts,
  whatever the conditions."""
  config_off, config_on = tiny_test_config(), _on()
  params_on = _zero_out(perturbed)
  params_off = {part: ({k: v for k, v in sub.items() if k != NAME} if part in PARTS else sub)
                for part, sub in perturbed.items()}
  off_def = ModelDef(config_off)
  assert _names(params_off) == _names(off_def.abstract_params())
  x, t, text = random_inputs(config_on)
  want, want_g = _predict(off_def, config_off)(params_off, x, t, text, None)
  predict = _predict(ModelDef(config_on), config_on)
  for micro in (None, jnp.array([[24.0, 512.0, 320.0], [5.0, 64.0, 64.0]])):
    got, got_g = predict(params_on, x, t, text, micro)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    np.testing.assert_allclose(got_g, want_g, atol=1e-6, rtol=0)


def test_training_gradients_reach_the_embedders(perturbed):
  """Through the training loss (which passes no micro_BxK: the config's values): with the `out` layers at
  their zero init only they get gradient; once they are nonzero, every embedder layer does. (The rest of the
  model is perturbed: the DiT's zero-initialised final layer would stop all gradient.)"""
  config = _on()
  batch = train_batch(config)
  loss_sums = train_lib.make_loss_sums(ModelDef(config), config)
  grad = jax.jit(jax.grad(lambda p, frames, text: loss_sums(p, frames, text, jax.random.key(3))["loss"]))
  grads = grad(_zero_out(perturbed), batch["frames"], batch["text_tokens"])
  for part in PARTS:
    g = grads[part][NAME]
    assert float(optax.tree.norm(g["out"]["kernel"])) > 0, part
    assert float(optax.tree.norm({k: g[k] for k in CONDITIONS})) == 0.0, part
  grads = grad(perturbed, batch["frames"], batch["text_tokens"])
  for part in PARTS:
    for name in CONDITIONS:
      for layer in ("fc1", "fc2"):
        assert float(optax.tree.norm(grads[part][NAME][name][layer])) > 0, (part, name, layer)


def test_the_training_loss_reads_each_rows_fps(perturbed):
  """The train step passes the pipeline's per-row "micro" to the loss: another fps for one row changes the
  loss; the config's values passed explicitly equal passing none."""
  config = _on()
  batch = train_batch(config)
  loss_sums = jax.jit(train_lib.make_loss_sums(ModelDef(config), config))
  rows = batch["frames"].shape[0]
  own = np.tile(np.array([[config.data.fps, config.data.height, config.data.width]], np.float32), (rows, 1))
  loss = lambda micro: float(loss_sums(perturbed, batch["frames"], batch["text_tokens"], jax.random.key(3),
                                       micro)["loss"])
  assert loss(own) == pytest.approx(loss(None), rel=1e-6)
  halved = own.copy()
  halved[0, 0] /= 2
  assert abs(loss(halved) - loss(own)) > 1e-3   # a loss sum of ~90; float32 noise is ~1e-5


def test_sampling_fps_sets_the_default_micro_condition(perturbed):
  """sampling.fps (0: data.fps) is the fps a call without micro_BxK (the sampler's) conditions on."""
  config = _on()
  slower = tiny_test_config(**{"model.micro_conditions": True, "sampling.fps": config.data.fps / 2})
  x, t, text = random_inputs(config)
  a = _predict(ModelDef(config), config)(perturbed, x, t, text, None)[0]
  b = _predict(ModelDef(slower), slower)(perturbed, x, t, text, None)[0]
  micro = np.tile(np.array([[config.data.fps / 2, config.data.height, config.data.width]], np.float32),
                  (x.shape[0], 1))
  c = _predict(ModelDef(config), config)(perturbed, x, t, text, micro)[0]
  assert float(jnp.abs(a - b).max()) > 1e-4
  np.testing.assert_allclose(np.asarray(b), np.asarray(c), atol=1e-6)
