"""The Flax T5 encoder and its converter against transformers' T5EncoderModel; the SentencePiece tokenizer
against transformers' T5Tokenizer. Tiny random models, nothing downloaded."""
import pathlib

import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax import convert
from vin_jax.text import sentencepiece_tokenizer, t5
from tests import hf_models

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

MAX_DISTANCE = hf_models.MAX_DISTANCE


@pytest.fixture(scope="module")
def spiece(tmp_path_factory) -> pathlib.Path:
  return hf_models.train_spiece(tmp_path_factory.mktemp("spm"))


@pytest.fixture(scope="module", params=["gated-gelu", "relu"])
def converted(request, tmp_path_factory, spiece):
  """(torch model, src dir, out dir, Flax encoder) of one random T5 encoder, converted."""
  root = tmp_path_factory.mktemp(f"t5_{request.param}")
  model = hf_models.save_t5_encoder(request.param, root / "src")
  (root / "src" / "spiece.model").write_bytes(spiece.read_bytes())
  convert.convert("t5", root / "src", root / "out")
  return model, root / "src", root / "out", convert.load_module(root / "out", "t5")


def _tokens_and_mask(length, valid=(None, 8), seed=0):
  """int32 [2, length] tokens (no 0 at valid positions) and their mask; row 1 is padded after `valid[1]`."""
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, 100, (2, length)).astype(np.int32)
  mask = np.ones((2, length), bool)
  for row, n in enumerate(valid):
    if n is not None:
      tokens[row, n:], mask[row, n:] = 0, False
  return tokens, mask


def _torch_hidden(model, tokens, mask):
  with torch.no_grad():
    return model(input_ids=torch.from_numpy(tokens).long(),
                 attention_mask=torch.from_numpy(mask).long()).last_hidden_state.numpy()


@pytest.mark.parametrize("length,valid", [(12, (None, 8)), (40, (None, 29))])
def test_matches_transformers_at_valid_positions(converted, length, valid):
  model, _, _, encoder = converted
  tokens, mask = _tokens_and_mask(length, valid)
  ours = np.asarray(encoder(jnp.asarray(tokens), jnp.asarray(mask)))
  ref = _torch_hidden(model, tokens, mask)
  assert ours.dtype == np.float32 and ours.shape == (2, length, encoder.width) == ref.shape
  diff = np.abs(ours - ref)[mask].max()
  print(f"max abs diff L={length}: {diff:.2e}")
  assert diff < 1e-4


def test_bfloat16_compute_stays_close(converted):
  _, _, out, encoder = converted
  bf16 = convert.load_module(out, "t5", dtype=jnp.bfloat16)
  tokens, mask = _tokens_and_mask(12)
  ref = np.asarray(encoder(tokens, mask))
  ours = np.asarray(bf16(tokens, mask))
  assert ours.dtype == np.float32 and np.isfinite(ours).all()
  diff = np.abs(ours - ref)[mask].max()
  print(f"max abs diff bf16 vs fp32: {diff:.2e}")
  assert diff < 0.1


@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 16)])
def test_position_buckets_match_transformers(num_buckets, max_distance):
  from transformers.models.t5.modeling_t5 import T5Attention
  pos = torch.arange(300)
  ref = T5Attention._relative_position_bucket(pos[None, :] - pos[:, None], True, num_buckets, max_distance)
  np.testing.assert_array_equal(t5.relative_position_buckets(300, num_buckets, max_distance), ref.numpy())


def test_module_config_and_its_errors(tmp_path):
  config = t5.module_config_from_hf(hf_models.t5_config("gated-gelu").to_dict())
  assert config == {"vocab_size": 100, "d_model": 32, "d_kv": 8, "d_ff": 64, "num_layers": 2, "num_heads": 4,
                    "relative_attention_num_buckets": 8, "relative_attention_max_distance": MAX_DISTANCE,
                    "feed_forward_proj": "gated-gelu", "layer_norm_epsilon": 1e-6}
  minimal = {k: config[k] for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")}
  assert t5.module_config_from_hf(minimal)["relative_attention_max_distance"] == 128
  with pytest.raises(ValueError, match="feed_forward_proj='gated-silu'"):
    t5.module_config_from_hf({**config, "feed_forward_proj": "gated-silu"})
  with pytest.raises(ValueError, match="model_type='bert'"):
    t5.module_config_from_hf({**config, "model_type": "bert"})
  with pytest.raises(KeyError, match="d_kv"):
    t5.module_config_from_hf({k: v for k, v in config.items() if k != "d_kv"})


def test_every_param_has_a_source():
  for ffn in ("gated-gelu", "relu"):
    config = t5.module_config_from_hf(hf_models.t5_config(ffn).to_dict())
    assert set(convert.abstract_shapes("t5", config)) == set(t5.hf_sources(config))


def test_converter_copies_spiece_and_tokens_run_through(converted, spiece):
  _, src, out, encoder = converted
  assert (out / "spiece.model").read_bytes() == spiece.read_bytes()
  tokens, mask = sentencepiece_tokenizer.SentencePieceTokenizer(out / "spiece.model")(
      ["a red dog jumps", "two green robots spin under the bridge"], max_length=16)
  hidden = np.asarray(encoder(tokens, mask))
  ref = _torch_hidden(converted[0], tokens, mask)
  assert np.abs(hidden - ref)[mask].max() < 1e-4


def test_full_checkpoint_tensors_are_ignored_and_unknown_ones_reported(tmp_path, converted):
  model, src, _, encoder = converted
  tensors = safetensors_numpy.load_file(src / "model.safetensors")
  tensors.update({"encoder.embed_tokens.weight": tensors["shared.weight"],    # a tied copy
                  "decoder.block.0.layer.0.SelfAttention.q.weight": np.zeros((32, 32), np.float32),
                  "decoder.final_layer_norm.weight": np.ones((32,), np.float32),
                  "lm_head.weight": np.zeros((100, 32), np.float32)})
  full = tmp_path / "full"
  full.mkdir()
  (full / "config.json").write_text((src / "config.json").read_text())
  safetensors_numpy.save_file(tensors, full / "model.safetensors")
  convert.convert("t5", full, tmp_path / "out")
  tokens, mask = _tokens_and_mask(12)
  np.testing.assert_array_equal(np.asarray(convert.load_module(tmp_path / "out", "t5")(tokens, mask)),
                                np.asarray(encoder(tokens, mask)))
  # Only the alias: the embedding still converts.
  only_alias = {k: v for k, v in tensors.items() if k != "shared.weight"}
  safetensors_numpy.save_file(only_alias, full / "model.safetensors")
  convert.convert("t5", full, tmp_path / "out_alias")
  safetensors_numpy.save_file({**tensors, "encoder.extra.weight": np.zeros((2,), np.float32)},
                              full / "model.safetensors")
  with pytest.raises(convert.ConversionError, match="unexpected tensor 'encoder.extra.weight'"):
    convert.convert("t5", full, tmp_path / "out2")


def test_convert_names_a_bad_config(tmp_path, converted):
  _, src, _, _ = converted
  bad = tmp_path / "bad"
  bad.mkdir()
  (bad / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
  (bad / "config.json").write_text((src / "config.json").read_text().replace('"relu"', '"gelu"')
                                   .replace('"gated-gelu"', '"gated-silu"'))
  with pytest.raises(convert.ConversionError, match="feed_forward_proj"):
    convert.convert("t5", bad, tmp_path / "out")


# ----------------------------------------------------------------------------------------------
# The tokenizer.

TEXTS = ["a red dog jumps", "  Zebra  x   é", "", "two green robots spin quickly towards the camera",
         "the blue kitten rolls over a cat"]


def _reference_ids(model_file: pathlib.Path, texts, max_length):
  """transformers' T5 tokenizer ids and mask for the model file (offline), or, where transformers cannot
  build one from it, sentencepiece's pieces + EOS, truncated and padded as the T5 tokenizer does."""
  try:
    tok = transformers.T5Tokenizer.from_pretrained(str(model_file.parent))
  except (OSError, ValueError, ImportError):
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    rows = [ids[:max_length - 1] + [1] for ids in sp.encode(list(texts))]
    ids = [r + [0] * (max_length - len(r)) for r in rows]
    return np.array(ids), np.array([[1] * len(r) + [0] * (max_length - len(r)) for r in rows])
  enc = tok(list(texts), max_length=max_length, padding="max_length", truncation=True)
  return np.array(enc["input_ids"]), np.array(enc["attention_mask"])


@pytest.mark.parametrize("max_length", [1, 4, 12, 40])
def test_tokenizer_matches_the_t5_tokenizer(spiece, max_length):
  tokenizer = sentencepiece_tokenizer.SentencePieceTokenizer(spiece)
  tokens, mask = tokenizer(TEXTS, max_length)
  assert tokens.dtype == np.int32 and mask.dtype == bool and tokens.shape == mask.shape == (len(TEXTS), max_length)
  ref_ids, ref_mask = _reference_ids(spiece, TEXTS, max_length)
  np.testing.assert_array_equal(tokens, ref_ids)
  np.testing.assert_array_equal(mask, ref_mask.astype(bool))
  assert (tokens[np.arange(len(TEXTS)), mask.sum(1) - 1] == 1).all()   # EOS last
  assert tokenizer.vocab_size == spm.SentencePieceProcessor(model_file=str(spiece)).get_piece_size()


def test_tokenizer_errors(tmp_path, spiece):
  with pytest.raises(FileNotFoundError, match="nope.model"):
    sentencepiece_tokenizer.SentencePieceTokenizer(tmp_path / "nope.model")
  (tmp_path / "junk.model").write_bytes(b"not a model")
  with pytest.raises(ValueError, match="junk.model"):
    sentencepiece_tokenizer.SentencePieceTokenizer(tmp_path / "junk.model")
  tokenizer = sentencepiece_tokenizer.SentencePieceTokenizer(spiece)
  with pytest.raises(TypeError, match="sequence of texts"):
    tokenizer("abc", 4)
  with pytest.raises(ValueError, match="max_length=0"):
    tokenizer(["abc"], 0)
