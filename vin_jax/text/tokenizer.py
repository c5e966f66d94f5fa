"""Byte-level tokenizer: token = UTF-8 byte + 1, 0 = padding. No vocabulary file, nothing to download."""
from __future__ import annotations

from typing import Sequence

import numpy as np

PAD = 0
VOCAB_SIZE = 257  # 256 byte values + padding


def tokenize(texts: Sequence[str | bytes], max_length: int) -> np.ndarray:
  """Texts -> int32 [B, max_length]; longer texts are truncated (by bytes), shorter ones padded with 0."""
  if max_length <= 0:
    raise ValueError(f"max_length={max_length!r} must be > 0")
  if isinstance(texts, (str, bytes)):
    raise TypeError(f"tokenize expects a sequence of texts, got a single {type(texts).__name__}: {texts!r:.40}")
  tokens = np.zeros((len(texts), max_length), np.int32)
  for row, text in enumerate(texts):
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    data = data[:max_length]
    tokens[row, :len(data)] = np.frombuffer(data, np.uint8).astype(np.int32) + 1
  return tokens


def detokenize(tokens: np.ndarray) -> list[str]:
  """int [B, L] -> B strings; padding is dropped, and a multi-byte character cut by truncation is replaced."""
  tokens = np.asarray(tokens)
  if tokens.ndim != 2:
    raise ValueError(f"tokens must be [B, L], got shape {tokens.shape}")
  out = []
  for row in tokens:
    data = bytes((row[row != PAD] - 1).astype(np.uint8).tolist())
    out.append(data.decode("utf-8", errors="replace"))
  return out
