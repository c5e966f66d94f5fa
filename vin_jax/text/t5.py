"""The T5 encoder (transformers' `T5EncoderModel`) in Flax NNX, and its rules for `vin_jax.convert` (kind "t5").

    python -m vin_jax.main convert --kind=t5 --src=DIR_OF_save_pretrained --out=OUT
    encoder = convert.load_module(OUT, "t5"); hidden_BxLxD = encoder(tokens_BxL, mask_BxL)

T5 v1.0 ("relu") and v1.1 / T5-XXL ("gated-gelu"): RMS layer norms without bias or mean subtraction (pre-norm),
attention logits without the 1/sqrt(d_kv) scale plus a learned bias per head and bidirectional relative-position
bucket (one table, used by every layer), no position embeddings. Parameters are fp32; the linear layers and the
attention matmuls compute in `dtype`; the norms, the softmax and the residual stream are fp32.

Shape letters: B batch, L tokens, H heads, Dk d_kv, D d_model.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vin_jax.convert import Source
from vin_jax.model import layers

FEED_FORWARD_PROJ = ("relu", "gated-gelu")
MODEL_TYPES = ("t5", "mt5")   # same encoder; umT5 (a bias table per layer) is not this architecture
_REQUIRED = ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")
_DEFAULTS = {"relative_attention_num_buckets": 32, "relative_attention_max_distance": 128,
             "feed_forward_proj": "relu", "layer_norm_epsilon": 1e-6}   # T5Config's defaults
# Tensors of a full T5ForConditionalGeneration checkpoint that the encoder does not use.
IGNORED_HF = (r"decoder\..*", r"lm_head\.weight")


def module_config_from_hf(hf_config: dict) -> dict:
  """The encoder's settings from a T5 config.json (missing optional fields take T5Config's defaults)."""
  model_type = hf_config.get("model_type", "t5")
  if model_type not in MODEL_TYPES:
    raise ValueError(f"model_type={model_type!r} must be one of {MODEL_TYPES}")
  missing = [k for k in _REQUIRED if k not in hf_config]
  if missing:
    raise KeyError(f"config fields {missing} are missing")
  config = {k: int(hf_config[k]) for k in _REQUIRED}
  config.update({k: hf_config.get(k, default) for k, default in _DEFAULTS.items()})
  for k in ("relative_attention_num_buckets", "relative_attention_max_distance"):
    config[k] = int(config[k])
  config["layer_norm_epsilon"] = float(config["layer_norm_epsilon"])
  if config["feed_forward_proj"] not in FEED_FORWARD_PROJ:
    raise ValueError(f"feed_forward_proj={config['feed_forward_proj']!r} must be one of {FEED_FORWARD_PROJ}")
  return config


def build(module_config: dict, rngs: nnx.Rngs, dtype=jnp.float32) -> T5Encoder:
  return T5Encoder(module_config, rngs=rngs, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Relative positions.

def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> np.ndarray:
  """int32 [L, L]: the bidirectional bucket of key position minus query position (T5's, in float32 as
  transformers computes it, so that bucket edges fall on the same side). Half of each direction's buckets are
  exact offsets, the other half logarithmic up to max_distance (farther offsets share the last bucket)."""
  offset_LxL = np.arange(length)[None, :] - np.arange(length)[:, None]
  half = num_buckets // 2
  max_exact = half // 2
  distance = np.abs(offset_LxL)
  with np.errstate(divide="ignore"):   # distance 0 takes the exact branch
    log_ratio = np.log(distance.astype(np.float32) / np.float32(max_exact))
  scaled = log_ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
  far = max_exact + np.nan_to_num(scaled, neginf=0.0).astype(np.int64)
  bucket = np.where(distance < max_exact, distance, np.minimum(far, half - 1))
  return (bucket + (offset_LxL > 0) * half).astype(np.int32)


# ----------------------------------------------------------------------------------------------
# The encoder.

def _linear(din: int, dout: int, rngs: nnx.Rngs, dtype) -> nnx.Linear:
  return nnx.Linear(din, dout, use_bias=False, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class SelfAttention(nnx.Module):
  """T5 self-attention: unscaled logits plus a given position bias; padding keys masked."""

  def __init__(self, c: dict, *, rngs: nnx.Rngs, dtype):
    self.num_heads, self.head_dim = c["num_heads"], c["d_kv"]
    inner = self.num_heads * self.head_dim
    self.q = _linear(c["d_model"], inner, rngs, dtype)
    self.k = _linear(c["d_model"], inner, rngs, dtype)
    self.v = _linear(c["d_model"], inner, rngs, dtype)
    self.o = _linear(inner, c["d_model"], rngs, dtype)

  def _heads(self, x_BxLxHDk):
    return x_BxLxHDk.reshape(*x_BxLxHDk.shape[:2], self.num_heads, self.head_dim)

  def __call__(self, x_BxLxD, bias_HxLxL, mask_BxL):
    q, k, v = self._heads(self.q(x_BxLxD)), self._heads(self.k(x_BxLxD)), self._heads(self.v(x_BxLxD))
    logits_BxHxLxL = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32) + bias_HxLxL
    logits_BxHxLxL = jnp.where(mask_BxL[:, None, None, :], logits_BxHxLxL, layers.NEG_INF)
    probs = jax.nn.softmax(logits_BxHxLxL, axis=-1).astype(v.dtype)
    out_BxLxHxDk = jnp.einsum("bhqk,bkhd->bqhd", probs, v)
    return self.o(out_BxLxHxDk.reshape(*out_BxLxHxDk.shape[:2], -1))


class FeedForward(nnx.Module):
  """relu: wo(relu(wi x)); gated-gelu: wo(gelu_tanh(wi_0 x) * wi_1 x)."""

  def __init__(self, c: dict, *, rngs: nnx.Rngs, dtype):
    self.gated = c["feed_forward_proj"] == "gated-gelu"
    if self.gated:
      self.wi_0 = _linear(c["d_model"], c["d_ff"], rngs, dtype)
      self.wi_1 = _linear(c["d_model"], c["d_ff"], rngs, dtype)
    else:
      self.wi = _linear(c["d_model"], c["d_ff"], rngs, dtype)
    self.wo = _linear(c["d_ff"], c["d_model"], rngs, dtype)

  def __call__(self, x_BxLxD):
    if self.gated:
      h = jax.nn.gelu(self.wi_0(x_BxLxD), approximate=True) * self.wi_1(x_BxLxD)   # "gelu_new"
    else:
      h = jax.nn.relu(self.wi(x_BxLxD))
    return self.wo(h)


class Block(nnx.Module):
  """Pre-norm residual self-attention, then pre-norm residual feed-forward."""

  def __init__(self, c: dict, *, rngs: nnx.Rngs, dtype):
    eps = c["layer_norm_epsilon"]
    self.attn_norm = layers.RMSNorm(c["d_model"], eps=eps)
    self.attn = SelfAttention(c, rngs=rngs, dtype=dtype)
    self.mlp_norm = layers.RMSNorm(c["d_model"], eps=eps)
    self.mlp = FeedForward(c, rngs=rngs, dtype=dtype)

  def __call__(self, x_BxLxD, bias_HxLxL, mask_BxL):
    x_BxLxD = x_BxLxD + self.attn(self.attn_norm(x_BxLxD), bias_HxLxL, mask_BxL)
    return x_BxLxD + self.mlp(self.mlp_norm(x_BxLxD))


class T5Encoder(nnx.Module):
  """tokens int32 [B, L], mask bool [B, L] -> hidden states float32 [B, L, D] (T5EncoderModel's
  last_hidden_state). Rows at padding positions are computed but meaningless."""

  def __init__(self, c: dict, *, rngs: nnx.Rngs, dtype=jnp.float32):
    dtype = jnp.dtype(dtype)
    self.width = c["d_model"]
    self.num_buckets = c["relative_attention_num_buckets"]
    self.max_distance = c["relative_attention_max_distance"]
    self.embed = nnx.Embed(c["vocab_size"], c["d_model"], param_dtype=jnp.float32, rngs=rngs)
    self.relative_bias = nnx.Embed(self.num_buckets, c["num_heads"], param_dtype=jnp.float32, rngs=rngs)
    self.blocks = nnx.List([Block(c, rngs=rngs, dtype=dtype) for _ in range(c["num_layers"])])
    self.final_norm = layers.RMSNorm(c["d_model"], eps=c["layer_norm_epsilon"])

  def position_bias(self, length: int) -> jax.Array:
    """fp32 [H, L, L]: the bias of each head for each (query, key) pair."""
    buckets_LxL = relative_position_buckets(length, self.num_buckets, self.max_distance)
    return jnp.transpose(self.relative_bias.embedding[...][buckets_LxL], (2, 0, 1))

  def __call__(self, tokens_BxL, mask_BxL):
    mask_BxL = jnp.asarray(mask_BxL, bool)
    x_BxLxD = self.embed(jnp.asarray(tokens_BxL, jnp.int32)).astype(jnp.float32)
    bias_HxLxL = self.position_bias(x_BxLxD.shape[1])
    for block in self.blocks:
      x_BxLxD = block(x_BxLxD, bias_HxLxL, mask_BxL)
    return self.final_norm(x_BxLxD)


# ----------------------------------------------------------------------------------------------
# Where each parameter comes from in a transformers checkpoint.

def hf_sources(module_config: dict) -> dict[str, Source]:
  ffn = ("wi_0", "wi_1", "wo") if module_config["feed_forward_proj"] == "gated-gelu" else ("wi", "wo")
  sources = {
      "embed.embedding": Source("shared.weight", aliases=("encoder.embed_tokens.weight",)),
      "relative_bias.embedding": Source("encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"),
      "final_norm.scale": Source("encoder.final_layer_norm.weight"),
  }
  for i in range(module_config["num_layers"]):
    hf = f"encoder.block.{i}.layer"
    sources[f"blocks.{i}.attn_norm.scale"] = Source(f"{hf}.0.layer_norm.weight")
    for name in ("q", "k", "v", "o"):
      sources[f"blocks.{i}.attn.{name}.kernel"] = Source(f"{hf}.0.SelfAttention.{name}.weight", "linear")
    sources[f"blocks.{i}.mlp_norm.scale"] = Source(f"{hf}.1.layer_norm.weight")
    for name in ffn:
      sources[f"blocks.{i}.mlp.{name}.kernel"] = Source(f"{hf}.1.DenseReluDense.{name}.weight", "linear")
  return sources
