"""The memory-saving paths compute what the reference computes: attention kinds (blocked, XLA's
dot_product_attention, Pallas splash attention in interpret mode) against einsum, and rematerialised blocks
against plain ones (fp32, 1e-5)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax.model import ModelDef, layers

from tests.model.helpers import loss_and_grads, perturbed_params, tiny_test_config, train_batch


def _qkv(b=2, q=37, k=29, h=2, d=8):
  ks = jax.random.split(jax.random.key(0), 4)
  qkv = [jax.random.normal(kk, (b, n, h, d)) for kk, n in zip(ks[:3], (q, k, k))]
  mask = jax.random.uniform(ks[3], (b, k)) > 0.3
  mask = mask.at[1].set(False)          # row 1 sees no key at all: output 0 in every kind
  return (*qkv, mask)


@pytest.mark.parametrize("kind", ["blocked", "xla", "splash"])
def test_attention_kinds_match_the_einsum_reference(kind, monkeypatch):
  monkeypatch.setattr(layers, "BLOCK_QUERIES", 8)   # 37 queries: 5 blocks, the last one padded
  q, k, v, mask = _qkv()
  ref = layers.attention(q, k, v, mask, kind="einsum")
  out = layers.attention(q, k, v, mask, kind=kind)
  np.testing.assert_allclose(out, ref, atol=1e-5, rtol=1e-5)
  np.testing.assert_array_equal(np.asarray(out[1]), 0.0)
  loss = lambda kind_: lambda q_, k_, v_: jnp.sum(jnp.sin(layers.attention(q_, k_, v_, mask, kind=kind_)))
  for g, g_ref in zip(jax.grad(loss(kind), (0, 1, 2))(q, k, v), jax.grad(loss("einsum"), (0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(g, g_ref, atol=1e-5, rtol=1e-5)


def test_auto_attention_is_the_reference_on_cpu():
  assert layers.resolve_attention("auto") == "einsum"
  assert layers.resolve_attention("auto", backend="tpu") == "splash"
  assert layers.resolve_attention("auto", backend="gpu") == "cudnn"
  with pytest.raises(ValueError, match="model.attention"):
    layers.resolve_attention("flash")


def _loss_and_grads(overrides, batch):
  params = perturbed_params(ModelDef(tiny_test_config()))   # the same parameters for every variant
  return loss_and_grads(tiny_test_config(**overrides), params, batch)


@pytest.fixture(scope="module")
def batch():
  return train_batch(tiny_test_config())


@pytest.fixture(scope="module")
def reference(batch):
  return _loss_and_grads({}, batch)


@pytest.mark.parametrize("overrides", [{"model.remat": "full"}, {"model.remat": "dots", "model.attention": "blocked"},
                                       {"model.remat": "full", "model.attention": "splash"}],
                         ids=lambda o: ",".join(o.values()))
def test_remat_and_attention_choices_give_the_same_loss_and_gradients(overrides, batch, reference, monkeypatch):
  monkeypatch.setattr(layers, "BLOCK_QUERIES", 16)   # tiny windows hold 80 tokens: force several blocks
  loss, grads = _loss_and_grads(overrides, batch)
  ref_loss, ref_grads = reference
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_compute_params_halve_the_matmul_weights_of_a_bf16_model_and_change_no_output():
  from tests.model.helpers import random_inputs
  config = tiny_test_config(**{"model.dtype": "bfloat16"})
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  cast = model_def.compute_params(params)
  nbytes = lambda tree: sum(x.nbytes for x in jax.tree.leaves(tree))
  assert nbytes(cast) < 0.8 * nbytes(params)
  assert cast["dit"]["blocks"][0]["attn"]["q"]["kernel"].dtype == jnp.bfloat16
  assert cast["dit"]["blocks"][0]["attn"]["q_norm"]["scale"].dtype == jnp.float32      # norms stay fp32
  x, t, text = random_inputs(config)
  run = jax.jit(lambda p: model_def.bind(p)(x, t, text, context_frames=2)[0])
  np.testing.assert_array_equal(np.asarray(run(cast)), np.asarray(run(params)))
  fp32 = ModelDef(tiny_test_config())
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(fp32.compute_params(perturbed_params(fp32))))


def test_a_rematerialised_unrolled_model_samples():
  """Remat on unrolled blocks inside the sampler's lax.scan over steps (nnx.remat used to fail there: "Cannot
  mutate Param from a different trace level"); remat does not change the samples."""
  from vin_jax import sampling
  from vin_jax.text import tokenizer
  params = perturbed_params(ModelDef(tiny_test_config()))
  samples = []
  for remat in ("none", "full"):
    config = tiny_test_config(**{"model.remat": remat})
    text = jnp.asarray(tokenizer.tokenize(["one red square"], config.text.max_length))
    samples.append(np.asarray(sampling.generate(config, ModelDef(config), params, text, jax.random.key(0),
                                                num_chunks=2)))
  np.testing.assert_allclose(samples[1], samples[0], atol=1e-5, rtol=1e-5)
