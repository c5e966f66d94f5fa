"""model.attention_layout="factorised" (STIV's spatial then temporal attention) and
model.global_tokens_in_dit="keys_values" (global tokens only as keys and values): what each computes, that they
train, and how they relate to the joint block."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vin_jax import config as config_lib
from vin_jax.model import ModelDef, factorised, layout

from tests.model.helpers import perturbed_params, random_inputs, tiny_test_config

FACTORISED = {"model.attention_layout": "factorised"}
KEYS_VALUES = {"model.global_tokens_in_dit": "keys_values"}


def _predict(config, params, x, t, text, **kwargs):
  model_def = ModelDef(config)
  fn = lambda p, x: model_def.bind(p)(x, t, text, context_frames=config.chunking.context_frames, **kwargs)[0]
  return jax.jit(fn)(params, x)


def test_keys_values_global_tokens_equal_joint_at_depth_1_and_differ_deeper():
  """The DiT drops the global tokens' outputs: one block never reads their update, so both treatments agree;
  from the second block on, joint tokens have been updated and keys_values tokens have not."""
  for depth, same in ((1, True), (2, False)):
    joint = tiny_test_config(**{"model.depth": depth})
    params = perturbed_params(ModelDef(joint))
    x, t, text = random_inputs(joint)
    a = _predict(joint, params, x, t, text)
    b = _predict(tiny_test_config(**{"model.depth": depth}, **KEYS_VALUES), params, x, t, text)
    gap = float(jnp.abs(a - b).max())
    assert (gap < 1e-5) if same else (gap > 1e-4), (depth, gap)


@pytest.mark.parametrize("overrides", [FACTORISED, KEYS_VALUES, {**FACTORISED, **KEYS_VALUES}])
def test_the_global_tokens_are_read(overrides):
  config = tiny_test_config(**overrides)
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  x, t, text = random_inputs(config)
  model = model_def.bind(params)
  own = _predict(config, params, x, t, text)
  other = model.global_tokens(jax.random.normal(jax.random.key(9), x.shape), t, *model.encode_text(text))
  swapped = _predict(config, params, x, t, text, global_tokens=other)
  assert float(jnp.abs(own - swapped).max()) > 1e-4


def _block(seed=0):
  block = factorised.FactorisedDiTBlock(16, 2, 2.0, 8, rngs=nnx.Rngs(seed))
  block.temporal_table[...] = 0.5 * jax.random.normal(jax.random.key(seed + 1), block.temporal_table.shape)
  return block


def test_temporal_attention_runs_along_time_at_each_position():
  """Perturbing one token (frame 1, position 2) moves only position 2, in every frame."""
  block = _block()
  b, t, s, d = 2, 4, 6, 16
  x = jax.random.normal(jax.random.key(2), (b, t, s, d))
  mod = 0.1 * jax.random.normal(jax.random.key(3), (b, t, 6, d))
  rope = jnp.zeros((t * s, 4))
  base = block.temporal(x, mod, rope, None, None)
  moved = block.temporal(x.at[:, 1, 2].add(1.0), mod, rope, None, None)
  change = jnp.abs(moved - base).max(axis=(0, 3))               # [T, S]
  assert float(change[:, 2].min()) > 1e-4                        # every frame at position 2
  assert float(jnp.delete(change, 2, axis=1).max()) == 0.0       # nothing elsewhere


@pytest.mark.parametrize("gate, crosses", [(0.0, False), (0.5, True)])
def test_factorised_frames_meet_only_through_the_temporal_attention(gate, crosses):
  """Without global tokens or context, a frame's prediction depends on another frame only through the
  temporal attention: with its gate at 0 (as initialised) frames are independent images."""
  config = tiny_test_config(**FACTORISED, **{"vin.enabled": False, "chunking.context_frames": 0,
                                           "model.temporal_patch": 1})   # a frame is a time patch
  params = perturbed_params(ModelDef(config))
  for i in params["dit"]["blocks"]:
    params["dit"]["blocks"][i]["temporal_table"] = params["dit"]["blocks"][i]["temporal_table"].at[2].set(gate)
  x, t, text = random_inputs(config, num_chunks=2)
  base = _predict(config, params, x, t, text)
  moved = _predict(config, params, x.at[:, 0, 3].add(1.0), t, text)
  change = jnp.abs(moved - base).max(axis=(0, 3, 4, 5))         # [N, F]
  assert float(change[0, 3]) > 1e-4
  others = float(jnp.delete(change[0], 3).max())
  assert (others > 1e-4) if crosses else (others == 0.0), others
  assert float(change[1].max()) == 0.0                           # another window (no context, no VIN)


def test_factorised_model_trains():
  """A few AdamW steps on one batch lower the loss, and the temporal attention gets gradients."""
  from vin_jax import train as train_lib
  from tests.model.helpers import train_batch
  config = tiny_test_config(**FACTORISED)
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  batch = train_batch(config)
  loss_sums = train_lib.make_loss_sums(model_def, config)
  optimizer = optax.adam(3e-3)

  @jax.jit
  def step(params, state, frames, text):
    loss, grads = jax.value_and_grad(lambda p: loss_sums(p, frames, text, jax.random.key(3))["loss"])(params)
    updates, state = optimizer.update(grads, state, params)
    return optax.apply_updates(params, updates), state, loss, grads

  state = optimizer.init(params)
  losses = []
  for _ in range(5):
    params, state, loss, grads = step(params, state, batch["frames"], batch["text_tokens"])
    losses.append(float(loss))
  assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
  assert float(optax.tree.norm(grads["dit"]["blocks"][0]["temporal_attn"])) > 0


def test_scanned_factorised_blocks_equal_unrolled():
  config = tiny_test_config(**FACTORISED)
  params = perturbed_params(ModelDef(config))
  x, t, text = random_inputs(config)
  a = _predict(config, params, x, t, text)
  scanned = tiny_test_config(**FACTORISED, **{"model.scan_layers": True})
  b = _predict(scanned, layout.stack_layers(params), x, t, text)
  assert float(jnp.abs(a - b).max()) < 1e-5


def test_layout_options_are_validated():
  config = tiny_test_config(**{"model.attention_layout": "spatial"})
  with pytest.raises(config_lib.ConfigError, match="model.attention_layout"):
    config_lib.validate(config)
  config = tiny_test_config(**FACTORISED, **{"train.mask_ratio": 0.5})
  with pytest.raises(config_lib.ConfigError, match="attention_layout='joint'"):
    config_lib.validate(config)
