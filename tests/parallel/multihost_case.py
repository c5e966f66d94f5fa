"""One train case shared by the two-process run and its single-process reference."""
import jax
import numpy as np

from vin_jax import train as train_lib

from tests.model.helpers import tiny_test_config

BATCH, NUM_CHUNKS, STEPS = 4, 4, 2


def config(data=1, chunk=1):
  return tiny_test_config(**{"mesh.data": data, "mesh.chunk": chunk, "data.batch_size": BATCH})


def global_batch_numpy(config):
  rng = np.random.RandomState(0)
  frames = rng.randint(0, 256, (BATCH, NUM_CHUNKS * config.chunking.chunk_frames, 8, 8, 3)).astype(np.uint8)
  text = rng.randint(1, 200, (BATCH, config.text.max_length)).astype(np.int32)
  return {"frames": frames, "text_tokens": text}


def perturb(state):
  """Non-zero gates and output layers, so every parameter gets a gradient (deterministic)."""
  leaves, treedef = jax.tree.flatten(state["params"])
  keys = jax.random.split(jax.random.key(11), len(leaves))
  params = jax.tree.unflatten(treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])
  return {**state, "params": params, "ema": params}


def run(config, mesh=None, process_rows=None):
  """STEPS train steps -> (losses, final params as numpy)."""
  model_def = train_lib.ModelDef(config)
  optimizer = train_lib.make_optimizer(config)
  state = train_lib.create_state(model_def, optimizer, jax.random.key(0), mesh)
  if mesh is None:
    state = jax.jit(perturb)(state)
    step = jax.jit(train_lib.make_train_step(model_def, config, optimizer))
    batch = global_batch_numpy(config)
  else:
    from vin_jax.parallel import mesh as mesh_lib
    shardings = jax.tree.map(lambda x: x.sharding, state)
    state = jax.jit(perturb, out_shardings=shardings)(state)
    step = train_lib.jit_train_step(model_def, config, optimizer, mesh, state)
    full = global_batch_numpy(config)
    batch = mesh_lib.global_batch({k: v[process_rows] for k, v in full.items()}, mesh)
  losses = []
  for _ in range(STEPS):
    state, metrics = step(state, batch, jax.random.key(1))
    losses.append(float(np.asarray(metrics["loss"].addressable_data(0) if mesh else metrics["loss"])))
  params = jax.tree.map(lambda x: np.asarray(x.addressable_data(0)) if mesh else np.asarray(x), state["params"])
  return losses, params
