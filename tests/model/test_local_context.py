"""chunking.context_mode="shared": each chunk's self-attention reads its neighbour's keys and values.

Against an explicit reference (one attention layer over [neighbour's last frames at positions -L'..-1,
own frames]); against recompute mode where both must agree (L = 0); and the stop-gradient acts on
parameters in both modes."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from vin_jax import config as config_lib
from vin_jax.model import ModelDef, layers
from vin_jax.model.local_context import LocalContext, apply_time_shift

from tests.model.helpers import loss_and_grads, perturbed_params, random_inputs, tiny_test_config, train_batch

SHARED = {"chunking.context_mode": "shared", "sampling.fusion": "none"}


def test_time_shift_moves_rope_positions():
  head_dim, theta = 12, 100.0
  k = jax.random.normal(jax.random.key(0), (1, 5, 2, head_dim))
  positions = np.stack([np.arange(5) + 3, np.arange(5) % 2, np.zeros(5, int)], axis=-1)
  rotated = layers.apply_rope(k, layers.rope_angles(jnp.asarray(positions), head_dim, theta))
  direct = layers.apply_rope(k, layers.rope_angles(jnp.asarray(positions - [7, 0, 0]), head_dim, theta))
  np.testing.assert_allclose(apply_time_shift(rotated, -7, head_dim, theta), direct, atol=1e-5)


def test_shared_attention_matches_an_explicit_reference():
  """Three chunks of 3 frames x 2 tokens, context 2 frames: chunk i attends to [its own tokens at time
  0..2, chunk i-1's last 2 frames at time -2..-1]; chunk 0 to its own only."""
  n, tp, s, lp, width, heads, theta = 3, 3, 2, 2, 16, 2, 100.0
  attn = layers.Attention(width, heads, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (n, tp * s, width))        # one row, N chunks
  grid = lambda times: np.stack([np.repeat(times, s), np.tile(np.arange(s), len(times)),
                                 np.zeros(len(times) * s, int)], axis=-1)
  rope = layers.rope_angles(jnp.asarray(grid(np.arange(tp))), width // heads, theta)
  context = LocalContext("shared", lp, s, tp, n, False, None, width // heads, theta)
  out = attn(x, rope_angles_LxP=rope, local_context=context)

  for i in range(n):
    own = x[i:i + 1]
    if i == 0:
      ref = attn(own, rope_angles_LxP=rope)
    else:   # the neighbour's tokens of its last lp frames, with their true positions relative to chunk i
      tokens = jnp.concatenate([x[i - 1:i, (tp - lp) * s:], own], axis=1)
      angles = layers.rope_angles(jnp.asarray(grid(np.arange(-lp, tp))), width // heads, theta)
      ref = attn(tokens, rope_angles_LxP=angles)[:, lp * s:]
    np.testing.assert_allclose(out[i:i + 1], ref, atol=1e-5, rtol=1e-5)


def test_first_chunk_skips_its_masked_halo():
  """`attend` equals keys_values + one masked attention (2 rows x 4 chunks, a key mask on the keys-only tail)
  and XLA counts fewer FLOPs: the first chunk's queries no longer meet L' x S halo keys."""
  b, n, tp, s, lp, heads, dh = 2, 4, 3, 4, 2, 2, 32
  q, k, v = (jax.random.normal(jax.random.key(i), (b * n, tp * s + 3, heads, dh)) for i in range(3))
  q = q[:, :tp * s]
  mask = jnp.ones((b * n, tp * s + 3), bool).at[:, -1].set(False)
  context = LocalContext("shared", lp, s, tp, n, False, None, dh, 100.0)

  def masked(q, k, v, mask):
    k2, v2, m2 = context.keys_values(k, v, mask)
    return layers.attention(q, k2, v2, m2)

  split = lambda q, k, v, mask: context.attend(q, k, v, mask, kind="einsum")
  np.testing.assert_allclose(split(q, k, v, mask), masked(q, k, v, mask), atol=1e-6)
  flops = {name: jax.jit(f).lower(q, k, v, mask).compile().cost_analysis()["flops"]
           for name, f in (("masked", masked), ("split", split))}
  halo_matmuls = 4 * b * heads * (tp * s) * (lp * s) * dh          # QK and PV against one chunk's halo, per row
  # XLA's CPU count is not exactly linear in the rows at these sizes (0.9x of the matmuls here); without the
  # split the difference is about 0.
  assert flops["masked"] - flops["split"] >= 0.5 * halo_matmuls, flops


def _predict(overrides, context_frames, x=None, **kwargs):
  config = tiny_test_config(**overrides)
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  x_random, t, text = random_inputs(config)
  x = x_random if x is None else x
  return model_def.bind(params)(x, t, text, context_frames=context_frames, **kwargs)


def test_without_context_shared_and_recompute_agree():
  recompute, _ = _predict({}, 0)
  shared, valid = _predict(SHARED, 0)
  np.testing.assert_array_equal(np.asarray(shared), np.asarray(recompute))
  assert bool(valid.all())


def test_shared_windows_are_chunks_that_read_the_previous_chunk():
  config = tiny_test_config(**SHARED)
  x, _, _ = random_inputs(config)
  f = config.chunking.chunk_frames
  for L, moves in ((0, False), (2, True)):
    base, valid = _predict(SHARED, L, use_global=False, x=x)
    assert base.shape[2] == f and valid.shape == (x.shape[1], f)   # one prediction per frame
    moved, _ = _predict(SHARED, L, use_global=False, x=x.at[:, 0].add(1.0))
    change = float(jnp.abs(moved[:, 1] - base[:, 1]).max())
    assert (change > 1e-3) if moves else (change == 0.0), (L, change)


@pytest.mark.parametrize("mode", [{}, SHARED], ids=["recompute", "shared"])
def test_stop_gradient_context_changes_parameter_gradients(mode):
  grads = {}
  for stop in (True, False):
    config = tiny_test_config(**mode, **{"chunking.stop_gradient_context": stop})
    params = perturbed_params(ModelDef(config))
    _, grads[stop] = loss_and_grads(config, params, train_batch(config))
  diff = optax.tree.norm(jax.tree.map(lambda a, b: a - b, grads[True], grads[False]))
  assert float(diff) > 1e-6 * float(optax.tree.norm(grads[False]))


def test_shared_mode_refuses_fusion():
  config = tiny_test_config(**{"chunking.context_mode": "shared"})
  config.sampling.fusion = "early"
  with pytest.raises(config_lib.ConfigError, match="sampling.fusion"):
    config_lib.validate(config)


def test_every_windowed_sampling_method_runs_in_shared_mode():
  """vin, no_global, autoregressive (each chunk reads its clean predecessor's keys and values) and
  freenoise (one-chunk windows: nothing to read) sample a 3-chunk video; methods differ."""
  from vin_jax import sampling
  config = tiny_test_config(**SHARED, **{"sampling.num_steps": 2})
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  _, _, text = random_inputs(config, batch=1)
  out = {m: np.asarray(sampling.generate(config, model_def, params, text, jax.random.key(0), method=m,
                                         num_chunks=3))
         for m in ("vin", "no_global", "autoregressive", "freenoise")}
  for m, video in out.items():
    assert video.shape[1:3] == (3, config.chunking.chunk_frames) and np.isfinite(video).all(), m
  assert np.abs(out["vin"] - out["autoregressive"]).max() > 1e-4
