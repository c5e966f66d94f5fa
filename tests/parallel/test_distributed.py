"""Two local processes x 4 CPU devices form one 8-device mesh (through launch/local.py) and agree on a sum."""
import os
import pathlib
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # the package may not be pip-installed in the test venv
  sys.path.insert(0, str(REPO))

from vin_jax.parallel import distributed  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests.conftest import SUBPROCESS_TIMEOUT_SECONDS as TIMEOUT_SECONDS  # noqa: E402

# Process p holds rows [4p, 4p+4) of x_8x3[i, j] = 3i + j, so the global sum is sum(range(24)) = 276.
CHILD_SCRIPT = textwrap.dedent("""
    import jax
    from vin_jax.parallel import distributed

    process_index, process_count = distributed.initialize_from_env()
    assert distributed.initialize_from_env() == (process_index, process_count)  # idempotent

    import numpy as np
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P

    assert jax.local_device_count() == 4 and jax.device_count() == 8, jax.devices()
    # Auto axes: plain jnp ops on the sharded array need no explicit out-sharding.
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    rows_local = 8 // process_count
    x_local_4x3 = (np.arange(24, dtype=np.float32).reshape(8, 3)
                   [process_index * rows_local:(process_index + 1) * rows_local])
    x_8x3 = jax.make_array_from_process_local_data(NamedSharding(mesh, P("x")), x_local_4x3, (8, 3))
    assert not x_8x3.is_fully_addressable
    total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, P()))(x_8x3)
    print(f"RESULT process={process_index}/{process_count} main={distributed.is_main_process()} "
          f"sum={float(total.addressable_data(0))}", flush=True)
""")


def _kill_children(launcher_stderr):
  for pid in re.findall(r"\[launch\] p\d+ pid=(\d+)", launcher_stderr or ""):
    try:
      os.killpg(int(pid), signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
      pass


# Process 1 crashes after joining; process 0 then blocks in a collective that can never complete.
CRASHING_CHILD_SCRIPT = textwrap.dedent("""
    import jax
    from vin_jax.parallel import distributed

    process_index, _ = distributed.initialize_from_env()
    if process_index == 1:
      raise RuntimeError("process 1 crashes")
    import numpy as np
    import jax.numpy as jnp
    from jax.sharding import NamedSharding, PartitionSpec as P
    mesh = jax.make_mesh((8,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))
    x_8 = jax.make_array_from_process_local_data(NamedSharding(mesh, P("x")), np.ones(4, np.float32), (8,))
    print(jax.jit(jnp.sum)(x_8).addressable_data(0), flush=True)
""")


def launch_two(tmp_path, child_script):
  """Runs child_script as 2 processes x 4 CPU devices through launch/local.py -> (returncode, stdout, stderr)."""
  script = tmp_path / "child.py"
  script.write_text(child_script)
  env = dict(os.environ, PYTHONPATH=str(REPO))
  env.pop("XLA_FLAGS", None)  # a forced host device count would fight VIN_LOCAL_DEVICES
  launcher = subprocess.Popen(
      [sys.executable, str(REPO / "launch" / "local.py"), "--num_processes=2", "--devices_per_process=4",
       "--", sys.executable, str(script)],
      env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    stdout, stderr = launcher.communicate(timeout=TIMEOUT_SECONDS)
  except subprocess.TimeoutExpired:
    launcher.send_signal(signal.SIGTERM)  # the launcher stops its children on SIGTERM
    try:
      stdout, stderr = launcher.communicate(timeout=15)
    except subprocess.TimeoutExpired:
      launcher.kill()
      stdout, stderr = launcher.communicate()
    _kill_children(stderr)
    pytest.fail(f"timed out after {TIMEOUT_SECONDS}s\nstdout:\n{stdout}\nstderr:\n{stderr}")
  _kill_children(stderr)  # normally all gone already
  return launcher.returncode, stdout, stderr


def test_two_processes_form_one_mesh(tmp_path):
  returncode, stdout, stderr = launch_two(tmp_path, CHILD_SCRIPT)
  assert returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr}"
  results = sorted(line for line in stdout.splitlines() if "RESULT" in line)
  assert results == ["[p0] RESULT process=0/2 main=True sum=276.0",
                     "[p1] RESULT process=1/2 main=False sum=276.0"], stdout


def test_a_crashing_process_ends_the_job_quickly(tmp_path):
  start = time.monotonic()
  returncode, stdout, stderr = launch_two(tmp_path, CRASHING_CHILD_SCRIPT)
  assert returncode == 1, f"stdout:\n{stdout}\nstderr:\n{stderr}"
  assert "[p1] RuntimeError: process 1 crashes" in stdout and "p1 exited with 1" in stderr
  assert time.monotonic() - start < 30  # not JAX's minutes-long exit barrier


@pytest.mark.parametrize("environ, kind", [
    ({}, "single"),
    ({"VIN_NUM_PROCESSES": "1"}, "single"),
    ({"VIN_NUM_PROCESSES": "2"}, "local_cpu"),
    ({"VIN_DISTRIBUTED": "1"}, "tpu_pod"),
    ({"VIN_DISTRIBUTED": "0", "TPU_WORKER_HOSTNAMES": "a,b"}, "single"),
    ({"TPU_WORKER_HOSTNAMES": "a,b"}, "tpu_pod"),
    ({"TPU_WORKER_HOSTNAMES": "a"}, "single"),
    ({"MEGASCALE_COORDINATOR_ADDRESS": "10.0.0.1"}, "tpu_pod"),
])
def test_runtime_kind(environ, kind):
  assert distributed.runtime_kind(environ) == kind


def test_runtime_kind_rejects_bad_values():
  with pytest.raises(ValueError, match="VIN_NUM_PROCESSES='two'"):
    distributed.runtime_kind({"VIN_NUM_PROCESSES": "two"})
  with pytest.raises(ValueError, match="VIN_DISTRIBUTED='maybe'"):
    distributed.runtime_kind({"VIN_DISTRIBUTED": "maybe"})
