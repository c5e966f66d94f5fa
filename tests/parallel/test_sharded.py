"""A sharded run gives the single-device numbers (fp32, 1e-5): train step (loss, gradients, updated
parameters) and the sampler, with mesh.chunk = 8, 4 and 2 over 8 simulated CPU devices. On the FSDP mesh the
loss gradient and the sampler run the scanned layout (model.scan_layers) against the unrolled reference."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax import config as config_lib
from vin_jax import sampling
from vin_jax import train as train_lib
from vin_jax.model import layout
from vin_jax.parallel import mesh as mesh_lib

from tests.model.helpers import perturbed_params, tiny_test_config

NUM_CHUNKS, BATCH = 8, 4
MESHES = [dict(data=1, chunk=8), dict(data=2, chunk=4), dict(data=2, fsdp=2, chunk=2)]


def _config(data=1, fsdp=1, chunk=1, scan=False):
  config = tiny_test_config(**{"mesh.data": data, "mesh.fsdp": fsdp, "mesh.chunk": chunk,
                          "data.batch_size": BATCH, "sampling.num_chunks": NUM_CHUNKS, "model.scan_layers": scan})
  return config


def _scanned(axes) -> bool:
  return axes.get("fsdp", 1) > 1


def _batch(config):
  frames_per_video = NUM_CHUNKS * config.chunking.chunk_frames
  frames = jax.random.randint(jax.random.key(7), (BATCH, frames_per_video, 8, 8, 3), 0, 256).astype(jnp.uint8)
  text = jax.random.randint(jax.random.key(8), (BATCH, config.text.max_length), 1, 200).astype(jnp.int32)
  return {"frames": np.asarray(frames), "text_tokens": np.asarray(text)}


def _grads(config, mesh, params, batch, rng):
  loss_sums = train_lib.make_loss_sums(train_lib.ModelDef(config), config, mesh)
  fn = lambda p, f, t, m: loss_sums(p, f, t, rng, m)["loss"] / BATCH
  return jax.jit(jax.value_and_grad(fn))(params, batch["frames"], batch["text_tokens"], batch.get("micro"))


@pytest.fixture(scope="module")
def reference():
  config = _config()
  model_def = train_lib.ModelDef(config)
  optimizer = train_lib.make_optimizer(config)
  state = train_lib.init_state(model_def, optimizer, jax.random.key(0))
  state["params"] = perturbed_params(model_def)
  state["ema"] = state["params"]
  batch = _batch(config)
  loss, grads = _grads(config, None, state["params"], batch, jax.random.key(1))
  step = jax.jit(train_lib.make_train_step(model_def, config, optimizer))
  new_state, metrics = step(state, batch, jax.random.key(1))
  new_state, metrics = step(new_state, batch, jax.random.key(1))
  text = jnp.asarray(batch["text_tokens"])
  samples = sampling.generate(config, model_def, state["params"], text, jax.random.key(2), num_chunks=NUM_CHUNKS)
  first_frame = sampling.first_frame_condition(config, _first_frames(config), NUM_CHUNKS)
  samples_first_frame = sampling.generate(config, model_def, state["params"], text, jax.random.key(2),
                                          num_chunks=NUM_CHUNKS, clean_x0=first_frame[0], clean_mask=first_frame[1])
  return dict(state=state, batch=batch, loss=loss, grads=grads, new_state=new_state, metrics=metrics,
              samples=samples, samples_first_frame=samples_first_frame)


def _first_frames(config):
  """Clean first latent frames [B, h, w, c] to give the sampler (image-to-video)."""
  h, w, c = config_lib.latent_shape(config)
  return np.asarray(jax.random.normal(jax.random.key(9), (BATCH, h, w, c)))


def _close(a, b):
  """Equal to 1e-5, plus 1e-6 of each leaf's largest magnitude: gradients reach ~75, and a near-zero element
  summed from such terms in another order differs by float32's rounding of them (~1e-5)."""
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    y = np.asarray(y)
    scale = float(np.abs(y).max()) if y.size else 0.0
    np.testing.assert_allclose(np.asarray(x), y, atol=1e-5 + 1e-6 * scale, rtol=1e-5)


@pytest.mark.parametrize("axes", MESHES, ids=lambda a: "x".join(f"{k}{v}" for k, v in a.items()))
def test_sharded_train_step_matches_single_device(reference, axes):
  config = _config(**axes)
  mesh = mesh_lib.make_mesh(config)
  model_def = train_lib.ModelDef(config)
  optimizer = train_lib.make_optimizer(config)

  scan = _scanned(axes)
  params = reference["state"]["params"]
  loss, grads = _grads(_config(**axes, scan=scan), mesh, layout.stack_layers(params) if scan else params,
                       mesh_lib.global_batch(reference["batch"], mesh), jax.random.key(1))
  np.testing.assert_allclose(loss, reference["loss"], rtol=1e-5)
  _close(layout.unstack_layers(grads) if scan else grads, reference["grads"])

  state = train_lib.create_state(model_def, optimizer, jax.random.key(0), mesh)
  # Host copies: device_put of a device-0 array may alias it, and the step donates its state.
  state = jax.tree.map(lambda ref, x: jax.device_put(np.asarray(ref), x.sharding), reference["state"], state)
  step = train_lib.jit_train_step(model_def, config, optimizer, mesh, state)
  batch = mesh_lib.global_batch(reference["batch"], mesh)
  new_state, metrics = step(state, batch, jax.random.key(1))
  new_state, metrics = step(new_state, batch, jax.random.key(1))
  np.testing.assert_allclose(metrics["loss"], reference["metrics"]["loss"], rtol=1e-5)
  _close(new_state["params"], reference["new_state"]["params"])
  if axes.get("fsdp", 1) > 1:
    sharded = [x for x in jax.tree.leaves(new_state["params"]) if "fsdp" in str(x.sharding.spec)]
    assert sharded, "FSDP rule sharded no parameter"


@pytest.mark.parametrize("axes", MESHES, ids=lambda a: "x".join(f"{k}{v}" for k, v in a.items()))
def test_sharded_sampler_matches_single_device(reference, axes):
  config = _config(**axes, scan=_scanned(axes))
  mesh = mesh_lib.make_mesh(config)
  model_def = train_lib.ModelDef(config)
  text = jnp.asarray(reference["batch"]["text_tokens"])
  params = reference["state"]["params"]
  params = layout.stack_layers(params) if _scanned(axes) else params
  samples = sampling.generate(config, model_def, params, text, jax.random.key(2),
                              num_chunks=NUM_CHUNKS, mesh=mesh)
  assert samples.sharding.spec == mesh_lib.VIDEO
  np.testing.assert_allclose(np.asarray(samples), np.asarray(reference["samples"]), atol=1e-5, rtol=1e-5)

  # Image-to-video on the mesh: each device holds its own given frames; the same compiled program serves it.
  clean_x0, clean_mask = sampling.first_frame_condition(config, _first_frames(config), NUM_CHUNKS)
  given = sampling.generate(config, model_def, params, text, jax.random.key(2),
                            num_chunks=NUM_CHUNKS, mesh=mesh, clean_x0=clean_x0, clean_mask=clean_mask)
  np.testing.assert_allclose(np.asarray(given), np.asarray(reference["samples_first_frame"]), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(given)[:, 0, 0], np.asarray(clean_x0)[:, 0, 0], atol=1e-6)
  assert float(np.abs(np.asarray(given) - np.asarray(samples)).max()) > 1e-3

  compiled = [fn for key, fn in sampling._CACHE.items() if key[0] == "sharded" and key[1] is model_def]
  assert len(compiled) == 1 and compiled[0]._cache_size() == 1, "the sharded sampler recompiled"


def test_full_mode_refuses_a_split_chunk_axis():
  """One window over the whole video cannot be built from each device's local chunks: a clear error at trace
  time (validate() rejects model.window_mode='full' with mesh.chunk > 1 before that)."""
  config = tiny_test_config(**{"model.window_mode": "full", "mesh.chunk": 2, "mesh.data": 4,
                               "data.batch_size": BATCH})
  mesh = mesh_lib.make_mesh(config)
  model_def = train_lib.ModelDef(config)
  loss_sums = train_lib.make_loss_sums(model_def, config, mesh)
  batch = _batch(config)
  with pytest.raises(ValueError, match="full mode"):
    jax.eval_shape(loss_sums, model_def.abstract_params(), batch["frames"], batch["text_tokens"], jax.random.key(0))


def test_sharded_sampler_with_rescheduled_noise_and_global_guidance_matches_single_device(reference):
  # Each device derives its chunks' permutations of chunk 0's noise from global indices; global-token
  # guidance (beyond the paper) runs its no-token branch in the same sharded call, on the first half of the
  # steps only (global_guidance_fraction: the scale switches on the scan's step index).
  def configured(**axes):
    config = _config(**axes)
    config.sampling.noise, config.sampling.global_guidance_scale = "rescheduled", 2.0
    config.sampling.global_guidance_fraction = 0.5
    return config

  config = configured()
  model_def = train_lib.ModelDef(config)
  text = jnp.asarray(reference["batch"]["text_tokens"])
  params = reference["state"]["params"]
  single = sampling.generate(config, model_def, params, text, jax.random.key(2), num_chunks=NUM_CHUNKS)
  sharded_config = configured(data=2, chunk=4)
  sharded = sampling.generate(sharded_config, model_def, params, text, jax.random.key(2), num_chunks=NUM_CHUNKS,
                              mesh=mesh_lib.make_mesh(sharded_config))
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(single), atol=1e-5, rtol=1e-5)
  assert float(np.abs(np.asarray(single) - np.asarray(reference["samples"])).max()) > 1e-3


def test_sharded_sampler_with_splash_attention_matches_single_device(reference):
  # Pallas splash attention, interpreted on the CPU, inside the sampler's shard_map (every axis manual).
  # The train step's splash path (nested shard_map over 'data'/'fsdp') is compiled for TPU in
  # tests/parallel/test_tpu_compile.py; the interpreter cannot run it under a partially manual shard_map.
  config = _config(data=2, chunk=4)
  config.model.attention = "splash"
  text = jnp.asarray(reference["batch"]["text_tokens"])
  samples = sampling.generate(config, train_lib.ModelDef(config), reference["state"]["params"], text,
                              jax.random.key(2), num_chunks=NUM_CHUNKS, mesh=mesh_lib.make_mesh(config))
  np.testing.assert_allclose(np.asarray(samples), np.asarray(reference["samples"]), atol=1e-5, rtol=1e-5)


def _shared(config):
  config.chunking.context_mode, config.sampling.fusion = "shared", "none"
  config.vin.drop_prob = 0.5   # global-token dropout rows, drawn by global row, on the same mesh
  return config


def test_shared_context_sharded_matches_single_device(reference):
  """chunking.context_mode='shared': each layer's key/value halo crosses devices by ppermute. Loss and
  gradients on the FSDP mesh (scanned layers) and samples on mesh.chunk=4 equal one device's."""
  params = reference["state"]["params"]
  batch, text = reference["batch"], jnp.asarray(reference["batch"]["text_tokens"])
  single = _shared(_config())
  loss, grads = _grads(single, None, params, batch, jax.random.key(1))
  assert abs(float(loss) - float(reference["loss"])) > 1e-4    # the mode changes the model

  axes = dict(data=2, fsdp=2, chunk=2)
  mesh = mesh_lib.make_mesh(_config(**axes))
  sharded_loss, sharded_grads = _grads(_shared(_config(**axes, scan=True)), mesh, layout.stack_layers(params),
                                       mesh_lib.global_batch(batch, mesh), jax.random.key(1))
  np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
  _close(layout.unstack_layers(sharded_grads), grads)

  model_def = train_lib.ModelDef(single)
  samples = sampling.generate(single, model_def, params, text, jax.random.key(2), num_chunks=NUM_CHUNKS)
  chunked = _shared(_config(data=2, chunk=4))
  sharded = sampling.generate(chunked, train_lib.ModelDef(chunked), params, text, jax.random.key(2),
                              num_chunks=NUM_CHUNKS, mesh=mesh_lib.make_mesh(chunked))
  np.testing.assert_allclose(np.asarray(sharded), np.asarray(samples), atol=1e-5, rtol=1e-5)


def test_joint_guidance_and_video_prediction_sharded_match_single_device(reference):
  """STIV's joint image-text guidance over given frames that span chunk devices (video prediction of 6 latent
  frames, chunks of 4 over mesh chunk=4): the image-free branch's free trajectory, split over devices, gives
  the single-device samples."""
  def configured(**axes):
    config = _config(**axes)
    config.sampling.guidance_scale, config.sampling.image_guidance_scale = 2.0, 1.5
    return config

  single = configured()
  f = single.chunking.chunk_frames
  h, w, c = config_lib.latent_shape(single)
  given = np.asarray(jax.random.normal(jax.random.key(11), (BATCH, f + 2, h, w, c)))
  clean_x0, clean_mask = sampling.frames_condition(single, given, np.arange(f + 2), NUM_CHUNKS)
  text = jnp.asarray(reference["batch"]["text_tokens"])
  params = reference["state"]["params"]
  want = sampling.generate(single, train_lib.ModelDef(single), params, text, jax.random.key(2),
                           num_chunks=NUM_CHUNKS, clean_x0=clean_x0, clean_mask=clean_mask)
  sharded = configured(data=2, chunk=4)
  got = sampling.generate(sharded, train_lib.ModelDef(sharded), params, text, jax.random.key(2),
                          num_chunks=NUM_CHUNKS, mesh=mesh_lib.make_mesh(sharded), clean_x0=clean_x0,
                          clean_mask=clean_mask)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
  flat = np.asarray(got).reshape(BATCH, NUM_CHUNKS * f, h, w, c)
  np.testing.assert_allclose(flat[:, :f + 2], given, atol=1e-6)


def test_factorised_layout_with_keys_values_tokens_sharded_matches_single_device():
  """model.attention_layout='factorised' with model.global_tokens_in_dit='keys_values' and shared context: the
  temporal attention's halo crosses devices; loss and gradients on mesh.chunk=4 equal one device's. The rows
  carry their own fps micro-conditions (data.frame_strides), replicated over 'chunk' like the text."""
  options = {"model.attention_layout": "factorised", "model.global_tokens_in_dit": "keys_values",
             "model.micro_conditions": True}
  single = config_lib.override(_shared(_config()), options)
  params = perturbed_params(train_lib.ModelDef(single))
  batch = _batch(single)
  batch["micro"] = np.array([[8.0 / (1 + i % 2), 8.0, 8.0] for i in range(BATCH)], np.float32)
  loss, grads = _grads(single, None, params, batch, jax.random.key(1))
  axes = dict(data=2, chunk=4)
  mesh = mesh_lib.make_mesh(_config(**axes))
  sharded_loss, sharded_grads = _grads(config_lib.override(_shared(_config(**axes)), options), mesh, params,
                                       mesh_lib.global_batch(batch, mesh), jax.random.key(1))
  np.testing.assert_allclose(sharded_loss, loss, rtol=1e-5)
  _close(sharded_grads, grads)
  assert float(jnp.abs(grads["dit"]["blocks"][0]["temporal_attn"]["q"]["kernel"]).max()) > 0
