"""Random Hugging Face reference models (torch CPU, diffusers, transformers) and a tiny SentencePiece model,
shared by the converter tests and the paper:smoke end-to-end test. Nothing is downloaded."""
import itertools
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")
spm = pytest.importorskip("sentencepiece")

MAX_DISTANCE = 16   # small, so that a 40-token sequence reaches the far buckets


def t5_config(feed_forward_proj):
  return transformers.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                               relative_attention_num_buckets=8, relative_attention_max_distance=MAX_DISTANCE,
                               feed_forward_proj=feed_forward_proj, dropout_rate=0.0)


def train_spiece(directory: pathlib.Path) -> pathlib.Path:
  """A tiny T5-style SentencePiece model (pad 0, eos 1, unk 2, no bos) at directory/spiece.model."""
  words = [["a red", "the blue", "two green", "one small", "three yellow", "many purple"],
           ["ball", "square", "sprite", "dog", "kitten", "triangle", "robot"],
           ["jumps", "walks", "bounces", "spins", "flies", "rolls"],
           ["to the left", "over a cat", "quickly", "under the bridge", "towards the camera"]]
  sentences = [" ".join(w) for w in itertools.product(*words)][::7]
  directory.mkdir(parents=True, exist_ok=True)
  spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_prefix=str(directory / "spiece"),
                                 vocab_size=48, hard_vocab_limit=False, model_type="unigram", pad_id=0, eos_id=1,
                                 unk_id=2, bos_id=-1, num_threads=1, minloglevel=2)
  return directory / "spiece.model"


def save_t5_encoder(feed_forward_proj, src: pathlib.Path, seed=0):
  torch.manual_seed(seed)
  model = transformers.T5EncoderModel(t5_config(feed_forward_proj)).eval()
  with torch.no_grad():   # norm scales start at 1: make them differ, so that each one's mapping is checked
    for name, param in model.named_parameters():
      if "layer_norm" in name:
        param.uniform_(0.5, 1.5)
  model.save_pretrained(src, safe_serialization=True)
  return model


def sd_vae(config: dict, seed: int = 0):
  """A random diffusers VAE, its GroupNorms randomised too (they start as the identity)."""
  torch.manual_seed(seed)
  vae = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * len(config["block_out_channels"]),
                                up_block_types=("UpDecoderBlock2D",) * len(config["block_out_channels"]),
                                sample_size=32, **config).eval()
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if "norm" in name:
        p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * torch.randn_like(p))
  return vae


def wan_vae(config: dict, seed: int = 0):
  """A random diffusers AutoencoderKLWan (latents_mean/std of z_dim values), its RMS norm gammas randomised too
  (they start at 1)."""
  torch.manual_seed(seed)
  z_dim = config["z_dim"]
  stats = dict(latents_mean=[0.1 * i for i in range(z_dim)], latents_std=[1.0 + 0.1 * i for i in range(z_dim)])
  vae = diffusers.AutoencoderKLWan(**{**stats, **config}).eval()
  with torch.no_grad():
    for name, p in vae.named_parameters():
      if name.endswith(".gamma"):
        p.copy_(1.0 + 0.2 * torch.randn_like(p))
  return vae


def save(model, directory):
  """`model.save_pretrained` in safetensors; returns the directory."""
  model.save_pretrained(directory, safe_serialization=True)
  return directory


def max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def assert_vae_matches(ours, ref, atol=1e-4):
  """(mean, logvar, decoded) of our module against the reference's: same shapes, fp32, within `atol`."""
  diffs = {name: max_diff(a, b) for name, a, b in zip(("mean", "logvar", "decode"), ours, ref)}
  for a, b in zip(ours, ref):
    assert a.shape == b.shape and a.dtype == np.float32
  print("max abs differences:", diffs, "output scales:", [float(np.max(np.abs(b))) for b in ref])
  assert max(diffs.values()) < atol, diffs


def edited_source(src: pathlib.Path, tmp_path: pathlib.Path, weights_file: str, edit) -> pathlib.Path:
  """tmp_path/edited: a copy of the source directory (config.json) whose weights file is `edit(tensors)`."""
  from safetensors.numpy import load_file, save_file
  target = tmp_path / "edited"
  target.mkdir()
  (target / "config.json").write_text((src / "config.json").read_text())
  tensors = load_file(src / weights_file)
  edit(tensors)
  save_file(tensors, target / weights_file)
  return target
