"""model.scan_layers: the DiT blocks and the VIN processor as one stacked module, scanned over its layer axis.

The scanned model computes what the unrolled one computes (fp32, 1e-5, remat too), compiles one layer whatever
the depth, and its weights move across the two layouts through exports, init_from and checkpoint restores.
"""
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax import checkpointing, sampling
from vin_jax import config as config_lib
from vin_jax import train as train_lib
from vin_jax.export import files, init_from, names, writer
from vin_jax.model import ModelDef, layout
from vin_jax.parallel import mesh as mesh_lib

from tests.model.helpers import loss_and_grads, random_inputs, tiny_test_config, train_batch

SCAN = {"model.scan_layers": True}


def _loss_and_grads(overrides, params, batch):
  return loss_and_grads(tiny_test_config(**overrides), params, batch)


@pytest.fixture(scope="module")
def batch():
  return train_batch(tiny_test_config())


@pytest.fixture(scope="module")
def unrolled(batch):
  params = _host_params(tiny_test_config())
  return params, _loss_and_grads({}, params, batch)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_scanned_model_gives_the_unrolled_loss_and_gradients(remat, unrolled, batch):
  params, (ref_loss, ref_grads) = unrolled
  loss, grads = _loss_and_grads({**SCAN, "model.remat": remat}, layout.stack_layers(params), batch)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  grads = layout.unstack_layers(grads)
  assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(grads)[0], jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5, err_msg=jax.tree_util.keystr(path))


def _host_params(config, seed=0):
  """N(0, 0.05) host weights shaped like `config`'s model (like helpers.perturbed_params, no zero-initialised
  gate hides a gradient path; and no init is compiled)."""
  rng = np.random.RandomState(seed)
  return jax.tree.map(lambda a: rng.normal(0, 0.05, a.shape).astype(a.dtype), ModelDef(config).abstract_params())


def _shapes(tree):
  return jax.tree.map(lambda x: (tuple(x.shape), str(x.dtype)), tree)


def test_stack_unstack_round_trip_and_the_scanned_models_layout():
  overrides = {"model.depth": 3, "vin.processor_depth": 2}
  params = _host_params(tiny_test_config(**overrides))
  stacked = layout.stack_layers(params)
  abstract = ModelDef(tiny_test_config(**overrides, **SCAN)).abstract_params()
  assert jax.tree.structure(stacked) == jax.tree.structure(abstract)
  assert _shapes(stacked) == _shapes(abstract)
  assert stacked["dit"]["blocks"]["attn"]["q"]["kernel"].shape == (3, 32, 32)
  assert stacked["vin"]["processor"]["table"].shape == (2, 6, 32)
  assert sorted(stacked["text"]["blocks"]) == [0]                      # only the two layer lists stack
  assert isinstance(stacked["dit"]["blocks"]["table"], np.ndarray)    # host arrays stay on the host
  back = layout.unstack_layers(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(params)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(params)):
    np.testing.assert_array_equal(a, b)
  assert layout.is_stacked(stacked) and not layout.is_stacked(params)
  # to_layout follows the target: either way, and idempotent.
  assert jax.tree.structure(layout.to_layout(params, abstract)) == jax.tree.structure(abstract)
  assert jax.tree.structure(layout.to_layout(stacked, params)) == jax.tree.structure(params)
  assert jax.tree.structure(layout.to_layout(stacked, abstract)) == jax.tree.structure(abstract)


def test_layer_axis_is_found_by_path_in_params_and_optimizer_states():
  config = tiny_test_config(**SCAN)
  params = ModelDef(config).abstract_params()
  opt_state = jax.eval_shape(train_lib.make_optimizer(config).init, params)
  for tree in (params, opt_state):
    marked = {jax.tree_util.keystr(p): layout.has_layer_axis(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    assert any(marked.values())
    for name, value in marked.items():
      assert value == ("['blocks']" in name and "['dit']" in name or "['processor']" in name), name
  unrolled = ModelDef(tiny_test_config()).abstract_params()
  assert not any(layout.has_layer_axis(p) for p, _ in jax.tree_util.tree_flatten_with_path(unrolled)[0])


def test_scan_layers_must_be_a_bool():
  config = tiny_test_config()
  del config.model["scan_layers"]
  config.model.scan_layers = "yes"
  with pytest.raises(config_lib.ConfigError, match="model.scan_layers"):
    config_lib.validate(config)


def _lowered_counts(**overrides):
  """(dot_generals, while loops) in the lowered forward pass of the model."""
  config = tiny_test_config(**overrides)
  model_def = ModelDef(config)
  x, t, text = random_inputs(config, batch=1, num_chunks=2)
  fn = lambda p, x_, t_, text_: model_def.bind(p)(x_, t_, text_, context_frames=2)[0]
  text_ = jax.jit(fn).lower(model_def.abstract_params(), x, t, text).as_text()
  return text_.count("stablehlo.dot_general"), text_.count("stablehlo.while")


def test_scanned_model_compiles_one_layer_whatever_the_depth():
  deep = {"model.depth": 4, "vin.processor_depth": 4}
  scan_2, scan_4 = _lowered_counts(**SCAN), _lowered_counts(**SCAN, **deep)
  unrolled_2, unrolled_4 = _lowered_counts(), _lowered_counts(**deep)
  assert scan_2 == scan_4 and scan_2[1] >= 2          # one scan for the DiT, one for the processor
  assert unrolled_2[1] == 0 and unrolled_4[0] > unrolled_2[0]


# ----------------------------------------------------------------------------------------------------------------
# Exports, init_from and checkpoints across the layouts.

STEP = 3


def _workdir(root, name, config, ema):
  """A workdir with one checkpoint of `ema` (params = ema + 1) in `config`'s layout and its config.json."""
  workdir = root / name
  workdir.mkdir()
  (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  ema = jax.device_put(ema)
  params = jax.tree.map(lambda x: x + 1.0, ema)
  state = {"step": jnp.int32(STEP), "params": params, "ema": ema}   # no optimizer state: nothing here reads it
  manager = checkpointing.Manager(workdir / "checkpoints", async_save=False)
  manager.save(STEP, state, {"next_index": STEP})
  manager.close()
  return workdir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("scan_layers")
  unrolled_config, scan_config = tiny_test_config(), tiny_test_config(**SCAN)
  ema = _host_params(unrolled_config, seed=4)
  return types.SimpleNamespace(
      root=root, unrolled_config=unrolled_config, scan_config=scan_config, ema=ema,
      unrolled=_workdir(root, "unrolled", unrolled_config, ema),
      scanned=_workdir(root, "scanned", scan_config, layout.stack_layers(ema)))


def _assert_equal_trees(got, want):
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


def test_exports_are_per_layer_and_load_into_either_layout(runs):
  out_scanned, out_unrolled = runs.root / "export_scanned", runs.root / "export_unrolled"
  info_scanned = writer.export_checkpoint(runs.scan_config, runs.scanned, out_scanned)
  info_unrolled = writer.export_checkpoint(runs.unrolled_config, runs.unrolled, out_unrolled)
  tensors, _ = files.read_weights(out_scanned)                           # sizes and checksums verified
  assert "dit.blocks.1.attn.q.kernel" in tensors and "vin.processor.0.table" in tensors
  _assert_same_tensors(tensors, files.read_weights(out_unrolled)[0])    # whatever the layout
  assert info_scanned["num_params"] == info_unrolled["num_params"]
  assert sorted(tensors) == sorted(names.flatten(runs.ema))
  _, params, step = sampling.load_exported(runs.unrolled_config, out_scanned)
  assert step == STEP
  _assert_equal_trees(params, runs.ema)
  _, params, _ = sampling.load_exported(runs.scan_config, out_unrolled)
  _assert_equal_trees(params, layout.stack_layers(runs.ema))
  # A scanned export of an unrolled workdir under a scanned --config: still per-layer names, same weights.
  writer.export_checkpoint(runs.scan_config, runs.unrolled, runs.root / "export_mixed")
  _assert_same_tensors(files.read_weights(runs.root / "export_mixed")[0], tensors)


def _assert_same_tensors(got: dict, want: dict):
  assert sorted(got) == sorted(want)
  for name, value in want.items():
    np.testing.assert_array_equal(got[name], value, err_msg=name)


def test_init_from_fills_a_scanned_state_from_an_unrolled_export(runs):
  out = runs.root / "export_for_init"
  writer.export_checkpoint(runs.unrolled_config, runs.unrolled, out)
  config = tiny_test_config(**SCAN, **{"mesh.fsdp": 8})
  # A fresh state made on the host and placed on an FSDP mesh (compiling the init would dominate the time).
  shardings = mesh_lib.state_shardings(ModelDef(config).abstract_params(), mesh_lib.make_mesh(config))
  params = jax.device_put(_host_params(config, seed=9), shardings)
  fresh = {"step": jnp.int32(0), "params": params, "opt_state": {}, "ema": jax.tree.map(jnp.copy, params)}
  state = init_from.initialize_state(fresh, str(out), runs.root, resumed=False)
  _assert_equal_trees(state["params"], layout.stack_layers(runs.ema))
  _assert_equal_trees(state["ema"], layout.stack_layers(runs.ema))
  assert jax.tree.map(lambda x: x.sharding, state["params"]) == shardings


def test_checkpoint_restore_across_layouts(runs):
  # Sampling converts: an unrolled run sampled with scan_layers=True, and the reverse.
  _, params, step = sampling.load_params(runs.scan_config, runs.unrolled)
  assert step == STEP
  _assert_equal_trees(params, layout.stack_layers(runs.ema))
  _, params, _ = sampling.load_params(runs.unrolled_config, runs.scanned, use_ema=False)
  _assert_equal_trees(params, jax.tree.map(lambda x: x + 1.0, runs.ema))
  # Training resume refuses, naming the field and the conversion.
  model_def = ModelDef(runs.scan_config)
  target = jax.eval_shape(lambda: train_lib.init_state(model_def, train_lib.make_optimizer(runs.scan_config),
                                                       jax.random.key(0)))
  manager = checkpointing.Manager(runs.unrolled / "checkpoints", async_save=False)
  try:
    with pytest.raises(checkpointing.LayoutError, match=r"model.scan_layers=False.*--init_from"):
      manager.restore_latest(target)
  finally:
    manager.close()
