"""Training restarts: a SIGKILLed run resumes to the same losses and parameters as an uninterrupted one;
a non-finite loss stops the run and leaves the last good checkpoint intact; SIGTERM saves and exits."""
import json
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, SUBPROCESS_TIMEOUT_SECONDS, one_device_env

STEPS, CHECKPOINT_EVERY = 300, 30   # long enough after the first checkpoint to be killed mid-run
COMMON = ["--config.data.bucket_chunks=(2,)", "--config.data.bucket_weights=(1.0,)", "--config.train.log_every=1",
          f"--config.train.steps={STEPS}", f"--config.train.checkpoint_every={CHECKPOINT_EVERY}"]


def _command(workdir, data_dir, *extra):
  return [sys.executable, "-m", "vin_jax.main", "train", "--config=configs/tiny.py:test", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *COMMON, *extra]


def _losses(workdir):
  records = [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return {r["step"]: r["loss"] for r in records}


def _final_params(workdir):
  from vin_jax import config as config_lib, sampling
  config = config_lib.load_config_file(REPO / "configs" / "tiny.py", "test")
  _, params, step = sampling.load_params(config, workdir, use_ema=False)
  import jax
  return step, jax.tree.map(np.asarray, params)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("data")
  subprocess.run([sys.executable, "-m", "vin_jax.main", "data", "--config=configs/tiny.py:test",
                  "--workdir=unused", f"--config.data.data_dir={path}"], cwd=REPO, env=one_device_env(), check=True,
                 capture_output=True)
  return path


def _kill_after_checkpoint(process, workdir, min_step):
  """SIGKILL once checkpoint CHECKPOINT_EVERY is complete and the run has logged `min_step`."""
  deadline = time.time() + 300
  metrics = pathlib.Path(workdir) / "metrics.jsonl"
  checkpoint = pathlib.Path(workdir) / "checkpoints" / str(CHECKPOINT_EVERY)
  while time.time() < deadline:
    if process.poll() is not None:
      pytest.fail("the run finished before it could be killed; lower its speed or raise STEPS")
    if checkpoint.is_dir() and metrics.exists():
      logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip()]
      if logged and max(logged) >= min_step:
        process.send_signal(signal.SIGKILL)
        process.wait()
        return max(logged)
    time.sleep(0.02)
  process.kill()
  pytest.fail("timed out waiting for the checkpoint")


def test_resume_after_sigkill_is_exact(tmp_path, data_dir):
  straight, resumed = tmp_path / "straight", tmp_path / "resumed"
  subprocess.run(_command(straight, data_dir), cwd=REPO, env=one_device_env(), check=True, capture_output=True)

  process = subprocess.Popen(_command(resumed, data_dir), cwd=REPO, env=one_device_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  killed_at = _kill_after_checkpoint(process, resumed, CHECKPOINT_EVERY + 2)
  assert CHECKPOINT_EVERY < killed_at < STEPS
  rerun = subprocess.run(_command(resumed, data_dir), cwd=REPO, env=one_device_env(), check=True, capture_output=True,
                         text=True)
  resumed_from = int(re.search(r"resumed from step (\d+)", rerun.stdout).group(1))
  assert resumed_from % CHECKPOINT_EVERY == 0 and CHECKPOINT_EVERY <= resumed_from <= killed_at

  expected, got = _losses(straight), _losses(resumed)
  assert sorted(got) == list(range(1, STEPS + 1)) == sorted(expected)
  assert got == expected  # bit-identical at every step
  step_a, params_a = _final_params(straight)
  step_b, params_b = _final_params(resumed)
  assert step_a == step_b == STEPS
  for a, b in zip(*(jax_leaves(p) for p in (params_a, params_b))):
    np.testing.assert_array_equal(a, b)


def jax_leaves(tree):
  import jax
  return jax.tree.leaves(tree)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, data_dir):
  workdir = tmp_path / "nan"
  run = subprocess.run(_command(workdir, data_dir, "--config.train.learning_rate=1e30",
                                "--config.train.warmup_steps=0", "--config.train.checkpoint_every=1"),
                       cwd=REPO, env=one_device_env(), capture_output=True, text=True)
  assert run.returncode != 0
  assert "stopping" in run.stderr and "last good checkpoint" in run.stderr
  step, params = _final_params(workdir)
  assert 1 <= step < STEPS
  assert all(np.isfinite(leaf).all() for leaf in jax_leaves(params))


def test_sigterm_saves_and_exits_cleanly(tmp_path, data_dir):
  workdir = tmp_path / "term"
  process = subprocess.Popen(_command(workdir, data_dir, "--config.train.steps=100000",
                                      "--config.train.checkpoint_every=100000"),
                             cwd=REPO, env=one_device_env(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while not (metrics.exists() and metrics.read_text().count("\n") >= 3) and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  out, _ = process.communicate(timeout=SUBPROCESS_TIMEOUT_SECONDS)
  assert process.returncode == 0
  assert "SIGTERM" in out
  step, _ = _final_params(workdir)
  assert step >= 3
