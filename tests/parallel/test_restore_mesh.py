"""A checkpoint written on one mesh restores onto another (8 chunk-devices -> 1 device, -> 2x4), for
training (exact state) and for sampling (the same samples)."""
import jax
import numpy as np
import pytest

from vin_jax import checkpointing, sampling
from vin_jax import train as train_lib
from vin_jax.parallel import mesh as mesh_lib

from tests.parallel import multihost_case as case

NUM_CHUNKS = 8


def _config(data=1, chunk=1):
  config = case.config(data=data, chunk=chunk)
  config.sampling.num_chunks = NUM_CHUNKS
  config.sampling.num_steps = 3
  config.sampling.t_alpha = 1
  return config


@pytest.fixture(scope="module")
def written(tmp_path_factory):
  """A perturbed state saved from mesh chunk=8 -> (workdir, state as numpy)."""
  workdir = tmp_path_factory.mktemp("run")
  config = _config(chunk=8)
  mesh = mesh_lib.make_mesh(config)
  model_def = train_lib.ModelDef(config)
  state = train_lib.create_state(model_def, train_lib.make_optimizer(config), jax.random.key(0), mesh)
  state = jax.jit(case.perturb, out_shardings=jax.tree.map(lambda x: x.sharding, state))(state)
  state["step"] = jax.device_put(np.int32(7), state["step"].sharding)
  manager = checkpointing.Manager(workdir / "checkpoints", async_save=False)
  manager.save(7, state, {"next_index": 7})
  manager.close()
  return workdir, jax.tree.map(np.asarray, state)


@pytest.mark.parametrize("axes", [None, dict(data=2, chunk=4)], ids=["one_device", "data2xchunk4"])
def test_train_state_restores_onto_another_mesh(written, axes):
  workdir, saved = written
  config = _config(**(axes or {}))
  mesh = mesh_lib.make_mesh(config) if axes else None
  model_def = train_lib.ModelDef(config)
  target = train_lib.create_state(model_def, train_lib.make_optimizer(config), jax.random.key(5), mesh)
  manager = checkpointing.Manager(workdir / "checkpoints")
  state, data_state = manager.restore_latest(target)
  manager.close()
  assert data_state == {"next_index": 7}
  for got, want, tgt in zip(jax.tree.leaves(state), jax.tree.leaves(saved), jax.tree.leaves(target)):
    assert got.sharding == tgt.sharding
    np.testing.assert_array_equal(np.asarray(got), want)


def test_samples_are_the_same_on_every_mesh(written):
  workdir, _ = written
  text = np.random.RandomState(3).randint(1, 200, (case.BATCH, _config().text.max_length)).astype(np.int32)
  samples = {}
  for name, axes in (("one_device", {}), ("chunk8", dict(chunk=8)), ("data2xchunk4", dict(data=2, chunk=4))):
    config = _config(**axes)
    mesh = mesh_lib.make_mesh(config) if axes else None
    model_def, params, step = sampling.load_params(config, workdir, use_ema=True, mesh=mesh)
    assert step == 7
    samples[name] = np.asarray(sampling.generate(config, model_def, params, text, jax.random.key(4),
                                                 num_chunks=NUM_CHUNKS, mesh=mesh))
  for name in ("chunk8", "data2xchunk4"):
    np.testing.assert_allclose(samples[name], samples["one_device"], atol=1e-5, rtol=1e-5)
