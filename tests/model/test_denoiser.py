"""The denoiser: gradient paths (VIN used, context stop-gradient), and VIN / no_global / full as flags."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vin_jax import config as config_lib
from vin_jax import train as train_lib
from vin_jax.diffusion import loss as loss_lib
from vin_jax.diffusion.schedules import Schedule
from vin_jax.model import ModelDef, dit, vin, windows

from tests.model.helpers import perturbed_params, random_inputs, tiny_test_config


def _loss(model_def, config, params, x0, text, rng):
  sums = loss_lib.diffusion_loss(model_def.bind(params), Schedule.from_config(config), config, x0, text, rng)
  return sums["loss"] / x0.shape[0]


def test_chunk_losses_send_gradient_into_the_vin():
  config = tiny_test_config()
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  x0, _, text = random_inputs(config)
  grads = jax.jit(jax.grad(lambda p: _loss(model_def, config, p, x0, text, jax.random.key(3))))(params)
  vin_norm = optax.tree.norm(grads["vin"])
  assert float(vin_norm) > 1e-4
  for name in ("global_init", "cross", "processor", "patch_embed"):
    assert float(optax.tree.norm(grads["vin"][name])) > 0.0, name


@pytest.mark.parametrize("mode, layout", [("recompute", "joint"), ("shared", "joint"), ("recompute", "factorised"),
                                          ("shared", "factorised")])
def test_stop_gradient_isolates_windows_from_their_context(mode, layout):
  """With stop-gradient on, window i's loss sends nothing into chunk i-1 (global tokens held fixed): the
  context's keys and values (recomputed in the window, or the neighbour's own) carry no gradient; in the
  factorised layout (model/factorised.py) the context meets the window in the temporal attention."""
  for stop in (True, False):
    config = tiny_test_config(**{"chunking.stop_gradient_context": stop, "chunking.context_mode": mode,
                                 "sampling.fusion": "none", "model.attention_layout": layout})
    model_def = ModelDef(config)
    params = perturbed_params(model_def)
    x, t, text = random_inputs(config)
    g = jax.random.normal(jax.random.key(5), (x.shape[0], config.vin.num_global_tokens, config.vin.width))
    own_start = model_def.bind(params).context_frames(config.chunking.context_frames)

    def own_loss_of_window_2(x):
      preds, _ = model_def.bind(params)(x, t, text, context_frames=config.chunking.context_frames,
                                        global_tokens=g)
      return jnp.sum(preds[:, 2, own_start:] ** 2)

    grad_x = jax.jit(jax.grad(own_loss_of_window_2))(x)
    into_previous_chunk = float(jnp.abs(grad_x[:, 1]).sum())
    into_own_chunk = float(jnp.abs(grad_x[:, 2]).sum())
    assert into_own_chunk > 0.0
    if stop:
      assert into_previous_chunk == 0.0
    else:
      assert into_previous_chunk > 0.0


def test_global_tokens_change_the_prediction():
  config = tiny_test_config()
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  x, t, text = random_inputs(config)
  model = model_def.bind(params)
  L = config.chunking.context_frames
  own, _ = jax.jit(lambda x: model(x, t, text, context_frames=L))(x)
  other_video = jax.random.normal(jax.random.key(9), x.shape)
  other_tokens = model.global_tokens(other_video, t, *model.encode_text(text))
  swapped, _ = model(x, t, text, context_frames=L, global_tokens=other_tokens)
  none, _ = model(x, t, text, context_frames=L, use_global=False)
  assert float(jnp.abs(own - swapped).max()) > 1e-4
  assert float(jnp.abs(own - none).max()) > 1e-4
  # Per-row global-token dropout (vin.drop_prob, sampling.global_guidance_scale): a dropped row is the
  # no-global prediction, a kept row its own.
  dropped, _ = model(x, t, text, context_frames=L, drop_global_B=jnp.array([True, False]))
  np.testing.assert_allclose(dropped[0], none[0], atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(dropped[1], own[1], atol=1e-5, rtol=1e-5)


def test_global_token_dropout_draws_by_global_row():
  """vin.drop_prob: about that fraction of rows, each row's draw the same whatever rows a device holds (the
  sharded train step's), and none with the option off."""
  config = tiny_test_config(**{"vin.drop_prob": 0.3})
  rng = jax.random.key(4)
  rows = loss_lib.global_token_dropout(rng, config, 1000)
  assert 0.25 < float(jnp.mean(rows)) < 0.35
  np.testing.assert_array_equal(loss_lib.global_token_dropout(rng, config, 10, row_offset=500), rows[500:510])
  assert loss_lib.global_token_dropout(rng, tiny_test_config(), 1000) is None


@pytest.mark.parametrize("overrides, has_vin", [
    ({}, True),
    ({"vin.enabled": False}, False),
    ({"model.window_mode": "full"}, False),
])
def test_vin_no_global_and_full_train_with_the_same_modules(overrides, has_vin):
  config = tiny_test_config(**overrides)
  model_def = ModelDef(config)
  model = model_def.bind(model_def.init(jax.random.key(0)))
  assert isinstance(model.dit, dit.WindowDiT)
  assert isinstance(model.vin, vin.VideoInterfaceNetwork) == has_vin
  optimizer = train_lib.make_optimizer(config)
  state = train_lib.init_state(model_def, optimizer, jax.random.key(0))
  assert ("vin" in state["params"]) == has_vin
  frames = jax.random.randint(jax.random.key(1), (2, 3 * 4, 8, 8, 3), 0, 255).astype(jnp.uint8)
  text = jnp.ones((2, config.text.max_length), jnp.int32)
  step = jax.jit(train_lib.make_train_step(model_def, config, optimizer))
  new_state, metrics = step(state, {"frames": frames, "text_tokens": text}, jax.random.key(2))
  new_state, metrics = step(new_state, {"frames": frames, "text_tokens": text}, jax.random.key(2))
  assert np.isfinite(float(metrics["loss"]))
  assert int(new_state["step"]) == 2  # step 1 has learning rate 0 (warmup from 0)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state["params"], new_state["params"])
  assert max(jax.tree.leaves(moved)) > 0.0


def test_full_mode_is_one_window_over_the_video():
  config = tiny_test_config(**{"model.window_mode": "full"})
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  x, t, text = random_inputs(config, num_chunks=3)
  preds, valid = model_def.bind(params)(x, t, text, context_frames=2)
  assert preds.shape == x.shape and bool(valid.all())
  # Attention spans the whole video: the last chunk's prediction depends on the first chunk.
  grad = jax.jit(jax.grad(lambda x: jnp.sum(model_def.bind(params)(x, t, text, context_frames=2)[0][:, 2] ** 2)))(x)
  assert float(jnp.abs(grad[:, 0]).sum()) > 0.0


def test_precomputed_text_embeddings_and_the_null_embedding():
  """T5-style embeddings [B, Lt, E] (zero rows are padding) enter through a projection; dropped rows see
  only the learned null embedding, whatever the text."""
  config = tiny_test_config(**{"text.encoder": "precomputed", "text.precomputed_dim": 24})
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  x, t, _ = random_inputs(config, num_chunks=2)
  emb = jax.random.normal(jax.random.key(3), (2, 7, 24)).at[:, 5:].set(0.0)
  other = jax.random.normal(jax.random.key(4), (2, 7, 24))
  run = jax.jit(lambda e, drop: model_def.bind(params)(x, t, e, context_frames=2, drop_text_B=drop)[0])
  keep, drop = jnp.zeros((2,), bool), jnp.ones((2,), bool)
  assert float(jnp.abs(run(emb, keep) - run(other, keep)).max()) > 1e-4
  np.testing.assert_allclose(run(emb, drop), run(other, drop), atol=1e-6)


def test_x0_output_is_turned_into_the_objectives_target():
  """network_output="x0": the same network output, read as clean latents and converted by the schedule."""
  config = tiny_test_config(**{"diffusion.network_output": "x0"})
  plain = tiny_test_config(**{"diffusion.network_output": "target", "diffusion.input_skip": False})
  params = perturbed_params(ModelDef(config))
  x, t, text = random_inputs(config)
  L = config.chunking.context_frames
  x0_model, target_model = ModelDef(config).bind(params), ModelDef(plain).bind(params)
  preds, _ = x0_model(x, t, text, context_frames=L)
  raw, _ = target_model(x, t, text, context_frames=L)       # the same weights without any conversion
  win, _ = windows.build_windows(x, L)
  t_win, _ = windows.build_windows(t, L)
  expected = Schedule.from_config(config).target_from_x0(win, raw, t_win, config.diffusion.x0_min_sigma)
  np.testing.assert_allclose(preds, expected, atol=1e-5)
  # A zero-initialised output layer predicts x0 = 0 (the latents' mean): flow target = x_t / t.
  fresh = ModelDef(config)
  preds0, _ = fresh.bind(fresh.init(jax.random.key(0)))(x, t, text, context_frames=L)
  np.testing.assert_allclose(preds0, win / 0.6, rtol=1e-5)


def test_unknown_network_output_is_a_config_error():
  config = tiny_test_config(**{"diffusion.network_output": "eps"})
  with pytest.raises(config_lib.ConfigError, match="diffusion.network_output"):
    config_lib.validate(config)
