"""Mixed frame sizes (data.resolutions, sampling.resolution): one set of parameters at every grid."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from vin_jax import config as config_lib
from vin_jax import train as train_lib
from vin_jax import video_io
from vin_jax.data import builder
from vin_jax.model import ModelDef

from tests.conftest import REPO, SUBPROCESS_TIMEOUT_SECONDS, one_device_env
from tests.model.helpers import perturbed_params, random_inputs, tiny_test_config, train_batch

# tiny:test stores 8x8 frames (latent 4x4, a 2x2 token grid); 4x8 pixels is a 2x4 latent, a 1x2 token grid.
SIZE = (4, 8)


def _config(**overrides):
  return tiny_test_config(**{"model.micro_conditions": True, "data.resolutions": ((8, 8), SIZE), **overrides})


def test_the_vin_position_table_is_learned_at_the_stored_grid_and_resized_to_others():
  config = _config()
  model = ModelDef(config).bind(perturbed_params(ModelDef(config)))
  table = model.vin.spatial_pos[...]                                  # [2 * 2, Dv]
  np.testing.assert_array_equal(model.vin.spatial_positions((2, 2)), table)
  wide = model.vin.spatial_positions((1, 2))
  assert wide.shape == (2, table.shape[1])
  # Half-pixel bilinear from 2x2 to 1x2 averages each column's two rows.
  np.testing.assert_allclose(wide, (table[:2] + table[2:]) / 2, rtol=1e-5, atol=1e-6)
  model.vin.spatial_pos[...] = jnp.ones_like(table)
  np.testing.assert_allclose(model.vin.spatial_positions((3, 5)), 1.0, rtol=1e-6)


def test_the_denoiser_runs_at_another_size_and_conditions_on_it():
  config = _config()
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  x, t, text = random_inputs(config)
  small = x[:, :, :, :2]                                              # [B, N, F, 2, 4, c]: 4x8 pixels

  @jax.jit
  def predict(params, x, micro):
    return model_def.bind(params)(x, t, text, context_frames=config.chunking.context_frames, micro_BxK=micro)[0]

  preds = predict(params, small, None)
  assert preds.shape[3:] == small.shape[3:] and bool(jnp.isfinite(preds).all())
  # No micro_BxK: the pixel size of the latents (4x8), not data.height x data.width.
  fps = config.data.fps
  own = jnp.array([[fps, *SIZE]] * x.shape[0], jnp.float32)
  np.testing.assert_allclose(preds, predict(params, small, own), atol=1e-6)
  stored = jnp.array([[fps, config.data.height, config.data.width]] * x.shape[0], jnp.float32)
  assert float(jnp.abs(predict(params, small, stored) - preds).max()) > 1e-4


def test_masked_training_at_another_size():
  config = _config(**{"train.mask_ratio": 0.5})
  batch = train_batch(config)
  frames = np.ascontiguousarray(batch["frames"][:, :, :SIZE[0], :SIZE[1]])
  loss_sums = train_lib.make_loss_sums(ModelDef(config), config)
  micro = np.array([[config.data.fps, *SIZE]] * frames.shape[0], np.float32)
  sums = jax.jit(loss_sums)(perturbed_params(ModelDef(config)), frames, batch["text_tokens"], jax.random.key(0), micro)
  assert np.isfinite(float(sums["loss"]))


def test_train_on_mixed_sizes_then_sample_at_one_of_them(tmp_path):
  """`train` with data.resolutions trains batches of both sizes (one compile each); `sample` with
  sampling.resolution writes videos of that size, the validation first frames rescaled to it."""
  workdir, out = tmp_path / "run", tmp_path / "samples"
  common = ["--config=configs/tiny.py:test", f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'data'}",
            "--config.model.micro_conditions=True", f"--config.data.resolutions=((8,8),{SIZE})"]
  run = lambda *args: subprocess.run([sys.executable, "-m", "vin_jax.main", *args], cwd=REPO, env=one_device_env(),
                                     check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)
  run("train", *common, "--config.data.bucket_chunks=(2,)", "--config.data.bucket_weights=(1.0,)",
      "--config.train.steps=6", "--config.train.log_every=1")
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert {(r["height"], r["width"]) for r in records} == {(8, 8), SIZE}
  assert all(np.isfinite(r["loss"]) for r in records)
  run("sample", *common, f"--out={out}", "--num_chunks=2", "--first_frame",
      f"--config.sampling.resolution={SIZE}", "--config.sampling.num_samples=2", "--config.sampling.num_steps=2")
  info = json.loads((out / "sample_info.json").read_text())
  config = config_lib.load_config_file(REPO / "configs" / "tiny.py", "test")
  assert info["frames_shape"] == [2, 2 * config_lib.pixel_frames_per_chunk(config), *SIZE, 3]
  # The given first frame is the validation video's, rescaled to 4x8 (the patch autoencoder is lossless).
  first = np.load(out / "samples.npz")["frames"][:, 0].astype(int)
  source = builder.data_source(config, tmp_path / "data", "validation")
  expected = np.stack([video_io.resize_frames(source[i]["frames"][:1], *SIZE)[0] for i in range(2)]).astype(int)
  assert np.abs(first - expected).max() <= 1
