"""Create a Cloud TPU pod slice as a queued resource and wait until it is ACTIVE.

  python launch/tpu_create.py --project=P --zone=us-central2-b --tpu_name=vin-pod \
      --accelerator_type=v4-64 [--runtime_version=tpu-ubuntu2204-base] [--spot | --best-effort] [--dry-run]

Waiting polls `queued-resources describe` every --poll_seconds until the state is ACTIVE (exit 0), or FAILED /
SUSPENDED (exit 1), or --wait_minutes pass (exit 2; the request stays queued). Ctrl-C stops only the waiting.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = ("project", "zone", "tpu_name", "accelerator_type", "runtime_version", "queued_resource_id")
_TERMINAL_FAILURES = ("FAILED", "SUSPENDED", "SUSPENDING")
_MAX_DESCRIBE_FAILURES = 5


def create_command(args):
  # Best-effort capacity exists only on the alpha track of gcloud.
  track = ["alpha"] if args.best_effort else []
  return ["gcloud", *track, "compute", "tpus", "queued-resources", "create", args.queued_resource_id,
          f"--node-id={args.tpu_name}", *common.location_flags(args),
          f"--accelerator-type={args.accelerator_type}", f"--runtime-version={args.runtime_version}",
          *(["--spot"] if args.spot else []), *(["--best-effort"] if args.best_effort else []),
          *(["--reserved"] if args.reserved else [])]


def describe_command(args):
  return ["gcloud", "compute", "tpus", "queued-resources", "describe", args.queued_resource_id,
          *common.location_flags(args), "--format=value(state.state)"]


def wait_until_active(args):
  describe = describe_command(args)
  if args.dry_run:
    print(f"# poll every {args.poll_seconds:g} s until the state is ACTIVE:")
    common.run_or_print(describe, dry_run=True)
    return 0
  deadline = time.monotonic() + 60 * args.wait_minutes if args.wait_minutes > 0 else float("inf")
  state, failures = None, 0
  while True:
    result = common.run_or_print(describe, dry_run=False, capture=True, check=False)
    if result.returncode != 0:  # a passing network or API hiccup should not end a long wait
      failures += 1
      print(f"warning: describe failed ({failures}/{_MAX_DESCRIBE_FAILURES}): {result.stderr.strip()}",
            file=sys.stderr)
      if failures >= _MAX_DESCRIBE_FAILURES:
        return result.returncode
      time.sleep(args.poll_seconds)
      continue
    failures = 0
    new_state = result.stdout.strip()
    if new_state != state:
      state = new_state
      print(f"queued resource {args.queued_resource_id}: {state}", flush=True)
    if state == "ACTIVE":
      return 0
    if state in _TERMINAL_FAILURES:
      print(f"error: queued resource {args.queued_resource_id} is {state}; see "
            f"{' '.join(describe[:-1])}", file=sys.stderr)
      return 1
    if time.monotonic() > deadline:
      print(f"error: still {state} after --wait_minutes={args.wait_minutes:g}; the request stays queued",
            file=sys.stderr)
      return 2
    time.sleep(args.poll_seconds)


def main(argv=None):
  parser = common.new_parser(__doc__.split("\n")[0])
  common.add_settings(parser, *SETTINGS)
  capacity = parser.add_mutually_exclusive_group()
  capacity.add_argument("--spot", action="store_true", help="Spot capacity (preemptible, cheaper)")
  capacity.add_argument("--best-effort", "--best_effort", dest="best_effort", action="store_true",
                        help="best-effort capacity (gcloud alpha)")
  capacity.add_argument("--reserved", action="store_true", help="use the project's reservation")
  parser.add_argument("--no_wait", action="store_true", help="return right after the create request")
  parser.add_argument("--wait_minutes", type=float, default=0, help="give up waiting after this; 0: never")
  parser.add_argument("--poll_seconds", type=float, default=30)
  args = parser.parse_args(argv)
  common.resolve_settings(parser, args, required=SETTINGS)

  common.print_settings(args, SETTINGS)
  common.run_or_print(create_command(args), args.dry_run)
  if args.no_wait:
    return 0
  try:
    code = wait_until_active(args)
  except KeyboardInterrupt:
    print("\nstopped waiting; the request stays queued", file=sys.stderr)
    return 130
  if code == 0:
    print(f"# next: python launch/tpu_setup.py --tpu_name={args.tpu_name} ...", flush=True)
  return code


if __name__ == "__main__":
  sys.exit(main())
