"""Captions -> the model's text input, by `text.encoder`:

  bytes                 int32 byte tokens [B, text.max_length] (vin_jax.text.tokenizer)
  t5 | precomputed      float32 T5 embeddings [B, text.max_length, text.precomputed_dim], zero at padding
                        (the model's text encoder reads an all-zero row as padding), from the converted T5 at
                        text.t5_dir and its spiece.model

`precomputed` data sets hold these embeddings already (`precompute`); captions still need T5 when sampling
from a prompt. The T5 weights are an argument of one jitted function, not constants.
"""
from __future__ import annotations

import functools
import pathlib
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vin_jax.text import tokenizer


def encode_captions(config, captions: Sequence[str]) -> np.ndarray:
  """Captions -> byte tokens int32 [B, Lt] or T5 embeddings float32 [B, Lt, E] (see the module docstring)."""
  captions = [c.decode("utf-8", errors="replace") if isinstance(c, bytes) else str(c) for c in captions]
  t = config.text
  if t.encoder == "bytes":
    return tokenizer.tokenize(captions, t.max_length)
  return t5_embedder(str(t.get("t5_dir", "")), int(t.max_length), int(t.precomputed_dim))(captions)


@functools.lru_cache(maxsize=2)
def t5_embedder(t5_dir: str, max_length: int, expected_width: int):
  """A function captions -> float32 [B, max_length, width] for the converted T5 in `t5_dir` (cached)."""
  from vin_jax import convert
  from vin_jax.config import ConfigError
  from vin_jax.text.sentencepiece_tokenizer import SentencePieceTokenizer
  if not t5_dir:
    raise ConfigError("text.t5_dir='': T5 embeddings of captions need the directory written by "
                      "`python -m vin_jax.main convert --kind=t5` (with its spiece.model)")
  spiece = pathlib.Path(t5_dir) / convert.TOKENIZER_FILE
  if not spiece.is_file():
    raise ConfigError(f"text.t5_dir={t5_dir!r} has no {convert.TOKENIZER_FILE}: put the T5 SentencePiece model "
                      "next to the source weights and convert again, or copy it there")
  try:
    module = convert.load_module(t5_dir, "t5")
  except convert.ConversionError as e:
    raise ConfigError(f"text.t5_dir={t5_dir!r}: {e}") from None
  if module.width != expected_width:
    raise ConfigError(f"text.precomputed_dim={expected_width}, but the T5 at text.t5_dir={t5_dir!r} is "
                      f"{module.width} wide")
  tokenize = SentencePieceTokenizer(str(spiece))
  graphdef, state = nnx.split(module)

  def embed(captions: Sequence[str]) -> np.ndarray:
    tokens, mask = tokenize(list(captions), max_length)
    return np.asarray(_t5_forward(graphdef, state, jnp.asarray(tokens), jnp.asarray(mask)))

  return embed


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _t5_forward(graphdef, state, tokens_BxL, mask_BxL):
  hidden = nnx.merge(graphdef, state)(tokens_BxL, mask_BxL)   # float32 [B, L, E]
  return jnp.where(mask_BxL[..., None], hidden, 0.0)
