"""Start JAX's multi-process runtime from environment variables.

Call `initialize_from_env()` first, right after `import jax` and before anything creates a JAX backend
(`jax.devices()`, `jax.process_index()`, a `jnp` array, a jitted call): `jax.distributed.initialize` and the
CPU options `jax_num_cpu_devices` / `jax_cpu_collectives_implementation` only take effect before that, and
JAX raises a RuntimeError otherwise.

Which runtime is chosen, first match wins:

1. `VIN_NUM_PROCESSES` > 1: a multi-process CPU run on one machine, started by `launch/local.py`, which also
   sets `VIN_PROCESS_ID`, `VIN_LOCAL_DEVICES` (CPU devices per process) and `VIN_COORDINATOR` (host:port).
   The processes talk over gloo; e.g. 2 processes x 4 devices form one 8-device mesh. An uncaught exception
   ends the process at once (exit 1) instead of hanging in JAX's exit barrier, so the launcher can stop the rest.
2. A Cloud TPU pod slice: `VIN_DISTRIBUTED=1`, or, when `VIN_DISTRIBUTED` is unset, `TPU_WORKER_HOSTNAMES`
   naming more than one host (GKE sets it) or `MEGASCALE_COORDINATOR_ADDRESS` (multislice). Then
   `jax.distributed.initialize()` with no arguments: JAX finds the coordinator and the process ids from the TPU
   environment / metadata server. A plain TPU VM's ssh shell does not carry `TPU_WORKER_HOSTNAMES`, so
   `launch/tpu_run.py` sets `VIN_DISTRIBUTED=1` on every worker of a multi-worker run.
   `VIN_DISTRIBUTED=0` forces single-process mode (e.g. a one-worker `data` job on a pod).
3. Otherwise a single process: nothing to do, and no backend is created.
"""
import os
import sys

import jax

# The contract with launch/local.py (which must not import jax, so it spells these names itself).
ENV_NUM_PROCESSES = "VIN_NUM_PROCESSES"
ENV_PROCESS_ID = "VIN_PROCESS_ID"
ENV_LOCAL_DEVICES = "VIN_LOCAL_DEVICES"
ENV_COORDINATOR = "VIN_COORDINATOR"
ENV_DISTRIBUTED = "VIN_DISTRIBUTED"

_TPU_POD_MARKERS = ("MEGASCALE_COORDINATOR_ADDRESS",)
# Loopback peers answer at once: notice a dead or stuck peer in seconds, not JAX's default minutes.
_LOCAL_TIMEOUT_SECONDS = 30

# (process_index, process_count) once initialize_from_env has run; makes it idempotent.
_initialized_as = None


def _env_int(name, environ):
  value = environ.get(name, "")
  try:
    return int(value)
  except ValueError:
    raise ValueError(f"{name}={value!r} must be an integer") from None


def runtime_kind(environ=None):
  """Which runtime `initialize_from_env` would start: "local_cpu", "tpu_pod" or "single" (no side effects)."""
  environ = os.environ if environ is None else environ
  if environ.get(ENV_NUM_PROCESSES) and _env_int(ENV_NUM_PROCESSES, environ) > 1:
    return "local_cpu"
  flag = environ.get(ENV_DISTRIBUTED, "").strip().lower()
  if flag in ("1", "true", "yes"):
    return "tpu_pod"
  if flag in ("0", "false", "no"):
    return "single"
  if flag:
    raise ValueError(f"{ENV_DISTRIBUTED}={environ[ENV_DISTRIBUTED]!r} must be 0 or 1")
  hostnames = [h for h in environ.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
  if len(hostnames) > 1 or any(environ.get(name) for name in _TPU_POD_MARKERS):
    return "tpu_pod"
  return "single"


def _initialize_local_cpu(environ):
  num_processes = _env_int(ENV_NUM_PROCESSES, environ)
  process_id = _env_int(ENV_PROCESS_ID, environ)
  local_devices = _env_int(ENV_LOCAL_DEVICES, environ)
  coordinator = environ.get(ENV_COORDINATOR, "")
  if not 0 <= process_id < num_processes:
    raise ValueError(f"{ENV_PROCESS_ID}={process_id} must be in [0, {ENV_NUM_PROCESSES}={num_processes})")
  if local_devices < 1:
    raise ValueError(f"{ENV_LOCAL_DEVICES}={local_devices} must be >= 1")
  if ":" not in coordinator:
    raise ValueError(f"{ENV_COORDINATOR}={coordinator!r} must be host:port")
  # Both options must be set before the backend exists; cross-process collectives on CPU need gloo.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_num_cpu_devices", local_devices)
  # JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR) is written by process 0 only and its keys
  # differ per CPU process, so process 0 would load a program that process 1 compiles, and the first
  # collective times out waiting for process 1. Off for local multi-process CPU runs.
  jax.config.update("jax_enable_compilation_cache", False)
  jax.distributed.initialize(
      coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
      heartbeat_timeout_seconds=_LOCAL_TIMEOUT_SECONDS, shutdown_timeout_seconds=_LOCAL_TIMEOUT_SECONDS)
  sys.excepthook = _exit_now_after(sys.excepthook)
  return process_id, num_processes


def _exit_now_after(excepthook):
  """Wraps `excepthook` to end the process right after reporting an uncaught exception.

  A crashed process would otherwise sit in JAX's exit-time shutdown barrier, waiting for peers that are
  themselves blocked in a collective with it, and the launcher would never see a failure to react to.
  """
  def hook(exc_type, exc, tb):
    excepthook(exc_type, exc, tb)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access
  return hook


def initialize_from_env():
  """Start the multi-process runtime the environment asks for (see the module docstring).

  Idempotent: later calls return the first call's answer. Must run before any JAX backend exists.

  Returns:
    (process_index, process_count); (0, 1) for a single process.
  """
  global _initialized_as
  if _initialized_as is not None:
    return _initialized_as
  if jax.distributed.is_initialized():  # somebody else started it: respect that
    _initialized_as = (jax.process_index(), jax.process_count())
    return _initialized_as
  kind = runtime_kind()
  try:
    if kind == "local_cpu":
      _initialized_as = _initialize_local_cpu(os.environ)
    elif kind == "tpu_pod":
      jax.distributed.initialize()
      _initialized_as = (jax.process_index(), jax.process_count())
    else:
      _initialized_as = (0, 1)
  except RuntimeError as e:
    if "before" in str(e):
      raise RuntimeError(
          f"initialize_from_env() ({kind}) must be called before any JAX call creates a backend "
          f"(jax.devices(), arrays, jit): {e}") from e
    raise
  return _initialized_as


def is_main_process():
  """True on process 0, the one that writes logs, metrics and exports. Creates the backend if none exists."""
  if _initialized_as is not None:
    return _initialized_as[0] == 0
  return jax.process_index() == 0
