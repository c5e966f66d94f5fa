"""Two local processes x 4 CPU devices (jax.distributed over loopback) run the sharded train step and
match the single-process result."""
import pathlib
import pickle
import textwrap

import jax
import numpy as np

from tests.parallel import multihost_case
from tests.parallel.test_distributed import launch_two

CHILD = textwrap.dedent("""
    import pickle, sys
    from vin_jax.parallel import distributed
    process_index, process_count = distributed.initialize_from_env()
    from vin_jax.parallel import mesh as mesh_lib
    from tests.parallel import multihost_case as case

    config = case.config(data=2, chunk=4)
    mesh = mesh_lib.make_mesh(config)
    rows = case.BATCH // process_count
    losses, params = case.run(config, mesh, slice(process_index * rows, (process_index + 1) * rows))
    with open(f"result_{process_index}.pkl", "wb") as f:
      pickle.dump((losses, params), f)
    print("RESULT", process_index, losses, flush=True)
""")


def test_two_processes_match_one(tmp_path):
  returncode, stdout, stderr = launch_two(tmp_path, CHILD)
  assert returncode == 0, f"stdout:\n{stdout[-3000:]}\nstderr:\n{stderr[-3000:]}"
  ref_losses, ref_params = multihost_case.run(multihost_case.config())
  for process in (0, 1):
    with open(pathlib.Path(tmp_path) / f"result_{process}.pkl", "rb") as f:
      losses, params = pickle.load(f)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
