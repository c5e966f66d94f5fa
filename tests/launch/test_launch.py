"""The launch/ scripts: dry-run command sequences, setting errors, the remote job scripts, and local.py for real.

No test here talks to Google Cloud: the TPU scripts run with --dry-run, or against a fake `gcloud` on PATH.
"""
import os
import pathlib
import re
import shlex
import signal
import stat
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
SETTINGS = ["--project=my-proj", "--zone=us-central2-b", "--tpu_name=vin-pod"]
LOCATION = ["--project=my-proj", "--zone=us-central2-b"]


def clean_env(**extra):
  env = {k: v for k, v in os.environ.items() if not k.startswith("VIN_")}
  env.update(extra)
  return env


def run_script(name, *args, env=None, timeout=300):
  return subprocess.run([sys.executable, str(LAUNCH / name), *args], capture_output=True, text=True,
                        env=clean_env() if env is None else env, timeout=timeout, check=False)


def dry_run(name, *args, env=None):
  result = run_script(name, "--dry-run", *args, env=env)
  assert result.returncode == 0, result.stderr
  return [shlex.split(line) for line in result.stdout.splitlines() if line and not line.startswith("#")]


def remote_command(argv):
  """The bash string an `ssh ... --command CMD` line runs on the workers."""
  return argv[argv.index("--command") + 1]


def index_of(commands, *words):
  """Index of the first command whose argv starts with `words`."""
  for i, argv in enumerate(commands):
    if argv[:len(words)] == list(words):
      return i
  raise AssertionError(f"no {' '.join(words)} in {commands}")


def assert_same_tpu(commands):
  """Every gcloud command names the same project and zone, and TPU commands the same TPU."""
  for argv in commands:
    if argv[0] == "gcloud":
      assert all(flag in argv for flag in LOCATION), argv
      assert "vin-pod" in argv or any(a.startswith("vin-pod:") for a in argv), argv


# --- tpu_create -------------------------------------------------------------------------------------------

def test_create_dry_run_creates_then_polls():
  commands = dry_run("tpu_create.py", *SETTINGS, "--accelerator_type=v5litepod-32", "--spot")
  create = index_of(commands, "gcloud", "compute", "tpus", "queued-resources", "create")
  describe = index_of(commands, "gcloud", "compute", "tpus", "queued-resources", "describe")
  assert create < describe
  assert commands[create][5:] == ["vin-pod", "--node-id=vin-pod", *LOCATION, "--accelerator-type=v5litepod-32",
                                  "--runtime-version=v2-alpha-tpuv5-lite", "--spot"]
  assert "--format=value(state.state)" in commands[describe]
  assert_same_tpu(commands)


def test_create_best_effort_uses_alpha_and_explicit_runtime():
  commands = dry_run("tpu_create.py", *SETTINGS, "--accelerator_type=v4-64", "--best-effort",
                     "--queued_resource_id=qr-1", "--runtime_version=tpu-ubuntu2204-base")
  create = commands[index_of(commands, "gcloud", "alpha", "compute", "tpus", "queued-resources", "create")]
  assert create[6] == "qr-1" and "--best-effort" in create and "--runtime-version=tpu-ubuntu2204-base" in create
  assert commands[index_of(commands, "gcloud", "compute", "tpus", "queued-resources", "describe")][5] == "qr-1"


def test_settings_come_from_env():
  env = clean_env(VIN_PROJECT="my-proj", VIN_ZONE="us-central2-b", VIN_TPU_NAME="vin-pod",
                  VIN_ACCELERATOR_TYPE="v6e-64")
  commands = dry_run("tpu_create.py", "--no_wait", env=env)
  assert len(commands) == 1 and "--runtime-version=v2-alpha-tpuv6e" in commands[0]
  assert_same_tpu(commands)


def fake_gcloud(tmp_path, body):
  """An environment whose `gcloud` is a bash script that logs its args to tmp_path/calls.txt, then runs body."""
  calls = tmp_path / "calls.txt"
  fake = tmp_path / "bin" / "gcloud"
  fake.parent.mkdir(parents=True)
  fake.write_text(f'#!/bin/bash\necho "$*" >> {calls}\nCALLS={calls}\n{body}\n')
  fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
  return clean_env(PATH=f"{fake.parent}{os.pathsep}{os.environ['PATH']}"), calls


def test_create_polls_until_active_with_fake_gcloud(tmp_path):
  """The real (non-dry) path: the fake reports a failure, WAITING, PROVISIONING, then ACTIVE."""
  env, calls = fake_gcloud(tmp_path, """
if [[ "$*" == *describe* ]]; then
  case $(grep -c describe $CALLS) in
    1) echo "transient" >&2; exit 1;; 2) echo WAITING_FOR_RESOURCES;; 3) echo PROVISIONING;; *) echo ACTIVE;;
  esac
fi""")
  result = run_script("tpu_create.py", *SETTINGS, "--accelerator_type=v4-64", "--poll_seconds=0", env=env)
  assert result.returncode == 0, result.stderr
  lines = calls.read_text().splitlines()
  assert [line.split()[3] for line in lines] == ["create"] + ["describe"] * 4
  assert "describe failed (1/5): transient" in result.stderr
  assert "queued resource vin-pod: ACTIVE" in result.stdout


def test_create_reports_failed_state_and_gcloud_errors(tmp_path):
  env, _ = fake_gcloud(tmp_path, '[[ "$*" == *describe* ]] && echo FAILED; true')
  result = run_script("tpu_create.py", *SETTINGS, "--accelerator_type=v4-64", "--poll_seconds=0", env=env)
  assert result.returncode == 1 and "is FAILED" in result.stderr
  env, _ = fake_gcloud(tmp_path / "x", "exit 7")
  result = run_script("tpu_delete.py", *SETTINGS, env=env)
  assert result.returncode == 7 and "command failed with exit code 7" in result.stderr


# --- tpu_setup --------------------------------------------------------------------------------------------

def test_setup_dry_run_copies_then_installs():
  commands = dry_run("tpu_setup.py", *SETTINGS)
  archive = index_of(commands, "git", "-C", str(REPO), "archive")
  scp = index_of(commands, "gcloud", "compute", "tpus", "tpu-vm", "scp")
  ssh = index_of(commands, "gcloud", "compute", "tpus", "tpu-vm", "ssh")
  assert archive < scp < ssh
  tarball = commands[archive][commands[archive].index("--format=tar.gz") + 1].removeprefix("--output=")
  assert commands[archive][-1] == "HEAD"
  assert commands[scp][5:8] == [tarball, "vin-pod:vin_jax.tar.gz", *LOCATION[:1]]
  assert "--worker=all" in commands[scp] and "--worker=all" in commands[ssh]
  install = remote_command(commands[ssh])
  pin = re.search(r'"jax==([^"]+)"', (REPO / "setup.py").read_text()).group(1)
  assert f"'jax[tpu]=={pin}'" in install and "pip install" in install and "-e ./vin_jax" in install
  assert install.index("tar -xzf vin_jax.tar.gz") < install.index("uv pip install")
  # uv at a pinned version from PyPI, not an unpinned `curl | sh` installer
  assert "curl" not in install and "| sh" not in install
  uv_pin = re.search(r'UV_VERSION = "([^"]+)"', (REPO / "launch" / "tpu_setup.py").read_text()).group(1)
  assert f"pip install --user --quiet 'uv=={uv_pin}'" in install
  assert install.index("uv==") < install.index("uv venv")
  assert_same_tpu(commands)


# --- tpu_run ----------------------------------------------------------------------------------------------

RUN = [*SETTINGS, "--bucket=gs://my-bucket/", "--run_name=r1"]


def test_run_dry_run_train_on_all_workers_then_follow():
  commands = dry_run("tpu_run.py", *RUN, "--follow", "--", "train", "--config=configs/paper.py",
                     "--config.train.steps=10")
  assert len(commands) == 2 and all(argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"] for argv in commands)
  launch, follow = commands
  assert "--worker=all" in launch and "--worker=0" in follow
  script = remote_command(launch)
  assert "export TFDS_DATA_DIR=gs://my-bucket/tfds VIN_DISTRIBUTED=1" in script
  assert ("setsid nohup ../vin_venv/bin/python -m vin_jax.main train --config=configs/paper.py "
          "--config.train.steps=10 --workdir=gs://my-bucket/runs/r1 >> ../vin_logs/r1.train.log") in script
  assert script.index("export TFDS_DATA_DIR") < script.index("nohup")
  assert "tail" in remote_command(follow) and "vin_logs/latest.log" in remote_command(follow)
  assert_same_tpu(commands)


def test_run_data_goes_to_worker_0_on_cpu():
  (launch,) = dry_run("tpu_run.py", *RUN, "--env=FOO=a b", "--", "data", "--config=configs/tiny.py")
  assert "--worker=0" in launch
  assert "export TFDS_DATA_DIR=gs://my-bucket/tfds JAX_PLATFORMS=cpu VIN_DISTRIBUTED=0 FOO='a b'" in (
      remote_command(launch))


def test_run_logs_and_stop_modes():
  (logs,) = dry_run("tpu_run.py", *SETTINGS, "--logs", "--log_worker=all")
  assert "--worker=all" in logs and "tail -n 100 -F vin_logs/latest.log" in remote_command(logs)
  (stop,) = dry_run("tpu_run.py", *SETTINGS, "--stop")
  assert "--worker=all" in stop and "kill -TERM" in remote_command(stop)


@pytest.mark.parametrize("args, message", [
    ([*RUN, "--", "train", "--workdir=/tmp/x"], "this script's --workdir"),
    ([*RUN, "--workdir=/tmp/x", "--", "train"], "must be on GCS"),
    ([*RUN, "--", "fly"], "one of train, sample"),
    ([*RUN], "one of train, sample"),
    ([*SETTINGS, "--run_name=r1", "--", "train"], "--bucket (or $VIN_BUCKET)"),
    ([*SETTINGS, "--bucket=b", "--", "train"], "--run_name (or $VIN_RUN_NAME)"),
    ([*RUN, "--env=1X=2", "--", "train"], "must be KEY=VALUE"),
    ([*SETTINGS, "--logs", "--", "train"], "take no command"),
])
def test_run_rejects_bad_invocations(args, message):
  result = run_script("tpu_run.py", "--dry-run", *args)
  assert result.returncode != 0 and message in result.stderr, result.stderr


def _fake_worker_home(tmp_path):
  """A worker's home after tpu_setup: ~/vin_jax and a fake venv python that reports and then sleeps."""
  home = tmp_path / "home"
  (home / "vin_jax").mkdir(parents=True)
  python = home / "vin_venv" / "bin" / "python"
  python.parent.mkdir(parents=True)
  python.write_text('#!/bin/bash\necho "args: $*"\necho "TFDS_DATA_DIR=$TFDS_DATA_DIR cwd=$PWD"\nexec sleep 60\n')
  python.chmod(python.stat().st_mode | stat.S_IEXEC)
  return home


def _on_worker(home, script):
  return subprocess.run(["bash", "-c", script], cwd=home, env=clean_env(HOME=str(home)), capture_output=True,
                        text=True, timeout=300, check=False)


def test_run_remote_scripts_start_refuse_and_stop_a_job(tmp_path):
  """Runs the exact bash that tpu_run sends to a worker, in a fake worker home."""
  home = _fake_worker_home(tmp_path)
  (launch,) = dry_run("tpu_run.py", *RUN, "--", "train", "--config=configs/paper.py")
  (stop,) = dry_run("tpu_run.py", *SETTINGS, "--stop")
  started = _on_worker(home, remote_command(launch))
  pid = int((home / "vin_logs" / "job.pid").read_text())
  try:
    assert started.returncode == 0 and "started train of r1" in started.stdout, started.stderr
    log = home / "vin_logs" / "r1.train.log"
    deadline = time.monotonic() + 10
    while "cwd=" not in log.read_text() and time.monotonic() < deadline:
      time.sleep(0.05)
    text = log.read_text()
    assert "args: -m vin_jax.main train --config=configs/paper.py --workdir=gs://my-bucket/runs/r1" in text
    assert f"TFDS_DATA_DIR=gs://my-bucket/tfds cwd={home / 'vin_jax'}" in text
    assert os.readlink(home / "vin_logs" / "latest.log") == "r1.train.log"
    again = _on_worker(home, remote_command(launch))
    assert again.returncode == 1 and "a job is still running" in again.stderr
    stopped = _on_worker(home, remote_command(stop))
    assert stopped.returncode == 0 and "stopped pid" in stopped.stdout, stopped.stderr
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
      time.sleep(0.05)
    assert not _alive(pid)
    assert "no job running" in _on_worker(home, remote_command(stop)).stdout
  finally:
    if _alive(pid):
      os.killpg(pid, signal.SIGKILL)


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A killed child of the worker shell is reparented and may linger as a zombie until reaped.
  try:
    with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except FileNotFoundError:
    return False


def test_remote_scripts_are_valid_bash():
  commands = (dry_run("tpu_setup.py", *SETTINGS) + dry_run("tpu_run.py", *RUN, "--follow", "--", "sample")
              + dry_run("tpu_run.py", *SETTINGS, "--stop"))
  for argv in commands:
    if "--command" in argv:
      check = subprocess.run(["bash", "-n", "-c", remote_command(argv)], capture_output=True, text=True,
                             check=False)
      assert check.returncode == 0, (check.stderr, remote_command(argv))


# --- tpu_delete -------------------------------------------------------------------------------------------

def test_delete_dry_run():
  (delete,) = dry_run("tpu_delete.py", *SETTINGS)
  assert delete == ["gcloud", "compute", "tpus", "queued-resources", "delete", "vin-pod", *LOCATION, "--force",
                    "--quiet"]
  (node,) = dry_run("tpu_delete.py", *SETTINGS, "--node_only")
  assert node == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "vin-pod", *LOCATION, "--quiet"]


@pytest.mark.parametrize("script, args, missing", [
    ("tpu_create.py", ["--zone=z"], ["--project (or $VIN_PROJECT)", "--tpu_name", "--accelerator_type"]),
    ("tpu_create.py", [*SETTINGS, "--accelerator_type=v9x-8"], ["--runtime_version"]),
    ("tpu_setup.py", ["--project=p", "--tpu_name=t"], ["--zone (or $VIN_ZONE)"]),
    ("tpu_run.py", ["--project=p", "--zone=z", "--logs"], ["--tpu_name (or $VIN_TPU_NAME)"]),
    ("tpu_delete.py", [], ["--project", "--zone", "--tpu_name"]),
])
def test_missing_settings_name_the_flag(script, args, missing):
  result = run_script(script, "--dry-run", *args)
  assert result.returncode != 0 and result.stdout == ""
  for flag in missing:
    assert flag in result.stderr, result.stderr


def test_bad_bucket_and_accelerator():
  assert "--bucket='gs://'" in run_script("tpu_run.py", "--dry-run", *SETTINGS, "--bucket=gs://",
                                           "--run_name=r", "--", "train").stderr
  assert "--accelerator_type='tpu64'" in run_script("tpu_create.py", "--dry-run", *SETTINGS,
                                                    "--accelerator_type=tpu64").stderr


# --- local.py ---------------------------------------------------------------------------------------------

def test_local_dry_run():
  result = run_script("local.py", "--num_processes=2", "--devices_per_process=4", "--port=1234", "--dry-run",
                      "--", "python", "-m", "vin_jax.main", "train", "--config=configs/tiny.py")
  assert result.returncode == 0, result.stderr
  commands = [shlex.split(line) for line in result.stdout.splitlines() if not line.startswith("#")]
  assert len(commands) == 2
  for pid, argv in enumerate(commands):
    assert argv[0] == "env" and argv[-5:] == ["python", "-m", "vin_jax.main", "train", "--config=configs/tiny.py"]
    assert {"VIN_NUM_PROCESSES=2", f"VIN_PROCESS_ID={pid}", "VIN_LOCAL_DEVICES=4",
            "VIN_COORDINATOR=127.0.0.1:1234"} <= set(argv)


def test_local_requires_a_command():
  assert run_script("local.py", "--num_processes=2").returncode != 0
  assert "no command" in run_script("local.py", "--num_processes=2", "--").stderr
  missing = run_script("local.py", "--", "/nonexistent/tool")
  assert missing.returncode == 127 and "cannot start '/nonexistent/tool'" in missing.stderr


def test_local_env_names_match_distributed():
  sys.path.insert(0, str(LAUNCH))
  sys.path.insert(0, str(REPO))
  import local  # pylint: disable=import-outside-toplevel
  from vin_jax.parallel import distributed  # pylint: disable=import-outside-toplevel
  for name in ("ENV_NUM_PROCESSES", "ENV_PROCESS_ID", "ENV_LOCAL_DEVICES", "ENV_COORDINATOR"):
    assert getattr(local, name) == getattr(distributed, name)


def test_local_runs_children_with_prefixes():
  child = "import os; print('hello', os.environ['VIN_PROCESS_ID'], os.environ['VIN_NUM_PROCESSES'])"
  result = run_script("local.py", "--num_processes=3", "--devices_per_process=1", "--",
                      sys.executable, "-c", child)
  assert result.returncode == 0, result.stderr
  assert sorted(result.stdout.splitlines()) == ["[p0] hello 0 3", "[p1] hello 1 3", "[p2] hello 2 3"]


def test_local_failing_child_stops_the_others():
  child = ("import os, sys, time\n"
           "if os.environ['VIN_PROCESS_ID'] == '1': print('failing', flush=True); sys.exit(3)\n"
           "time.sleep(60)")
  start = time.monotonic()
  result = run_script("local.py", "--num_processes=2", "--", sys.executable, "-c", child)
  assert result.returncode == 3, (result.stdout, result.stderr)
  assert "[p1] failing" in result.stdout and "p1 exited with 3" in result.stderr
  assert time.monotonic() - start < 45  # p0 (sleeping 60 s) was stopped, not waited for
  for pid in re.findall(r"pid=(\d+)", result.stderr):
    assert not _alive(int(pid))


def test_local_ctrl_c_stops_all_children():
  launcher = subprocess.Popen(
      [sys.executable, str(LAUNCH / "local.py"), "--num_processes=2", "--", sys.executable, "-c",
       "import time; time.sleep(60)"], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    pids = [int(re.search(r"pid=(\d+)", launcher.stderr.readline()).group(1)) for _ in range(2)]
    launcher.send_signal(signal.SIGINT)
    assert launcher.wait(timeout=90) == 130  # a liveness bound: generous for a loaded CI machine
    assert not any(_alive(pid) for pid in pids)
  finally:
    if launcher.poll() is None:
      launcher.kill()
    launcher.communicate()
