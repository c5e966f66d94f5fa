"""Run N processes of one command on this machine, as one multi-process JAX job over loopback.

  python launch/local.py --num_processes=2 --devices_per_process=4 -- \
      python -m vin_jax.main train --config=configs/tiny.py --workdir=/tmp/run

Each child gets VIN_NUM_PROCESSES, VIN_PROCESS_ID, VIN_LOCAL_DEVICES and VIN_COORDINATOR=127.0.0.1:PORT, which
`vin_jax.parallel.distributed.initialize_from_env()` turns into a gloo CPU cluster, and JAX_PLATFORMS=cpu unless
already set. Output lines are prefixed with [p0], [p1], ...; the launcher exits with the first non-zero child
exit code and then stops the other children, as it does on Ctrl-C or SIGTERM (exit 130 / 143).

Only the standard library is used (portpicker if installed), so any python can run this file.
"""
import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

# Spelled as in vin_jax/parallel/distributed.py (not imported: that would import jax).
ENV_NUM_PROCESSES = "VIN_NUM_PROCESSES"
ENV_PROCESS_ID = "VIN_PROCESS_ID"
ENV_LOCAL_DEVICES = "VIN_LOCAL_DEVICES"
ENV_COORDINATOR = "VIN_COORDINATOR"

# Seconds a child gets between SIGTERM and SIGKILL: after Ctrl-C, and after a sibling failed (then the others
# are stuck or about to be, since a collective needs every process).
_GRACE_SECONDS_INTERRUPT = 5.0
_GRACE_SECONDS_FAILURE = 1.0


def free_port():
  try:
    import portpicker  # pylint: disable=import-outside-toplevel
    return portpicker.pick_unused_port()
  except ImportError:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
      s.bind(("127.0.0.1", 0))
      return s.getsockname()[1]


def child_env(process_id, num_processes, devices_per_process, port, base_env=None):
  """The environment of child `process_id`: base_env plus the VIN_* contract."""
  env = dict(os.environ if base_env is None else base_env)
  env.update({
      ENV_NUM_PROCESSES: str(num_processes),
      ENV_PROCESS_ID: str(process_id),
      ENV_LOCAL_DEVICES: str(devices_per_process),
      ENV_COORDINATOR: f"127.0.0.1:{port}",
      "PYTHONUNBUFFERED": "1",  # so prefixed lines arrive as they are printed
  })
  env.setdefault("JAX_PLATFORMS", "cpu")
  return env


def parse_args(argv):
  if "--" not in argv:
    raise SystemExit("usage: local.py [--num_processes=N] [--devices_per_process=D] [--port=P] [--dry-run] "
                     "-- COMMAND ...  (the '--' before the command is required)")
  split = argv.index("--")
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_processes", type=int, default=2)
  parser.add_argument("--devices_per_process", type=int, default=4)
  parser.add_argument("--port", type=int, default=0, help="coordinator port on 127.0.0.1; 0 picks a free one")
  parser.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                      help="print each child's command and VIN_* environment, run nothing")
  args = parser.parse_args(argv[:split])
  args.command = argv[split + 1:]
  if not args.command:
    parser.error("no command after '--'")
  if args.num_processes < 1:
    parser.error(f"--num_processes={args.num_processes} must be >= 1")
  if args.devices_per_process < 1:
    parser.error(f"--devices_per_process={args.devices_per_process} must be >= 1")
  return args


def _pump(prefix, stream, lock):
  for line in iter(stream.readline, b""):
    with lock:
      sys.stdout.buffer.write(prefix + line if line.endswith(b"\n") else prefix + line + b"\n")
      sys.stdout.buffer.flush()
  stream.close()


def _stop(procs, grace_seconds):
  """SIGTERM each live child's process group, then SIGKILL whatever is left after the grace period.

  The grace lets a child act on SIGTERM (JAX treats it as a preemption notice). A second Ctrl-C ends it early.
  """
  live = [p for p in procs if p.poll() is None]
  for p in live:
    _signal_group(p, signal.SIGTERM)
  deadline = time.monotonic() + grace_seconds
  try:
    while any(p.poll() is None for p in live) and time.monotonic() < deadline:
      time.sleep(0.05)
  except (KeyboardInterrupt, _Terminated):
    pass
  for p in live:
    if p.poll() is None:
      _signal_group(p, signal.SIGKILL)
    p.wait()


def _signal_group(p, signum):
  try:
    os.killpg(p.pid, signum)
  except ProcessLookupError:
    pass


class _Terminated(Exception):
  pass


def _raise_terminated(signum, frame):
  del frame
  raise _Terminated(signum)


def run(command, num_processes, devices_per_process, port):
  """Start the children, stream their output, and return the launcher's exit code."""
  lock = threading.Lock()
  procs, pumps = [], []
  previous = signal.signal(signal.SIGTERM, _raise_terminated)
  # Ctrl-C must stop the job even when this launcher inherited SIGINT as ignored (a background job of a
  # non-interactive shell does): then Python installs no KeyboardInterrupt handler of its own.
  previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
  grace_seconds = _GRACE_SECONDS_FAILURE
  try:
    for pid in range(num_processes):
      # Own session per child: stopping it also stops anything it spawned (e.g. under `bash -c`).
      p = subprocess.Popen(command, env=child_env(pid, num_processes, devices_per_process, port),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
      procs.append(p)
      print(f"[launch] p{pid} pid={p.pid}", file=sys.stderr, flush=True)
      t = threading.Thread(target=_pump, args=(f"[p{pid}] ".encode(), p.stdout, lock), daemon=True)
      t.start()
      pumps.append(t)
    exit_code = 0
    while True:
      codes = [p.poll() for p in procs]
      failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        i, code = failed[0]
        exit_code = code if code > 0 else 128 - code  # killed by signal N -> 128 + N, as a shell reports it
        print(f"[launch] p{i} exited with {code}; stopping the others", file=sys.stderr, flush=True)
        break
      if all(c == 0 for c in codes):
        break
      time.sleep(0.05)
  except OSError as e:  # e.g. the command does not exist
    print(f"[launch] cannot start {command[0]!r}: {e}", file=sys.stderr, flush=True)
    exit_code = 127
  except (KeyboardInterrupt, _Terminated) as e:
    exit_code = 143 if isinstance(e, _Terminated) else 130
    grace_seconds = _GRACE_SECONDS_INTERRUPT
    print("[launch] interrupted; stopping all children", file=sys.stderr, flush=True)
  finally:
    _stop(procs, grace_seconds)
    signal.signal(signal.SIGTERM, previous)
    signal.signal(signal.SIGINT, previous_int)
  for t in pumps:
    t.join(timeout=2.0)
  return exit_code


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  port = args.port or free_port()
  if args.dry_run:
    for pid in range(args.num_processes):
      env = child_env(pid, args.num_processes, args.devices_per_process, port, base_env={})
      print(f"# p{pid}")
      print(shlex.join(["env", *(f"{k}={v}" for k, v in sorted(env.items())), *args.command]))
    return 0
  return run(args.command, args.num_processes, args.devices_per_process, port)


if __name__ == "__main__":
  sys.exit(main())
