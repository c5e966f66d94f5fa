"""The CLI fails fast, with a short message and no traceback, on bad commands, flags and config values."""
import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import SUBPROCESS_TIMEOUT_SECONDS

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = ("data", "train", "sample", "evaluate", "ablate")


def run_cli(*args, timeout=SUBPROCESS_TIMEOUT_SECONDS):
  env = {k: v for k, v in os.environ.items() if not k.startswith(("VIN_", "XLA_", "TPU_"))}
  env["JAX_PLATFORMS"] = "cpu"
  return subprocess.run([sys.executable, "-m", "vin_jax.main", *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def assert_clean_failure(result, *expected):
  assert result.returncode != 0, result
  assert "Traceback" not in result.stderr, result.stderr
  for text in expected:
    assert text in result.stderr, result.stderr
  # Short: the message, at most the usage text; not a wall of log.
  assert len(result.stderr.splitlines()) < 30, result.stderr


@pytest.fixture
def workdir(tmp_path):
  return tmp_path / "run"


def test_misspelled_override_fails_with_one_line(workdir):
  result = run_cli("train", "--config=configs/tiny.py", f"--workdir={workdir}", "--config.train.bogus=1")
  assert_clean_failure(result, "bogus", "--config.train.bogus=1")
  assert not workdir.exists()  # nothing ran


def test_invalid_value_names_the_field(workdir):
  result = run_cli("train", "--config=configs/tiny.py", f"--workdir={workdir}", "--config.chunking.context_frames=99")
  assert_clean_failure(result, "chunking.context_frames=99")
  assert not workdir.exists()


def test_missing_config_file_fails_without_traceback(workdir):
  result = run_cli("train", "--config=configs/no_such_config.py", f"--workdir={workdir}")
  assert_clean_failure(result, "no_such_config.py")


def test_help_lists_the_commands():
  result = run_cli("--help")
  assert "Traceback" not in result.stdout + result.stderr
  for command in COMMANDS:
    assert f"\n  {command} " in result.stdout, result.stdout
  assert "--config" in result.stdout and "--workdir" in result.stdout


def test_unknown_command_fails(workdir):
  result = run_cli("frobnicate", "--config=configs/tiny.py", f"--workdir={workdir}")
  assert_clean_failure(result, "frobnicate", *COMMANDS)
