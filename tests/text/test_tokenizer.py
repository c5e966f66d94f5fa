import numpy as np
import pytest

from vin_jax.text import tokenizer


def test_tokens_are_bytes_plus_one_with_zero_padding():
  tokens = tokenizer.tokenize(["ab", b"c"], max_length=4)
  assert tokens.dtype == np.int32 and tokens.shape == (2, 4)
  np.testing.assert_array_equal(tokens, [[ord("a") + 1, ord("b") + 1, 0, 0], [ord("c") + 1, 0, 0, 0]])


def test_round_trip_and_truncation():
  texts = ["a video of two sprites", "héllo wörld", ""]
  tokens = tokenizer.tokenize(texts, max_length=32)
  assert tokens.min() >= 0 and tokens.max() < tokenizer.VOCAB_SIZE
  assert tokenizer.detokenize(tokens) == texts
  assert tokenizer.detokenize(tokenizer.tokenize(["abcdef"], max_length=3)) == ["abc"]


def test_all_byte_values_fit_the_vocabulary():
  tokens = tokenizer.tokenize([bytes(range(256))], max_length=256)
  np.testing.assert_array_equal(tokens[0], np.arange(1, 257))
  assert tokenizer.VOCAB_SIZE == 257


def test_bad_arguments_raise():
  with pytest.raises(TypeError, match="sequence of texts"):
    tokenizer.tokenize("abc", max_length=4)
  with pytest.raises(ValueError, match="max_length=0"):
    tokenizer.tokenize(["abc"], max_length=0)
