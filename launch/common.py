"""Shared settings and gcloud command builders for the Cloud TPU VM scripts in launch/.

Every setting comes from a flag or, when the flag is absent, an environment variable (`--zone` or
`$VIN_ZONE`), so a shell can `export` them once for a whole session. `--dry-run` prints the exact commands,
one per line and shell-quoted, instead of running them; the printed lines can be pasted into a shell.

Only the standard library is used: these scripts run from a laptop that need not have JAX installed.
"""
import argparse
import os
import re
import shlex
import subprocess
import sys

# Setting -> environment variable read when the flag is not given.
ENV_VARS = {
    "project": "VIN_PROJECT",
    "zone": "VIN_ZONE",
    "tpu_name": "VIN_TPU_NAME",
    "accelerator_type": "VIN_ACCELERATOR_TYPE",
    "runtime_version": "VIN_RUNTIME_VERSION",
    "queued_resource_id": "VIN_QUEUED_RESOURCE_ID",
    "bucket": "VIN_BUCKET",
}

# Where things live on every TPU VM worker, relative to the ssh user's home directory (ssh starts there).
REMOTE_TARBALL = "vin_jax.tar.gz"
REMOTE_CODE_DIR = "vin_jax"
REMOTE_VENV = "vin_venv"
REMOTE_LOG_DIR = "vin_logs"
REMOTE_PYTHON = f"{REMOTE_VENV}/bin/python"

# The software version Google recommends for JAX on each TPU generation.
_RUNTIME_BY_GENERATION = (
    ("v6e", "v2-alpha-tpuv6e"),
    ("v5p", "v2-alpha-tpuv5"),
    ("v5litepod", "v2-alpha-tpuv5-lite"),
    ("v5e", "v2-alpha-tpuv5-lite"),
    ("v4", "tpu-ubuntu2204-base"),
    ("v3", "tpu-ubuntu2204-base"),
    ("v2", "tpu-ubuntu2204-base"),
)
_ACCELERATOR_RE = re.compile(r"^v\d[a-z0-9]*-\d+$")


def new_parser(description):
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      help="print the gcloud commands instead of running them")
  return parser


def add_settings(parser, *names):
  """Adds `--NAME` flags for the given settings (keys of ENV_VARS); values default to their env vars."""
  helps = {
      "project": "Google Cloud project id",
      "zone": "zone of the TPU, e.g. us-central2-b",
      "tpu_name": "TPU node name (the queued resource's --node-id)",
      "accelerator_type": "e.g. v4-64, v5litepod-32, v5p-128, v6e-64",
      "runtime_version": "TPU software version; default: the one recommended for the accelerator generation",
      "queued_resource_id": "queued resource id; default: the TPU name",
      "bucket": "GCS bucket for workdirs and TFDS data, e.g. my-bucket or gs://my-bucket",
  }
  for name in names:
    parser.add_argument(f"--{name}", default=None, help=f"{helps[name]} (env ${ENV_VARS[name]})")


def resolve_settings(parser, args, required, environ=None):
  """Fills unset settings from the environment and derived defaults; exits with a clear error if any is missing.

  `required` lists the settings (keys of ENV_VARS) this script cannot run without.
  """
  environ = os.environ if environ is None else environ
  for name, env_var in ENV_VARS.items():
    if hasattr(args, name) and not getattr(args, name):
      setattr(args, name, environ.get(env_var) or None)
  if getattr(args, "tpu_name", None) and hasattr(args, "queued_resource_id") and not args.queued_resource_id:
    args.queued_resource_id = args.tpu_name
  if getattr(args, "accelerator_type", None):
    if not _ACCELERATOR_RE.match(args.accelerator_type):
      parser.error(f"--accelerator_type={args.accelerator_type!r} is not of the form v4-64 / v5litepod-32")
    if hasattr(args, "runtime_version") and not args.runtime_version:
      args.runtime_version = default_runtime_version(args.accelerator_type)
  # Settings with a derived default are not reported on top of what they derive from.
  derived = ("queued_resource_id", "runtime_version")
  missing = [name for name in required if not getattr(args, name, None) and name not in derived]
  if missing:
    parser.error("missing settings: " + ", ".join(f"--{n} (or ${ENV_VARS[n]})" for n in missing))
  if "runtime_version" in required and not args.runtime_version:
    parser.error(f"--runtime_version is needed: no default for --accelerator_type={args.accelerator_type}")
  if getattr(args, "bucket", None):
    args.bucket = normalize_bucket(parser, args.bucket)
  return args


def default_runtime_version(accelerator_type):
  generation = accelerator_type.split("-")[0]
  for prefix, version in _RUNTIME_BY_GENERATION:
    if generation == prefix:
      return version
  return None  # unknown generation: resolve_settings reports --runtime_version as missing if required


def normalize_bucket(parser, bucket):
  """'my-bucket', 'gs://my-bucket' or 'gs://my-bucket/' -> 'gs://my-bucket'."""
  name = bucket[len("gs://"):] if bucket.startswith("gs://") else bucket
  name = name.rstrip("/")
  if not name or "://" in name:
    parser.error(f"--bucket={bucket!r} must be a GCS bucket name, e.g. my-bucket or gs://my-bucket")
  return f"gs://{name}"


def location_flags(args):
  return [f"--project={args.project}", f"--zone={args.zone}"]


def tpu_ssh(args, remote_command, worker="all"):
  """`gcloud ... tpu-vm ssh` running one bash command string on `worker` ("all", "0", "1", ...)."""
  return ["gcloud", "compute", "tpus", "tpu-vm", "ssh", args.tpu_name, *location_flags(args),
          f"--worker={worker}", "--command", remote_command]


def tpu_scp(args, local_path, remote_path, worker="all", recurse=False):
  return ["gcloud", "compute", "tpus", "tpu-vm", "scp", *(["--recurse"] if recurse else []),
          local_path, f"{args.tpu_name}:{remote_path}", *location_flags(args), f"--worker={worker}"]


def bash_script(*lines):
  """Joins remote bash lines into one line that stops at the first failure (TPU VM login shells are bash)."""
  script = "set -euo pipefail"
  for line in lines:
    script += (" " if script.endswith("&") else "; ") + line  # `cmd &; next` would be a syntax error
  return script


def print_settings(args, names):
  print("# " + " ".join(f"{n}={getattr(args, n)}" for n in names if getattr(args, n, None)), flush=True)


def run_or_print(cmd, dry_run, check=True, capture=False):
  """Runs `cmd` (an argv list), or only prints it (shell-quoted) when `dry_run`.

  Returns the CompletedProcess, or None in a dry run. With `check`, a failing command ends this script
  with that command's exit code.
  """
  line = shlex.join(cmd)
  if dry_run:
    print(line, flush=True)
    return None
  print(f"+ {line}", file=sys.stderr, flush=True)
  result = subprocess.run(cmd, check=False, text=True, capture_output=capture)
  if check and result.returncode != 0:
    if capture:
      sys.stderr.write(result.stderr or "")
    print(f"error: command failed with exit code {result.returncode}: {line}", file=sys.stderr)
    sys.exit(result.returncode)
  return result
