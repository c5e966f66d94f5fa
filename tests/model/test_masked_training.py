"""MaskDiT/STIV masked training (train.mask_ratio, train.unmask_finetune_steps; vin_jax/model/masking.py):
the DiT sees only the kept tokens of each window, dropped tokens do not reach the loss, the step is cheaper,
mask_ratio=0 is the unmasked loss, the train loop ends unmasked, and a sharded run drops what one device does."""
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax import config as config_lib
from vin_jax import train as train_lib
from vin_jax.model import ModelDef, layers, masking
from vin_jax.parallel import mesh as mesh_lib

from tests.conftest import REPO, SUBPROCESS_TIMEOUT_SECONDS, one_device_env
from tests.model.helpers import perturbed_params, random_inputs, tiny_test_config, train_batch


def _loss_fn(config, mesh=None):
  loss_sums = train_lib.make_loss_sums(ModelDef(config), config, mesh)
  return lambda p, frames, text: loss_sums(p, frames, text, jax.random.key(3))


def test_dit_sees_the_kept_tokens_only(monkeypatch):
  config = tiny_test_config(**{"train.mask_ratio": 0.5})
  model_def = ModelDef(config)
  seen = []
  block_call = layers.DiTBlock.__call__

  def recording(self, segments, *args, **kwargs):
    seen.append([s.x.shape for s in segments])
    return block_call(self, segments, *args, **kwargs)

  monkeypatch.setattr(layers.DiTBlock, "__call__", recording)
  batch = train_batch(config)
  jax.eval_shape(jax.value_and_grad(lambda p, f, t: _loss_fn(config)(p, f, t)["loss"]),
                 model_def.abstract_params(), batch["frames"], batch["text_tokens"])
  # tiny:test windows: (L=2 + F=4) frames / temporal_patch 2 = 3 patches x 2x2 tokens = 12 (4 context, 8 own).
  window_tokens = (config.chunking.context_frames + config.chunking.chunk_frames) // config.model.temporal_patch * 4
  dit_calls = [shapes for shapes in seen if len(shapes) == 2]   # the VIN processor's blocks have one segment
  assert len(dit_calls) == config.model.depth
  for shapes in dit_calls:
    window, global_tokens = shapes
    assert window[1] * window[2] == window_tokens // 2
    assert global_tokens[1] * global_tokens[2] == config.vin.num_global_tokens


def test_dropped_tokens_do_not_reach_the_predictions_or_loss():
  # No context (each latent position is in one window) and no VIN (which sees the whole video by design).
  config = tiny_test_config(**{"vin.enabled": False, "chunking.context_frames": 0, "train.mask_ratio": 0.5})
  model_def = ModelDef(config)
  model = model_def.bind(perturbed_params(model_def))
  x, t, text = random_inputs(config, batch=2, num_chunks=3)
  request = masking.MaskRequest(jax.random.key(5), 0.5)
  preds, valid, weight = model(x, t, text, context_frames=0, mask=request)
  assert weight.shape == x.shape[:-1] and bool(valid.all())
  kept = weight > 0
  np.testing.assert_allclose(float(kept.mean()), 0.5)
  np.testing.assert_allclose(np.asarray(weight)[np.asarray(kept)], 2.0)   # tokens / kept: the unmasked scale
  # Dropped positions changed: kept predictions (and so the loss) unchanged.
  noise = 10.0 * jax.random.normal(jax.random.key(6), x.shape)
  preds2, _, weight2 = model(jnp.where(kept[..., None], x, x + noise), t, text, context_frames=0, mask=request)
  np.testing.assert_array_equal(np.asarray(weight2), np.asarray(weight))
  np.testing.assert_allclose(np.asarray(preds2)[np.asarray(kept)], np.asarray(preds)[np.asarray(kept)],
                             atol=1e-6, rtol=1e-6)
  target = jax.random.normal(jax.random.key(7), x.shape)
  loss = lambda p: float(jnp.sum(jnp.where(kept[..., None], jnp.square(p - target) * weight[..., None], 0.0)))
  np.testing.assert_allclose(loss(preds2), loss(preds), rtol=1e-6)
  # ... while changing kept positions does change them.
  preds3, _, _ = model(jnp.where(kept[..., None], x + noise, x), t, text, context_frames=0, mask=request)
  assert not np.allclose(np.asarray(preds3)[np.asarray(kept)], np.asarray(preds)[np.asarray(kept)], atol=1e-3)


def _flops(mask_ratio):
  config = tiny_test_config(**{"train.mask_ratio": mask_ratio, "model.scan_layers": False,
                               "data.height": 16, "data.width": 16})
  model_def = ModelDef(config)
  frames = jax.ShapeDtypeStruct((2, 2 * config.chunking.chunk_frames, 16, 16, 3), jnp.uint8)
  text = jax.ShapeDtypeStruct((2, config.text.max_length), jnp.int32)
  fn = jax.value_and_grad(lambda p, f, t: _loss_fn(config)(p, f, t)["loss"])
  analysis = jax.jit(fn).lower(model_def.abstract_params(), frames, text).compile().cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"])


def test_masked_step_is_cheaper():
  unmasked, masked = _flops(0.0), _flops(0.5)
  # The VIN, text encoder and autoencoder are unchanged; the DiT's tokens halve (measured: 0.61).
  assert masked < 0.75 * unmasked, (masked, unmasked, masked / unmasked)


def test_mask_ratio_zero_is_the_unmasked_loss():
  config = tiny_test_config()
  model_def = ModelDef(config)
  params = perturbed_params(model_def)
  batch = train_batch(config)
  run = lambda c: jax.jit(_loss_fn(c))(params, batch["frames"], batch["text_tokens"])
  reference = run(config)
  # A config saved before the fields existed: the same numbers, bit for bit.
  old = tiny_test_config()
  del old.train["mask_ratio"], old.train["unmask_finetune_steps"]
  for key, value in run(old).items():
    np.testing.assert_array_equal(np.asarray(value), np.asarray(reference[key]))
  # The masked path with nothing dropped (round(0.01 * tokens) = 0: every token kept, gathered per token, with
  # per-token RoPE and modulation) gives the unmasked numbers: the gather path is the per-patch one.
  everything_kept = run(tiny_test_config(**{"train.mask_ratio": 0.01}))
  for key, value in everything_kept.items():
    np.testing.assert_allclose(np.asarray(value), np.asarray(reference[key]), rtol=2e-5, atol=1e-6)
  # And a real mask changes the loss (a different estimate of the same objective).
  masked = run(tiny_test_config(**{"train.mask_ratio": 0.5}))
  assert float(masked["loss"]) != float(reference["loss"])


def test_masked_loss_has_gradients_through_kept_tokens():
  config = tiny_test_config(**{"train.mask_ratio": 0.5})
  model_def = ModelDef(config)
  batch = train_batch(config)
  loss, grads = jax.jit(jax.value_and_grad(lambda p, f, t: _loss_fn(config)(p, f, t)["loss"]))(
      perturbed_params(model_def), batch["frames"], batch["text_tokens"])
  assert np.isfinite(float(loss))
  assert float(jnp.abs(grads["dit"]["patch_embed"]["kernel"]).sum()) > 0
  assert sum(float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads["vin"])) > 0


def test_unmask_finetune_steps_switches_the_step(tmp_path):
  workdir = tmp_path / "run"
  subprocess.run([sys.executable, "-m", "vin_jax.main", "train", "--config=configs/tiny.py:test",
                  f"--workdir={workdir}", f"--config.data.data_dir={tmp_path / 'data'}",
                  "--config.data.bucket_chunks=(2,)", "--config.data.bucket_weights=(1.0,)",
                  "--config.train.steps=4", "--config.train.log_every=1", "--config.train.mask_ratio=0.5",
                  "--config.train.unmask_finetune_steps=2"],
                 cwd=REPO, env=one_device_env(), check=True, capture_output=True, timeout=SUBPROCESS_TIMEOUT_SECONDS)
  records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert {r["step"]: r["mask_ratio"] for r in records} == {1: 0.5, 2: 0.5, 3: 0.0, 4: 0.0}
  assert all(np.isfinite(r["loss"]) for r in records)


def test_last_masked_step():
  config = tiny_test_config(**{"train.steps": 10, "train.mask_ratio": 0.5, "train.unmask_finetune_steps": 3})
  assert train_lib.last_masked_step(config) == 7
  config.train.mask_ratio = 0.0   # nothing masked: every step is the ordinary one
  assert train_lib.last_masked_step(config) == 10


@pytest.mark.parametrize("fields, match", [
    ({"train.mask_ratio": 1.0}, "train.mask_ratio=1.0"),
    ({"train.mask_ratio": -0.1}, "train.mask_ratio=-0.1"),
    ({"train.mask_ratio": 0.5, "chunking.context_mode": "shared", "sampling.fusion": "none"},
     "train.mask_ratio=0.5.*recompute"),
    ({"train.unmask_finetune_steps": -1}, "train.unmask_finetune_steps=-1"),
    ({"train.unmask_finetune_steps": 5}, r"train.unmask_finetune_steps=5.*train.steps=4"),
])
def test_config_validation(fields, match):
  config = tiny_test_config(**fields)
  with pytest.raises(config_lib.ConfigError, match=match):
    config_lib.validate(config)


def test_valid_masked_config_passes():
  config_lib.validate(tiny_test_config(**{"train.mask_ratio": 0.5, "train.unmask_finetune_steps": 4}))


def test_sharded_masked_loss_matches_single_device():
  """mesh.chunk=8 on 8 simulated CPU devices drops the same tokens (keyed by global row and chunk)."""
  fields = {"train.mask_ratio": 0.5, "data.batch_size": 2, "sampling.num_chunks": 8}
  config = tiny_test_config(**fields)
  sharded_config = tiny_test_config(**fields, **{"mesh.chunk": 8})
  params = perturbed_params(ModelDef(config))
  frames = jax.random.randint(jax.random.key(7), (2, 8 * config.chunking.chunk_frames, 8, 8, 3), 0, 256)
  batch = {"frames": np.asarray(frames, np.uint8),
           "text_tokens": np.asarray(jax.random.randint(jax.random.key(8), (2, config.text.max_length), 1, 200),
                                     np.int32)}
  reference = jax.jit(_loss_fn(config))(params, batch["frames"], batch["text_tokens"])
  mesh = mesh_lib.make_mesh(sharded_config)
  sharded = mesh_lib.global_batch(batch, mesh)
  sums = jax.jit(_loss_fn(sharded_config, mesh))(params, sharded["frames"], sharded["text_tokens"])
  for key, value in reference.items():
    np.testing.assert_allclose(np.asarray(sums[key]), np.asarray(value), rtol=1e-5, atol=1e-6)


def test_analytic_dit_count_scales_with_the_kept_tokens():
  from vin_jax.evaluation import flops
  config = tiny_test_config(**{"data.height": 16, "data.width": 16})
  kwargs = dict(global_tokens=True, context_frames=config.chunking.context_frames)
  window = config.chunking.context_frames + config.chunking.chunk_frames
  unmasked = flops.window_dit(config, 2, 2, window, **kwargs).total
  masked = flops.window_dit(config, 2, 2, window, mask_ratio=0.5, **kwargs).total
  assert flops.window_dit(config, 2, 2, window, mask_ratio=0.0, **kwargs).total == unmasked
  assert 0.3 * unmasked < masked < 0.6 * unmasked
