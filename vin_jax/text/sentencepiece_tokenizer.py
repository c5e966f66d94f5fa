"""T5's SentencePiece tokenizer from a user-supplied model file (e.g. the spiece.model that `convert --kind=t5`
copies next to the weights). Nothing is downloaded.

Ids follow the Hugging Face T5 tokenizer: the text's pieces, then EOS (1); truncated to max_length with EOS
kept last; padded with 0 (PAD). The sentinel tokens <extra_id_N> are not parsed (text is plain text).
"""
from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np

PAD = 0
EOS = 1


class SentencePieceTokenizer:

  def __init__(self, model_file: str | pathlib.Path):
    import sentencepiece
    self.model_file = pathlib.Path(model_file)
    if not self.model_file.is_file():
      raise FileNotFoundError(f"SentencePiece model {str(self.model_file)!r} does not exist (T5's is spiece.model, "
                              "copied into the output of `convert --kind=t5` when the source has it)")
    self._sp = sentencepiece.SentencePieceProcessor()
    try:
      self._sp.Load(str(self.model_file))
    except (RuntimeError, OSError) as e:
      raise ValueError(f"{str(self.model_file)!r} is not a SentencePiece model: {e}") from None
    if (self._sp.pad_id(), self._sp.eos_id()) != (PAD, EOS):
      raise ValueError(f"{str(self.model_file)!r} has pad_id={self._sp.pad_id()}, eos_id={self._sp.eos_id()}; "
                       f"a T5 SentencePiece model has pad_id={PAD}, eos_id={EOS}")

  @property
  def vocab_size(self) -> int:
    return self._sp.GetPieceSize()

  def __call__(self, texts: Sequence[str], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """Texts -> (tokens int32 [B, max_length], mask bool [B, max_length]); the mask covers pieces and EOS."""
    if max_length <= 0:
      raise ValueError(f"max_length={max_length!r} must be > 0")
    if isinstance(texts, (str, bytes)):
      raise TypeError(f"the tokenizer expects a sequence of texts, got a single {type(texts).__name__}: "
                      f"{texts!r:.40}")
    tokens = np.full((len(texts), max_length), PAD, np.int32)
    mask = np.zeros((len(texts), max_length), bool)
    for row, ids in enumerate(self._sp.EncodeAsIds(list(texts))):
      ids = ids[:max_length - 1] + [EOS]
      tokens[row, :len(ids)] = ids
      mask[row, :len(ids)] = True
    return tokens, mask
