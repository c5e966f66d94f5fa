"""Copy this repo's git HEAD to every worker of a TPU VM slice and install it there.

  python launch/tpu_setup.py --project=P --zone=Z --tpu_name=vin-pod [--ref=HEAD] [--dry-run]

Steps: `git archive` of --ref into a local tarball; `tpu-vm scp` to all workers; on all workers, unpack into
~/vin_jax, make a Python 3.11 venv ~/vin_venv with uv (pinned, from PyPI with pip; TPU VM images ship an older Python;
setup.py needs 3.11)
and `uv pip install -e ~/vin_jax "jax[tpu]==<the jax pin of setup.py>"`. Uncommitted changes are not copied:
commit first. Re-running replaces the code and keeps the venv, so it is also how to update the code.
"""
import os
import re
import shlex
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = ("project", "zone", "tpu_name")
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# uv comes from PyPI at this exact version (no `curl | sh` of an unpinned installer on every worker).
UV_VERSION = "0.13.9"


def jax_pin(setup_py=os.path.join(REPO_ROOT, "setup.py")):
  """The `jax==X` version pinned in setup.py, so the TPU build matches what was tested."""
  with open(setup_py, encoding="utf-8") as f:
    match = re.search(r"""["']jax==([^"']+)["']""", f.read())
  if not match:
    raise ValueError(f"no 'jax==VERSION' pin in {setup_py}; pass --jax_version")
  return match.group(1)


def install_script(jax_version, python_version):
  jax_tpu = shlex.quote(f"jax[tpu]=={jax_version}")
  return common.bash_script(
      'export PATH="$HOME/.local/bin:$PATH"',
      f'[ "$(uv --version 2>/dev/null | cut -d" " -f2)" = "{UV_VERSION}" ] || '
      f"python3 -m pip install --user --quiet 'uv=={UV_VERSION}'",
      f"rm -rf {common.REMOTE_CODE_DIR} && mkdir -p {common.REMOTE_CODE_DIR}",
      f"tar -xzf {common.REMOTE_TARBALL} -C {common.REMOTE_CODE_DIR}",
      f"[ -x {common.REMOTE_PYTHON} ] || uv venv --python {shlex.quote(python_version)} {common.REMOTE_VENV}",
      f"uv pip install --python {common.REMOTE_PYTHON} -e ./{common.REMOTE_CODE_DIR} {jax_tpu}",
      f'{common.REMOTE_PYTHON} -c "import jax, vin_jax; print(jax.__version__)"',
  )


def warn_if_dirty(ref):
  try:
    status = subprocess.run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True, check=True).stdout
  except (OSError, subprocess.CalledProcessError):
    return
  if status.strip():
    print(f"warning: uncommitted changes are not copied; the workers get {ref} only", file=sys.stderr)


def main(argv=None):
  parser = common.new_parser(__doc__.split("\n")[0])
  common.add_settings(parser, *SETTINGS)
  parser.add_argument("--ref", default="HEAD", help="git commit-ish to copy")
  parser.add_argument("--jax_version", default=None, help="default: the jax pin in setup.py")
  parser.add_argument("--python_version", default="3.11")
  parser.add_argument("--tarball", default=os.path.join(tempfile.gettempdir(), "vin_jax.tar.gz"),
                      help="local path of the archive to copy")
  args = parser.parse_args(argv)
  common.resolve_settings(parser, args, required=SETTINGS)
  jax_version = args.jax_version or jax_pin()

  common.print_settings(args, SETTINGS)
  warn_if_dirty(args.ref)
  common.run_or_print(["git", "-C", REPO_ROOT, "archive", "--format=tar.gz", f"--output={args.tarball}",
                       args.ref], args.dry_run)
  common.run_or_print(common.tpu_scp(args, args.tarball, common.REMOTE_TARBALL), args.dry_run)
  common.run_or_print(common.tpu_ssh(args, install_script(jax_version, args.python_version)), args.dry_run)
  if not args.dry_run:
    print(f"# next: python launch/tpu_run.py --tpu_name={args.tpu_name} --run_name=NAME -- train "
          "--config=configs/paper.py", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
