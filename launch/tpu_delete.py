"""Delete a TPU pod slice: its queued resource together with the TPU node (no confirmation prompt).

  python launch/tpu_delete.py --project=P --zone=Z --tpu_name=vin-pod [--queued_resource_id=ID] [--dry-run]

`queued-resources delete --force` deletes the node first, then the queued resource. A node made without a
queued resource (`gcloud compute tpus tpu-vm create`) is deleted with --node_only. Data on GCS is kept.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = ("project", "zone", "tpu_name", "queued_resource_id")


def delete_commands(args):
  if args.node_only:
    return [["gcloud", "compute", "tpus", "tpu-vm", "delete", args.tpu_name, *common.location_flags(args),
             "--quiet", *(["--async"] if args.async_ else [])]]
  return [["gcloud", "compute", "tpus", "queued-resources", "delete", args.queued_resource_id,
           *common.location_flags(args), "--force", "--quiet", *(["--async"] if args.async_ else [])]]


def main(argv=None):
  parser = common.new_parser(__doc__.split("\n")[0])
  common.add_settings(parser, *SETTINGS)
  parser.add_argument("--node_only", action="store_true",
                      help="delete only the TPU node (made without a queued resource)")
  parser.add_argument("--async", dest="async_", action="store_true", help="return before deletion ends")
  args = parser.parse_args(argv)
  common.resolve_settings(parser, args, required=SETTINGS)

  common.print_settings(args, SETTINGS)
  for cmd in delete_commands(args):
    common.run_or_print(cmd, args.dry_run)
  return 0


if __name__ == "__main__":
  sys.exit(main())
