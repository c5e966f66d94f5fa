"""model.dtype="bfloat16" reaches the VIN and the text encoder: their linear layers run in bf16 (parameters fp32),
while softmax, norms, the timestep embedders and AdaLN stay fp32, and the results stay close to fp32's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax.model import ModelDef

from tests.model.helpers import random_inputs, tiny_test_config

BF16 = {"model.dtype": "bfloat16"}
PRECOMPUTED = {"text.encoder": "precomputed", "text.precomputed_dim": 24}


def _dot_generals(jaxpr):
  """Every dot_general equation of a jaxpr, nested ones (jit, scan, remat) included."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      yield eqn
    for value in eqn.params.values():
      for sub in value if isinstance(value, (tuple, list)) else (value,):
        if isinstance(sub, jax.extend.core.ClosedJaxpr):
          yield from _dot_generals(sub.jaxpr)
        elif isinstance(sub, jax.extend.core.Jaxpr):
          yield from _dot_generals(sub)


def _matmul_dtypes(fn, *args):
  """({operand dtypes} of the dot_generals without batch dimensions (linear layers), those of the batched ones
  (attention logits and weighted sums)) as lists of dtype names."""
  linear, batched = [], []
  for eqn in _dot_generals(jax.make_jaxpr(fn)(*args).jaxpr):
    (_, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
    dtypes = tuple(str(v.aval.dtype) for v in eqn.invars)
    (batched if lhs_batch else linear).append(dtypes)
  return linear, batched


def _parts(overrides):
  """(VIN call, text call, their inputs) of the tiny model with `overrides`, on fp32-config parameters."""
  config = tiny_test_config(**overrides)
  model_def = ModelDef(config)
  # N(0, 0.05) host weights, the same for both dtypes (no zero-initialised gate hides a path; no init compiled).
  rng = np.random.RandomState(0)
  params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.05, a.shape), a.dtype), model_def.abstract_params())
  x, t, text = random_inputs(config, batch=1, num_chunks=2)
  if config.text.encoder == "precomputed":
    text = jax.random.normal(jax.random.key(5), (1, config.text.max_length, config.text.precomputed_dim))
  t_video = jnp.full((1,), 0.6)

  def vin_call(p, x_, t_, text_):
    model = model_def.bind(p)
    tokens, mask = model.encode_text(text_)
    return model.vin(x_, t_, t_video, tokens, mask)

  def text_call(p, text_):
    return model_def.bind(p).encode_text(text_)[0]

  return vin_call, text_call, (params, x, t, text)


@pytest.mark.parametrize("text_overrides", [{}, PRECOMPUTED], ids=["bytes", "precomputed"])
def test_vin_and_text_encoder_linear_layers_run_in_bf16(text_overrides):
  config = tiny_test_config(**text_overrides)
  vin_call, text_call, (params, x, t, text) = _parts({**BF16, **text_overrides})
  text_linear, text_batched = _matmul_dtypes(text_call, params, text)
  # Per encoder block: q, k, v, out, fc1, fc2; plus the projection of precomputed embeddings.
  want_text = 6 * config.text.depth + (1 if text_overrides else 0)
  assert text_linear == [("bfloat16", "bfloat16")] * want_text
  assert set(text_batched) == {("float32", "float32")}               # attention's softmax path stays fp32
  vin_linear, vin_batched = _matmul_dtypes(vin_call, params, x, t, text)
  vin_linear = vin_linear[len(text_linear):]                         # the VIN's own, after the text encoder's
  bf16 = [d for d in vin_linear if d == ("bfloat16", "bfloat16")]
  fp32 = [d for d in vin_linear if d == ("float32", "float32")]
  # patch_embed, frame_pos, cross q/k/v/out, mlp fc1/fc2; each processor block: 2 x 4 attention projections + mlp.
  assert len(bf16) == 8 + 10 * config.vin.processor_depth
  assert len(fp32) == 5 and len(bf16) + len(fp32) == len(vin_linear)   # the two timestep embedders, AdaLN
  assert set(vin_batched) == {("float32", "float32")}


def test_bf16_vin_and_text_encoder_stay_close_to_fp32():
  vin_bf16, text_bf16, args = _parts(BF16)
  vin_fp32, text_fp32, _ = _parts({})
  for bf16_call, fp32_call, call_args in ((text_bf16, text_fp32, (args[0], args[3])), (vin_bf16, vin_fp32, args)):
    got, want = jax.jit(bf16_call)(*call_args), jax.jit(fp32_call)(*call_args)
    got = np.asarray(got.astype(jnp.float32))
    assert np.isfinite(got).all()
    scale = np.abs(np.asarray(want)).max()
    np.testing.assert_allclose(got, want, atol=0.05 * scale)
    assert np.abs(got - want).mean() < 0.01 * scale
  assert jax.eval_shape(vin_bf16, *args).dtype == jnp.bfloat16                     # global tokens reach global_proj in bf16
