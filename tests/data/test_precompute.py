"""`precompute` (patch autoencoder, byte captions: no weights): the latents data set, its statistics, the
resume after an interruption, and the pipeline's latents batches against encoding the frames batches."""
import json
import shutil

import numpy as np
import pytest

from vin_jax import autoencoder as autoencoder_lib
from vin_jax.data import builder, latents, pipeline, precompute
from tests.data.conftest import load_test_config


def latents_config(**fields):
  config = load_test_config()
  config.data.latents = True
  for k, v in fields.items():
    config.autoencoder[k] = v
  return config


@pytest.fixture(scope="module")
def precomputed(tmp_path_factory):
  """(config, data_dir, stats): the test config's latents, with a shift and scale to normalise."""
  data_dir = tmp_path_factory.mktemp("precompute")
  config = latents_config(shift=0.1, scale=2.0)
  stats = precompute.precompute(config, None, data_dir=data_dir, examples_per_part=5)
  return config, data_dir, stats


def test_stored_latents_are_the_raw_encodings_of_every_example(precomputed):
  config, data_dir, stats = precomputed
  raw = autoencoder_lib.make_autoencoder(config, normalized=False)
  frames_config = latents._frames_view(config)
  for split in ("train", "validation"):
    frames = builder.data_source(frames_config, data_dir, split)
    stored = builder.data_source(config, data_dir, split)
    assert len(stored) == len(frames) == stats["examples"][split]
    for i in (0, len(frames) - 1):
      assert stored[i]["source_index"] == i
      assert stored[i]["caption"] == frames[i]["caption"]
      np.testing.assert_allclose(stored[i]["latents"], np.asarray(raw.encode(frames[i]["frames"][None]))[0])
  assert stats["skipped_non_finite"] == {"train": 0, "validation": 0}


def test_statistics_match_the_train_latents(precomputed):
  config, data_dir, stats = precomputed
  stored = builder.data_source(config, data_dir, "train")
  z = np.stack([stored[i]["latents"] for i in range(len(stored))]).astype(np.float64)
  assert stats["mean"] == pytest.approx(z.mean(), rel=1e-5)
  assert stats["std"] == pytest.approx(z.std(), rel=1e-5)
  assert stats["scale"] == pytest.approx(1 / z.std(), rel=1e-5)
  np.testing.assert_allclose(stats["per_channel_std"], z.reshape(-1, z.shape[-1]).std(0), rtol=1e-5)
  on_disk = builder.make_builder(config, data_dir).data_dir + "/" + precompute.STATS_FILE
  assert json.loads(open(on_disk).read()) == stats


def test_latents_batches_are_the_encoded_frames_batches(precomputed):
  """Same seed, same crops: the latents pipeline gives the normalised encodings of the frames pipeline's clips."""
  config, data_dir, _ = precomputed
  frames_config = latents._frames_view(config)
  encode = autoencoder_lib.make_autoencoder(frames_config).encode
  from_latents = pipeline.make_train_iterator(config, data_dir, process_index=0, process_count=1)
  from_frames = pipeline.make_train_iterator(frames_config, data_dir, process_index=0, process_count=1)
  for _ in range(4):
    a, b = next(from_latents), next(from_frames)
    assert a["num_chunks"] == b["num_chunks"] and "frames" not in a
    np.testing.assert_allclose(a["latents"], np.asarray(encode(b["frames"])), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(a["text_tokens"], b["text_tokens"])


def test_an_interrupted_precompute_resumes_and_gives_the_same_records(precomputed, tmp_path, monkeypatch):
  config, data_dir, stats = precomputed
  shutil.copytree(builder.make_builder(latents._frames_view(config), data_dir).data_dir,
                  tmp_path / "sprites" / builder.make_builder(latents._frames_view(config), data_dir).builder_config.name
                  / "1.0.0")
  calls = {"n": 0}
  original = np.savez

  def dies_on_third_part(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 3:
      raise KeyboardInterrupt("killed")
    return original(*args, **kwargs)

  monkeypatch.setattr(np, "savez", dies_on_third_part)
  with pytest.raises(KeyboardInterrupt):
    precompute.precompute(config, None, data_dir=tmp_path, examples_per_part=5)
  parts = sorted((tmp_path / "latents_parts").rglob("*.npz"))
  assert [p.name for p in parts] == ["part-000000.npz", "part-000001.npz"]      # no half-written part
  assert not builder.make_builder(config, tmp_path).is_prepared()
  with pytest.raises(FileNotFoundError, match="precompute"):
    builder.data_source(config, tmp_path, "train")
  monkeypatch.setattr(np, "savez", original)
  assert precompute.precompute(config, None, data_dir=tmp_path, examples_per_part=5) == stats
  resumed, uninterrupted = (builder.data_source(config, d, "train") for d in (tmp_path, data_dir))
  for i in range(len(uninterrupted)):
    np.testing.assert_array_equal(resumed[i]["latents"], uninterrupted[i]["latents"])
  assert not (tmp_path / "latents_parts").exists() or not any((tmp_path / "latents_parts").rglob("*.npz"))


def test_a_different_autoencoder_setting_is_a_different_data_set(tmp_path):
  a = latents.latents_config_from(latents_config(), tmp_path).name
  b = latents.latents_config_from(latents_config(spatial_factor=4), tmp_path).name
  shifted = latents.latents_config_from(latents_config(shift=0.5), tmp_path).name
  assert a != b
  assert a == shifted     # shift and scale apply when reading: no new encoding
