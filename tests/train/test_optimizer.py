"""Weight decay shrinks the weight matrices only (not norms, AdaLN tables, learned tokens or embeddings), with
either optimizer; Adafactor keeps a fraction of AdamW's state and descends."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import keystr, tree_flatten_with_path

from vin_jax import train as train_lib
from vin_jax.model import ModelDef

from tests.model.helpers import tiny_test_config

NOT_DECAYED = ("dit.blocks.0.table", "dit.final_table", "vin.global_init", "text.null", "text.pos",
               "text.embed.embedding", "dit.blocks.0.attn.q_norm.scale", "vin.out_norm.scale", "dit.final.bias")
DECAYED = ("dit.blocks.0.attn.q.kernel", "dit.blocks.1.mlp.fc2.kernel", "vin.cross.k.kernel", "dit.final.kernel",
           "text.blocks.0.mlp.fc1.kernel")


def _by_name(tree):
  return {keystr(path, simple=True, separator="."): leaf for path, leaf in tree_flatten_with_path(tree)[0]}


def test_decay_mask_selects_the_kernels():
  params = ModelDef(tiny_test_config()).abstract_params()
  mask = _by_name(train_lib.decay_mask(params))
  for name in NOT_DECAYED:
    assert mask[name] is False, name
  for name in DECAYED:
    assert mask[name] is True, name
  assert all(value == name.endswith(".kernel") for name, value in mask.items())


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_weight_decay_leaves_the_other_parameters_alone(name):
  """With zero gradients the update is the decay alone: kernels shrink, everything else stays exactly."""
  config = tiny_test_config(**{"train.weight_decay": 0.1, "train.grad_clip": 0.0, "train.optimizer": name})
  params = ModelDef(config).init(jax.random.key(0))
  params = jax.tree.map(lambda x: x + 1.0, params)   # no zero-initialised leaf: every one could shrink
  optimizer = train_lib.make_optimizer(config)
  state = optimizer.init(params)
  zeros = jax.tree.map(jnp.zeros_like, params)
  new = params
  for _ in range(3):   # the first step has learning rate 0 (warmup from 0)
    updates, state = optimizer.update(zeros, state, new)
    new = jax.tree.map(lambda p, u: p + u, new, updates)
  before, after = _by_name(params), _by_name(new)
  for name in before:
    changed = not np.array_equal(np.asarray(before[name]), np.asarray(after[name]))
    assert changed == name.endswith(".kernel"), name


def test_a_checkpoint_from_before_the_mask_still_loads_for_sampling(tmp_path):
  """Sampling reads the weights alone, so a checkpoint whose optimizer state has another structure (written
  before the decay mask existed) still loads."""
  import optax
  from vin_jax import checkpointing, sampling
  config = tiny_test_config()
  model_def = ModelDef(config)
  old_optimizer = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3, weight_decay=0.01))  # no mask
  state = train_lib.init_state(model_def, old_optimizer, jax.random.key(0))
  state["ema"] = jax.tree.map(lambda x: x + 1.0, state["ema"])
  state["step"] = jnp.asarray(7, jnp.int32)
  manager = checkpointing.Manager(tmp_path / "checkpoints", async_save=False)
  manager.save(7, state, {})
  manager.close()
  _, ema, step = sampling.load_params(config, tmp_path)
  assert step == 7
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(state["ema"])):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def _state_bytes(tree) -> int:
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def test_adafactor_state_is_a_small_fraction_of_adamw_at_paper_size():
  """Abstract shapes only: AdamW keeps two fp32 moments per parameter, Adafactor a row and a column per
  large matrix."""
  from vin_jax import config as config_lib
  from tests.conftest import REPO
  config = config_lib.load_config_file(REPO / "configs" / "paper.py")
  params = ModelDef(config).abstract_params()
  sizes = {}
  for name in ("adamw", "adafactor"):
    config.train.optimizer = name
    sizes[name] = _state_bytes(jax.eval_shape(train_lib.make_optimizer(config).init, params))
  assert sizes["adamw"] >= 2 * _state_bytes(params)
  assert sizes["adafactor"] < 0.01 * sizes["adamw"], sizes


def test_adafactor_steps_against_the_gradient():
  config = tiny_test_config(**{"train.optimizer": "adafactor", "train.weight_decay": 0.0, "train.warmup_steps": 1})
  optimizer = train_lib.make_optimizer(config)
  params = {"w": {"kernel": jnp.ones((256, 128))}, "b": {"bias": jnp.ones((128,))}}
  grads = jax.tree.map(lambda x: jax.random.normal(jax.random.key(x.size), x.shape), params)
  state = optimizer.init(params)
  for _ in range(2):   # step 0 has learning rate 0
    updates, state = optimizer.update(grads, state, params)
  for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
    assert float(jnp.sum(u * g)) < 0 and bool(jnp.all(jnp.isfinite(u)))
