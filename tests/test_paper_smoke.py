"""`configs/paper.py:smoke` end to end through the CLI: random SD VAE and T5 checkpoints in the Hugging Face
layouts are converted, a small data set is precomputed to latents and T5 embeddings, the model trains 2 steps
on them and samples. Also the converter's CLI failures and T5 run on the captions while reading batches."""
import json

import numpy as np
import pytest

from tests import hf_models
from tests.test_main import assert_clean_failure, run_cli
from vin_jax import config as config_lib
from vin_jax.text import conditioning

# Four blocks: SD's x8 spatial factor, at a few thousand parameters.
TINY_VAE = dict(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4, latent_channels=4)
# Wan 2.1's structure (x8 spatially, causal x4 in time, 16 channels), narrow.
TINY_WAN = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, temperal_downsample=[False, True, True])


def ok(result):
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """(root, converted VAE dir, converted T5 dir): random Hugging Face checkpoints through `convert`."""
  root = tmp_path_factory.mktemp("pretrained")
  hf_models.sd_vae(TINY_VAE).save_pretrained(root / "hf_vae", safe_serialization=True)
  hf_models.save_t5_encoder("gated-gelu", root / "hf_t5")
  hf_models.train_spiece(root / "hf_t5")
  ok(run_cli("convert", "--kind=sd_vae", f"--src={root / 'hf_vae'}", f"--out={root / 'vae'}"))
  result = ok(run_cli("convert", "--kind=t5", f"--src={root / 'hf_t5'}", f"--out={root / 't5'}"))
  assert "converted 21 tensors" in result.stdout
  return root, root / "vae", root / "t5"


def smoke_flags(workdir, vae, t5):
  return ["--config=configs/paper.py:smoke", f"--workdir={workdir}", f"--config.autoencoder.weights={vae}",
          f"--config.text.t5_dir={t5}"]


def test_paper_smoke_converts_precomputes_trains_and_samples(converted, tmp_path):
  _, vae, t5 = converted
  flags = smoke_flags(tmp_path / "run", vae, t5)
  result = ok(run_cli("precompute", *flags))
  assert "--config.autoencoder.shift=" in result.stdout
  stats_files = list((tmp_path / "run" / "data" / "latents").rglob("latent_stats.json"))
  assert len(stats_files) == 1
  stats = json.loads(stats_files[0].read_text())
  assert stats["examples"]["train"] == 16 and stats["std"] > 0
  result = ok(run_cli("precompute", *flags))            # a second run reuses it
  assert "already precomputed" in result.stdout

  ok(run_cli("train", *flags, "--config.data.latents=True"))
  lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
  assert [json.loads(line)["step"] for line in lines] == [1, 2]
  assert all(np.isfinite(json.loads(line)["loss"]) for line in lines)

  ok(run_cli("sample", *flags, "--config.data.latents=True", f"--out={tmp_path / 'samples'}"))
  with np.load(tmp_path / "samples" / "samples.npz") as samples:
    assert samples["frames"].shape == (2, 16, 32, 32, 3)     # 4 chunks of 4 frames, decoded by the SD VAE
    assert samples["latents"].shape == (2, 4, 4, 4, 4, 4)
  info = json.loads((tmp_path / "samples" / "sample_info.json").read_text())
  assert len(info["prompts"]) == 2


def test_paper_wan_smoke_precomputes_trains_and_samples_with_the_causal_vae(converted, tmp_path):
  """`configs/paper.py:smoke,wan`: clips of 1 + 4 (16 - 1) = 61 pixel frames precompute to 16 latent frames;
  the sampler's 4 chunks of 4 latent frames decode through the causal cache to 61 frames."""
  root, _, t5 = converted
  hf_models.wan_vae(TINY_WAN).save_pretrained(root / "hf_wan", safe_serialization=True)
  ok(run_cli("convert", "--kind=wan_vae", f"--src={root / 'hf_wan'}", f"--out={tmp_path / 'wan'}"))
  flags = smoke_flags(tmp_path / "run", tmp_path / "wan", t5)
  flags[0] = "--config=configs/paper.py:smoke,wan"
  assert_clean_failure(run_cli("train", *flags), "data.latents", "causal")
  ok(run_cli("precompute", *flags))
  ok(run_cli("train", *flags, "--config.data.latents=True"))
  ok(run_cli("sample", *flags, "--config.data.latents=True", "--first_frame", f"--out={tmp_path / 'samples'}"))
  with np.load(tmp_path / "samples" / "samples.npz") as samples:
    assert samples["frames"].shape == (2, 61, 32, 32, 3)
    assert samples["latents"].shape == (2, 4, 4, 4, 4, 16)


def test_training_on_frames_without_precompute_needs_data_latents_for_precomputed_text(converted, tmp_path):
  _, vae, t5 = converted
  result = run_cli("train", *smoke_flags(tmp_path / "run", vae, t5))
  assert_clean_failure(result, "text.encoder", "data.latents")


def test_train_on_latents_before_precompute_says_to_precompute(converted, tmp_path):
  _, vae, t5 = converted
  result = run_cli("train", *smoke_flags(tmp_path / "run", vae, t5), "--config.data.latents=True")
  assert_clean_failure(result, "precompute")


def test_convert_names_a_wrongly_shaped_tensor_without_a_traceback(converted, tmp_path):
  root, _, _ = converted
  def edit(tensors):
    tensors["decoder.conv_in.weight"] = tensors["decoder.conv_in.weight"][:, :2]
    del tensors["encoder.conv_out.bias"]

  src = hf_models.edited_source(root / "hf_vae", tmp_path, "diffusion_pytorch_model.safetensors", edit)
  result = run_cli("convert", "--kind=sd_vae", f"--src={src}", f"--out={tmp_path / 'out'}")
  assert_clean_failure(result, "decoder.conv_in.weight", "encoder.conv_out.bias", "missing")
  assert not (tmp_path / "out").exists()


def test_convert_refuses_pickled_weights(tmp_path):
  (tmp_path / "config.json").write_text("{}")
  (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
  result = run_cli("convert", "--kind=t5", f"--src={tmp_path}", f"--out={tmp_path / 'out'}")
  assert_clean_failure(result, "pickle")


def test_t5_text_encoder_embeds_captions_while_reading_frames(converted, tmp_path):
  """text.encoder='t5': batches of frames carry the T5 embeddings of their captions, zero at padding."""
  from vin_jax.data import builder, pipeline
  _, vae, t5 = converted
  config = config_lib.load_config_file("configs/paper.py", "smoke")
  config.text.encoder, config.text.t5_dir, config.autoencoder.weights = "t5", str(t5), str(vae)
  config_lib.validate(config, num_devices=1)
  builder.build_dataset(config, tmp_path)
  iterator = pipeline.make_train_iterator(config, tmp_path, process_index=0, process_count=1)
  batch = next(iterator)
  source = builder.data_source(config, tmp_path, "train")
  assert batch["frames"].dtype == np.uint8
  captions = [source[int(i)]["caption"].decode() for i in iterator.reader.example_indices(0)]
  np.testing.assert_array_equal(batch["text_tokens"], conditioning.encode_captions(config, captions))
  assert batch["text_tokens"].shape == (2, config.text.max_length, 32)
  short = conditioning.encode_captions(config, ["a red ball"])[0]
  valid = np.any(short != 0, axis=-1)
  assert 0 < valid.sum() < config.text.max_length and valid[:valid.sum()].all()   # pieces + EOS, then zeros
