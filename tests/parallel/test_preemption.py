"""SIGTERM to one process of a two-process training run (launch/local.py, 2 x 4 CPU devices): both processes
agree on the step to stop at, save it once together, exit 0, and re-running the same command resumes from it.

A process that saved on its own would sit in Orbax's save barriers while the other one waits for it in the
next step's collectives: the job would hang (or die at a barrier timeout) instead.
"""
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, SUBPROCESS_TIMEOUT_SECONDS

# Long enough that the signal (sent once step SIGNAL_AT is logged) takes effect well before the last step,
# even on a fast machine (JAX's SIGTERM listener polls once a second); short enough for a slow 2-core box.
STEPS, SIGNAL_AT = 20, 2
MESH = ["--config.mesh.data=2", "--config.mesh.chunk=4", "--config.data.bucket_chunks=(4,)",
        "--config.data.bucket_weights=(1.0,)"]


def _env():
  env = {k: v for k, v in os.environ.items() if not k.startswith("VIN_")}
  env.pop("XLA_FLAGS", None)  # conftest's 8 forced host devices would fight VIN_LOCAL_DEVICES
  # Only process 0 writes JAX's persistent cache and on CPU the keys differ per process, so process 0 would
  # load the step while process 1 compiles it, and the first collective times out waiting for process 1.
  env.pop("JAX_COMPILATION_CACHE_DIR", None)
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = str(REPO)
  return env


def _train_command(workdir, data_dir):
  return [sys.executable, str(REPO / "launch" / "local.py"), "--num_processes=2", "--devices_per_process=4", "--",
          sys.executable, "-m", "vin_jax.main", "train", "--config=configs/tiny.py:test", f"--workdir={workdir}",
          f"--config.data.data_dir={data_dir}", *MESH, f"--config.train.steps={STEPS}",
          f"--config.train.checkpoint_every={10 * STEPS}", "--config.train.log_every=1"]


class _Launch:
  """One launch/local.py run with its output in files; `finish` waits, and on a hang kills every child."""

  def __init__(self, tmp_path, name, command):
    self.out_path, self.err_path = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
    with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
      self.process = subprocess.Popen(command, cwd=REPO, env=_env(), stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=err)
    self.deadline = time.monotonic() + SUBPROCESS_TIMEOUT_SECONDS

  def output(self):
    # Bytes, not read_text: universal newlines would turn the progress bar's \r into line breaks.
    return (self.out_path.read_bytes().decode(errors="replace"), self.err_path.read_bytes().decode(errors="replace"))

  def child_pids(self):
    return [int(pid) for pid in re.findall(r"\[launch\] p\d+ pid=(\d+)", self.output()[1])]

  def report(self):
    out, err = self.output()
    return f"stdout (tail):\n{out[-4000:]}\nstderr (tail):\n{err[-4000:]}"

  def kill_all(self):
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)  # the launcher stops its children on SIGTERM
      try:
        self.process.wait(timeout=15)
      except subprocess.TimeoutExpired:
        self.process.kill()
        self.process.wait()
    for pid in self.child_pids():  # each child leads its own process group
      try:
        os.killpg(pid, signal.SIGKILL)
      except (ProcessLookupError, PermissionError):
        pass

  def finish(self):
    try:
      self.process.wait(timeout=max(1.0, self.deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
      pass
    hung = self.process.poll() is None
    self.kill_all()  # normally all gone already
    if hung:
      pytest.fail(f"hung: not done after {SUBPROCESS_TIMEOUT_SECONDS}s\n{self.report()}")
    return self.process.returncode


def _printed(out, process, text):
  return any(line.startswith(f"[p{process}] ") and text in line for line in out.split("\n"))  # not at \r


def _logged_steps(workdir):
  metrics = pathlib.Path(workdir) / "metrics.jsonl"
  if not metrics.exists():
    return []
  return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.strip().endswith("}")]


def _checkpoint_steps(workdir):
  directory = pathlib.Path(workdir) / "checkpoints"
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit()) if directory.is_dir() else []


def _wait_for_step(launch, workdir, step):
  while time.monotonic() < launch.deadline:
    if launch.process.poll() is not None:
      pytest.fail(f"the run ended (exit {launch.process.returncode}) before step {step} could be interrupted; "
                  f"raise STEPS\n{launch.report()}")
    if len(launch.child_pids()) == 2 and max(_logged_steps(workdir), default=0) >= step:
      return
    time.sleep(0.1)
  launch.kill_all()
  pytest.fail(f"timed out waiting for step {step}\n{launch.report()}")


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes(tmp_path):
  data_dir = tmp_path / "data"
  subprocess.run([sys.executable, "-m", "vin_jax.main", "data", "--config=configs/tiny.py:test", "--workdir=unused",
                  f"--config.data.data_dir={data_dir}"], cwd=REPO, env=_env(), check=True, capture_output=True,
                 timeout=SUBPROCESS_TIMEOUT_SECONDS)
  workdir = tmp_path / "run"

  # 1. Preempt process 1 only, mid-training.
  first = _Launch(tmp_path, "first", _train_command(workdir, data_dir))
  try:
    _wait_for_step(first, workdir, SIGNAL_AT)
    os.kill(first.child_pids()[1], signal.SIGTERM)
    returncode = first.finish()
  finally:
    first.kill_all()
  out, _ = first.output()
  assert returncode == 0, first.report()
  # A message may share its line with process 0's progress bar (carriage returns, no newline): match anywhere.
  saved = {int(p): int(n) for p, n in re.findall(
      r"^\[p(\d)\] .*?SIGTERM: saved step (\d+) and stopped; re-run the same command to resume", out, re.M)}
  assert sorted(saved) == [0, 1], first.report()
  stop_step = saved[0]
  assert saved[1] == stop_step and SIGNAL_AT <= stop_step < STEPS, first.report()
  assert _checkpoint_steps(workdir) == [stop_step]  # one checkpoint, written by both processes together
  assert max(_logged_steps(workdir)) == stop_step

  # 2. The same command resumes from that step and finishes.
  second = _Launch(tmp_path, "second", _train_command(workdir, data_dir))
  try:
    returncode = second.finish()
  finally:
    second.kill_all()
  out, _ = second.output()
  assert returncode == 0, second.report()
  for process in (0, 1):
    assert _printed(out, process, f"resumed from step {stop_step} in {workdir}"), second.report()
    assert _printed(out, process, f"trained to step {STEPS} in {workdir}"), second.report()
  assert sorted(_logged_steps(workdir)) == list(range(1, STEPS + 1))
  assert _checkpoint_steps(workdir)[-1] == STEPS
