"""The one attention function, RoPE and the patch autoencoder."""
import jax
import jax.numpy as jnp
import numpy as np

from vin_jax.autoencoder import PatchAutoencoder, to_uint8
from vin_jax.model import layers


def test_attention_matches_reference_and_masks_keys():
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 5, 3, 8)) for i in range(3))
  mask = jnp.array([[True] * 7, [True] * 4 + [False] * 3])
  k = jnp.concatenate([k, jax.random.normal(jax.random.key(4), (2, 2, 3, 8))], axis=1)
  v = jnp.concatenate([v, jax.random.normal(jax.random.key(5), (2, 2, 3, 8))], axis=1)
  out, lse = layers.attention(q, k, v, mask, return_lse=True)
  ref = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :])
  np.testing.assert_allclose(out, ref, atol=1e-5)
  logits = jnp.einsum("bqhd,bkhd->bqhk", q, k) / np.sqrt(8)
  ref_lse = jax.nn.logsumexp(jnp.where(mask[:, None, None, :], logits, -jnp.inf), axis=-1)
  np.testing.assert_allclose(lse, ref_lse, atol=1e-5)


def test_split_keys_combine_to_full_attention():
  """The partial-softmax combine used across devices, run here with explicit splits."""
  q = jax.random.normal(jax.random.key(0), (1, 4, 2, 8))
  k, v = (jax.random.normal(jax.random.key(i), (1, 12, 2, 8)) for i in (1, 2))
  parts = [layers.attention(q, k[:, s:s + 4], v[:, s:s + 4], return_lse=True) for s in (0, 4, 8)]
  m = jnp.max(jnp.stack([lse for _, lse in parts]), axis=0)
  num = sum(jnp.exp(lse - m)[..., None] * o for o, lse in parts)
  den = sum(jnp.exp(lse - m) for _, lse in parts)
  np.testing.assert_allclose(num / den[..., None], layers.attention(q, k, v), atol=1e-5)


def test_rope_scores_depend_on_relative_position_only():
  q = jax.random.normal(jax.random.key(0), (1, 1, 1, 12))
  k = jax.random.normal(jax.random.key(1), (1, 1, 1, 12))

  def score(pq, pk):
    aq = layers.rope_angles(jnp.array([pq], jnp.float32), 12, 100.0)
    ak = layers.rope_angles(jnp.array([pk], jnp.float32), 12, 100.0)
    return float(jnp.sum(layers.apply_rope(q, aq) * layers.apply_rope(k, ak)))

  np.testing.assert_allclose(score((3, 1, 2), (1, 0, 0)), score((5, 2, 4), (3, 1, 2)), rtol=1e-4)
  assert abs(score((3, 1, 2), (1, 0, 0)) - score((3, 1, 2), (2, 0, 0))) > 1e-4


def test_rope_leaves_tokens_past_the_angles_untouched():
  x = jax.random.normal(jax.random.key(0), (1, 5, 2, 6))
  angles = layers.rope_angles(jnp.ones((3, 3)), 6, 10.0)
  y = layers.apply_rope(x, angles)
  np.testing.assert_array_equal(y[:, 3:], x[:, 3:])
  assert float(jnp.abs(y[:, :3] - x[:, :3]).max()) > 0


def test_patch_autoencoder_round_trip():
  ae = PatchAutoencoder(spatial_factor=2, temporal_factor=2, scale=1.0)
  pixels = jax.random.randint(jax.random.key(0), (2, 4, 8, 6, 3), 0, 256).astype(jnp.uint8)
  z = ae.encode(pixels)
  assert z.shape == (2, 2, 4, 3, ae.latent_channels)
  np.testing.assert_array_equal(to_uint8(ae.decode(z)), pixels)
