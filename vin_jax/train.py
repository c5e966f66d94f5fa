"""One linear training loop around a pure, jitted `train_step(state, batch, rng) -> (state, metrics)`.

Re-running the same command resumes from WORKDIR (params, optimizer, EMA, step and the data iterator),
so a resumed run logs exactly the losses of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import pathlib
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import logging

from vin_jax import autoencoder as autoencoder_lib
from vin_jax import checkpointing
from vin_jax import config as config_lib
from vin_jax import metrics_log
from vin_jax.diffusion import loss as loss_lib
from vin_jax.diffusion.schedules import Schedule
from vin_jax.model import ModelDef
from vin_jax.model.layers import count_params
from vin_jax.parallel import mesh as mesh_lib

State = dict[str, Any]   # {"step": int32 [], "params": tree, "opt_state": tree, "ema": tree}


class NonFiniteLossError(RuntimeError):
  pass


def learning_rate_schedule(config) -> optax.Schedule:
  """Linear warmup from 0 to train.learning_rate, then cosine decay to a tenth of it at train.steps."""
  t = config.train
  return optax.warmup_cosine_decay_schedule(0.0, t.learning_rate, max(t.warmup_steps, 1), max(t.steps, 2),
                                            end_value=0.1 * t.learning_rate)


def decay_mask(params):
  """True for the parameters that weight decay shrinks: the weight matrices of linear layers (leaves named
  `kernel`). Biases, norm scales, AdaLN tables, learned tokens (`global_init`, the null text embedding) and
  embeddings (positions, bytes) are not decayed: pulling them to zero regularises nothing useful."""
  return jax.tree_util.tree_map_with_path(lambda path, leaf: getattr(path[-1], "key", None) == "kernel", params)


def make_optimizer(config) -> optax.GradientTransformation:
  """train.optimizer after global-norm clipping (train.grad_clip = 0 turns it off), on the schedule above,
  with decoupled weight decay (scaled by the learning rate, as in AdamW) on `decay_mask`'s matrices only.

  - "adamw": two fp32 moments per parameter (8 bytes per parameter).
  - "adafactor" (STIV's choice to fit v5e): factored second moments (a row and a column vector per matrix of
    at least 128 x 128, full for smaller leaves), no first moment, update RMS clipped to 1 per leaf.
  """
  t = config.train
  chain = [optax.clip_by_global_norm(t.grad_clip)] if t.grad_clip > 0 else []
  schedule = learning_rate_schedule(config)
  if t.optimizer == "adafactor":
    chain += [optax.scale_by_factored_rms(decay_rate=0.8), optax.clip_by_block_rms(1.0),
              optax.add_decayed_weights(t.weight_decay, mask=decay_mask), optax.scale_by_learning_rate(schedule)]
  else:
    chain.append(optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=t.weight_decay, mask=decay_mask))
  return optax.chain(*chain)


def init_state(model_def: ModelDef, optimizer, rng) -> State:
  params = model_def.init(rng)
  return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params),
          "ema": jax.tree.map(jnp.copy, params)}


def frames_to_latents(autoencoder, frames_BxTxHxWx3, chunk_frames: int):
  """uint8 pixel frames -> chunk-major latents [B, N, F, h, w, c]."""
  z = autoencoder.encode(frames_BxTxHxWx3)
  b, t = z.shape[:2]
  return z.reshape(b, t // chunk_frames, chunk_frames, *z.shape[2:])


def make_loss_sums(model_def: ModelDef, config, mesh=None, *, mask_ratio: float | None = None):
  """(params, video, text [B, Lt], rng, micro [B, 3] or None) -> loss sums over the whole batch. The video is
  pixel frames [B, T, H, W, 3] uint8, encoded here, or latents [B, T', h, w, c] (float: already encoded, so no
  autoencoder runs in the step). `mask_ratio`: masked training's (default train.mask_ratio; 0: unmasked).

  With a sharded mesh the loss runs under a shard_map that is manual over 'chunk' only (see below): rows
  over 'data' x 'fsdp' and FSDP of the parameters are left to the compiler.
  """
  schedule = Schedule.from_config(config)
  f = config.chunking.chunk_frames

  def local_sums(params, video, text, rng, axis_name, row_offset, micro=None):
    if jnp.issubdtype(video.dtype, jnp.floating):
      latents = video.reshape(video.shape[0], video.shape[1] // f, f, *video.shape[2:])
    else:
      latents = frames_to_latents(autoencoder_lib.make_autoencoder(config), video, f)
    # bf16 matmul weights (a no-op for fp32 models): under FSDP the weight gathers and gradient buffers halve.
    model = model_def.bind(model_def.compute_params(params))
    return loss_lib.diffusion_loss(model, schedule, config, latents, text, rng, axis_name=axis_name,
                                   row_offset=row_offset, mask_ratio=mask_ratio, micro_BxK=micro)

  if not mesh_lib.is_sharded(mesh):
    return lambda params, frames, text, rng, micro=None: local_sums(params, frames, text, rng, None, 0, micro)

  def per_chunk_group(params, frames, text, rng, micro):
    # Only 'chunk' is manual here: each device group holds its own chunks, and the VIN's keyframe attention
    # and the window halos talk over 'chunk'. 'data' and 'fsdp' stay automatic, so this body sees every row
    # (row offset 0) and the compiler partitions rows over them and keeps the parameters, gradients and
    # optimizer state sharded over 'fsdp' as `state_shardings` places them: FSDP, each weight gathered where
    # it is used and its gradient reduce-scattered. Marking the params chunk-varying once makes the
    # backward pass sum each gradient over 'chunk' once, at parameter size.
    params = jax.lax.pcast(params, mesh_lib.CHUNK, to="varying")
    sums = local_sums(params, frames, text, rng, mesh_lib.CHUNK, 0, micro)
    return jax.tree.map(lambda s: jax.lax.psum(s, mesh_lib.CHUNK), sums)

  # `micro` (the batch's per-row micro-conditions, or None) is replicated over 'chunk' like the text.
  sharded = jax.shard_map(per_chunk_group, mesh=mesh, out_specs=mesh_lib.REPLICATED, axis_names={mesh_lib.CHUNK},
                          in_specs=(mesh_lib.REPLICATED, mesh_lib.CHUNKS, mesh_lib.REPLICATED, mesh_lib.REPLICATED,
                                    mesh_lib.REPLICATED))
  return lambda params, frames, text, rng, micro=None: sharded(params, frames, text, rng, micro)


def make_train_step(model_def: ModelDef, config, optimizer, mesh=None, *, masked: bool = True):
  """The pure step `(state, batch, rng) -> (state, metrics)`; `rng` is the run's base key and the step
  number is folded in. Jit it yourself, or use `jit_train_step` for the sharded version.

  `masked=False` turns train.mask_ratio's masked training off (the train.unmask_finetune_steps at the end);
  with train.mask_ratio > 0 the metrics carry the step's `mask_ratio`."""
  configured_ratio = float(config.train.get("mask_ratio", 0.0))
  mask_ratio = configured_ratio if masked else 0.0
  loss_sums = make_loss_sums(model_def, config, mesh, mask_ratio=mask_ratio)
  ema_decay = config.train.ema_decay

  def train_step(state: State, batch: dict, rng):
    step_rng = jax.random.fold_in(rng, state["step"])
    video = batch["latents"] if "latents" in batch else batch["frames"]
    global_batch = video.shape[0]

    def loss_fn(params):
      sums = loss_sums(params, video, batch["text_tokens"], step_rng, batch.get("micro"))
      return sums["loss"] / global_batch, sums

    grads, sums = jax.grad(loss_fn, has_aux=True)(state["params"])
    updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state["ema"], params)
    metrics = loss_lib.summarize(sums, global_batch)
    metrics["grad_norm"] = optax.tree.norm(grads)
    if configured_ratio > 0:
      metrics["mask_ratio"] = jnp.float32(mask_ratio)
    new_state = {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "ema": ema}
    return new_state, metrics

  return train_step


def create_state(model_def: ModelDef, optimizer, rng, mesh=None) -> State:
  """The initial state, created directly with its shardings (never whole on one device)."""
  init = lambda r: init_state(model_def, optimizer, r)
  if mesh is None:
    return jax.jit(init)(rng)
  shardings = mesh_lib.state_shardings(jax.eval_shape(init, rng), mesh)
  return jax.jit(init, out_shardings=shardings)(rng)


def jit_train_step(model_def: ModelDef, config, optimizer, mesh, state: State, video_key: str = "frames", *,
                   masked: bool = True):
  """The train step jitted with explicit in/out shardings (state donated; arrays or ShapeDtypeStructs with
  shardings). The batch holds `video_key` ("frames" uint8 pixels or "latents") and "text_tokens".
  `masked`: see `make_train_step`."""
  step = make_train_step(model_def, config, optimizer, mesh, masked=masked)
  state_shardings = jax.tree.map(lambda x: x.sharding, state)
  replicated = mesh_lib.named(mesh, mesh_lib.REPLICATED)
  batch_shardings = {"frames": mesh_lib.named(mesh, mesh_lib.VIDEO),
                     "text_tokens": mesh_lib.named(mesh, mesh_lib.ROWS)}
  if config.model.get("micro_conditions", False):   # the pipeline's per-row (fps, height, width)
    batch_shardings["micro"] = mesh_lib.named(mesh, mesh_lib.ROWS)
  if video_key != "frames":
    batch_shardings[video_key] = batch_shardings.pop("frames")
  return jax.jit(step, in_shardings=(state_shardings, batch_shardings, replicated),
                 out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def param_counts(params) -> dict[str, int]:
  """Parameters per top-level module and per VIN/DiT part."""
  counts = {}
  for name, sub in params.items():
    counts[name] = count_params(sub)
    if isinstance(sub, dict) and name in ("vin", "dit"):
      for part, leaf in sub.items():
        counts[f"{name}.{part}"] = count_params(leaf)
  counts["total"] = count_params(params)
  return counts


def last_masked_step(config) -> int:
  """The last (1-based) step that trains masked: train.steps - train.unmask_finetune_steps when
  train.mask_ratio > 0, else train.steps (every step is the ordinary one)."""
  t = config.train
  if float(t.get("mask_ratio", 0.0)) <= 0:
    return t.steps
  return t.steps - int(t.get("unmask_finetune_steps", 0))


class _Preemption:
  """Decides after which step to save and stop on SIGTERM (a preemption notice): the same step on every process.

  One process: a Python SIGTERM handler sets a flag, checked after every step.

  Several processes: SIGTERM may reach only some of them, or reach them at different steps, and a process that
  saved alone would wait in Orbax's save barriers while the others wait for it in the next step's collectives:
  a deadlock. So they agree through JAX's preemption sync manager, which `jax.distributed.initialize` starts
  (`jax_enable_preemption_service` is on by default, also for our loopback CPU runs) with its own C++ SIGTERM
  handler. A process that gets SIGTERM tells the coordination service; a background thread on every process
  then publishes the last step it passed to `reached_preemption_sync_point`, and all take the largest + 1,
  so that call returns True at that same step everywhere. The call is local and non-blocking (a lock and an
  integer compare: no collective, no device sync, so TPU async dispatch keeps running ahead); JAX asks for it
  at every step, with the same step numbers Orbax's `save` passes it. No Python SIGTERM handler is installed
  then: it would replace JAX's and the service would never hear of the signal. A notice that arrives before
  `__init__` (during start-up) is lost on a resumed run (its sync point lies before the run's first step):
  that run trains on, and no process stops alone, so it does not hang.

  With the preemption service turned off, each process keeps its own flag and they all-gather it every
  `agree_every` steps (train.log_every: the loop already waits for the metrics there).
  """

  def __init__(self, first_step: int, agree_every: int):
    self.received = False   # this process got SIGTERM (Python handler)
    self._sync_point = None   # multihost_utils.reached_preemption_sync_point, when JAX's service runs
    self._agree_every = 0   # > 0: all-gather `received` every this many steps
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      try:
        multihost_utils.reached_preemption_sync_point(first_step)  # a notice from now on stops the next step
        self._sync_point = multihost_utils.reached_preemption_sync_point
      except RuntimeError:  # jax_enable_preemption_service is off
        self._agree_every = max(1, agree_every)
    if self._sync_point is None:
      try:
        signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread (e.g. in a notebook worker)
        pass

  def _handle(self, signum, frame):
    del signum, frame
    self.received = True

  def reached(self, step: int) -> bool:
    """Call once after every step, on every process: True when all processes should save `step` and stop."""
    if self._sync_point is not None:
      return self._sync_point(step)
    if self._agree_every:
      if step % self._agree_every:
        return False
      from jax.experimental import multihost_utils
      return bool(np.any(multihost_utils.process_allgather(np.int32(self.received))))
    return self.received


def train(config, workdir: str, *, data_dir: str | None = None, init_from: str | None = None,
          init_weights: str = "ema") -> dict:
  """Trains until config.train.steps, resuming from `workdir`. Returns the last logged metrics.

  `init_from` (an export or a workdir) initialises a fresh run's weights where names and shapes match
  (`vin_jax.export.init_from`); a run that resumes ignores it.
  """
  # --- config and workdir ---
  config_lib.validate(config, num_devices=jax.device_count())
  if init_from:
    from vin_jax.export import init_from as init_from_lib
    init_from_lib.check_source(init_from)  # fail before the data set is built
  from vin_jax.data import pipeline  # local import: keeps model-only users free of grain
  workdir_path = pathlib.Path(workdir)
  workdir_path.mkdir(parents=True, exist_ok=True)
  main_process = jax.process_index() == 0
  if main_process:
    (workdir_path / "config.json").write_text(config.to_json_best_effort(indent=2))

  # --- model, optimizer, state ---
  mesh = mesh_lib.make_mesh(config)
  model_def = ModelDef(config)
  optimizer = make_optimizer(config)
  base_rng = jax.random.key(config.seed)
  init_rng, step_rng = jax.random.split(base_rng)
  state = create_state(model_def, optimizer, init_rng, mesh)
  if main_process:
    counts = param_counts(state["params"])
    logging.info("parameters: %s", json.dumps(counts))
    print("parameters per module:", ", ".join(f"{k}={v:,}" for k, v in counts.items()), flush=True)

  # --- data ---
  data_dir = data_dir or config_lib.resolve_data_dir(config, workdir)
  if main_process:
    from vin_jax.data import builder
    builder.build_dataset(config, data_dir)  # idempotent: reuses a built data set
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices("vin_jax: data set built")
  data_iter = pipeline.make_train_iterator(config, data_dir)

  # --- checkpoint: resume if there is one ---
  manager = checkpointing.Manager(workdir_path / "checkpoints", keep=config.train.keep_checkpoints)
  preemption = _Preemption(manager.latest_step() or 0, config.train.log_every)
  restored = manager.restore_latest(state)
  if restored is not None:
    state, data_state = restored
    data_iter.set_state(data_state)
  if init_from:
    state = init_from_lib.initialize_state(state, init_from, workdir_path, resumed=restored is not None,
                                           weights=init_weights)
  start_step = int(state["step"])
  log = metrics_log.MetricsLog(workdir_path, enabled=main_process)
  log.truncate_after(start_step)
  if start_step:
    print(f"resumed from step {start_step} in {workdir}", flush=True)

  # --- the loop ---
  video_key = "latents" if config.data.get("latents", False) else "frames"
  train_step = jit_train_step(model_def, config, optimizer, mesh, state, video_key=video_key)
  # Masked training (train.mask_ratio) ends with train.unmask_finetune_steps unmasked steps: a second jitted
  # step, picked by step number on the host (so a resumed run picks the same one). Same parameters.
  masked_steps = last_masked_step(config)
  unmasked_step = (jit_train_step(model_def, config, optimizer, mesh, state, video_key=video_key, masked=False)
                   if masked_steps < config.train.steps else train_step)
  lr_schedule = learning_rate_schedule(config)
  mixed_sizes = bool(config.data.get("resolutions", ()))
  pending: list[tuple[int, dict, dict]] = []   # (step, device metrics, the batch's num_chunks [and size])
  last_metrics: dict = {}
  progress = metrics_log.progress_bar(start_step, config.train.steps, enabled=main_process)
  tick, tick_step = time.time(), start_step

  def flush_pending():
    nonlocal last_metrics, tick, tick_step
    if not pending:
      return
    fetched = jax.device_get([m for _, m, _ in pending])
    for (step, _, shape_info), values in zip(pending, fetched):
      values = {k: float(v) for k, v in values.items()}
      if not math.isfinite(values["loss"]):
        raise NonFiniteLossError(
            f"loss is {values['loss']} at step {step}; stopping. The last good checkpoint in {workdir} "
            f"is untouched (step {manager.latest_step()}).")
      last_metrics = {"step": step, **values, **shape_info}
    now = time.time()
    steps_per_sec = (pending[-1][0] - tick_step) / max(now - tick, 1e-9)
    tick, tick_step = now, pending[-1][0]
    last_metrics["steps_per_sec"] = steps_per_sec
    last_metrics["learning_rate"] = float(lr_schedule(pending[-1][0] - 1))
    log.write(last_metrics)
    progress.set_postfix(loss=f"{last_metrics['loss']:.4f}")
    pending.clear()

  try:
    for step in range(start_step + 1, config.train.steps + 1):
      batch = next(data_iter)
      shape_info = {"num_chunks": int(batch.pop("num_chunks"))}
      if mixed_sizes:   # data.resolutions: the batch's frame size in pixels
        shape_info.update(height=int(batch[video_key].shape[2]), width=int(batch[video_key].shape[3]))
      batch = mesh_lib.global_batch(batch, mesh)
      state, metrics = (train_step if step <= masked_steps else unmasked_step)(state, batch, step_rng)
      pending.append((step, metrics, shape_info))
      progress.update(1)
      if step % config.train.log_every == 0 or step == config.train.steps:
        flush_pending()
      stop = preemption.reached(step)
      if step % config.train.checkpoint_every == 0 or step == config.train.steps or stop:
        flush_pending()  # never save a state whose loss went non-finite
        manager.save(step, state, data_iter.get_state())
      if stop:
        print(f"SIGTERM: saved step {step} and stopped; re-run the same command to resume", flush=True)
        break
  finally:
    progress.close()
    manager.close()
    log.close()
  return last_metrics
