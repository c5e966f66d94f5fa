"""Run `python -m vin_jax.main ...` on the workers of a TPU VM slice, detached, with a log file per worker.

  python launch/tpu_run.py --project=P --zone=Z --tpu_name=vin-pod --bucket=B --run_name=paper1 [--follow] \
      -- train --config=configs/paper.py --config.train.steps=100000
  python launch/tpu_run.py --project=P --zone=Z --tpu_name=vin-pod --logs [--log_worker=all]  # stream logs
  python launch/tpu_run.py --project=P --zone=Z --tpu_name=vin-pod --stop                     # stop the job

The job gets `--workdir=gs://B/runs/RUN_NAME` (or --workdir) and `TFDS_DATA_DIR=gs://B/tfds` (or
--tfds_data_dir). Every worker runs the same command (JAX SPMD) under nohup; on each worker its output is
appended to ~/vin_logs/RUN_NAME.COMMAND.log (~/vin_logs/latest.log points at it) and its pid is in
~/vin_logs/job.pid. One job per slice at a time, since a TPU belongs to one process: starting a second one
fails until the first ends or is stopped. Re-running a train command resumes from the workdir's checkpoint.

Workers: `data` (building the TFDS dataset) runs on worker 0 only, on its CPU (concurrent writers of one
dataset would collide); everything else runs on all workers with VIN_DISTRIBUTED=1, which makes
`vin_jax.parallel.distributed.initialize_from_env()` call `jax.distributed.initialize()`.
"""
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # pylint: disable=g-import-not-at-top,wrong-import-position

SETTINGS = ("project", "zone", "tpu_name", "bucket")
MAIN_COMMANDS = ("train", "sample", "data", "evaluate", "export")


def split_argv(argv):
  if "--" in argv:
    i = argv.index("--")
    return argv[:i], argv[i + 1:]
  return argv, []


PID_FILE = f"{common.REMOTE_LOG_DIR}/job.pid"        # the slice's one job: a TPU is owned by one process
LATEST_LOG = f"{common.REMOTE_LOG_DIR}/latest.log"  # symlink to the log of the last job started
# Bash test: the job in PID_FILE is alive (a zombie, i.e. ended but not yet reaped, does not count).
JOB_RUNNING = f'[ -f {PID_FILE} ] && st=$(ps -o stat= -p "$(cat {PID_FILE})") && [ "${{st#Z}}" = "$st" ]'


def log_name(run_name, main_command):
  return f"{run_name}.{main_command}.log"


def run_env(args, main_command, worker):
  """Environment of the remote run: data location, runtime choice, then the user's --env overrides."""
  env = {"TFDS_DATA_DIR": args.tfds_data_dir or f"{args.bucket}/tfds"}
  if main_command == "data":
    env.update(JAX_PLATFORMS="cpu", VIN_DISTRIBUTED="0")
  else:
    env["VIN_DISTRIBUTED"] = "1" if worker == "all" else "0"
  for item in args.env:
    key, _, value = item.partition("=")
    env[key] = value
  return env


def launch_script(args, main_argv, worker):
  """The bash run on each worker: refuse to start while another job runs, then start this one detached."""
  main_command = main_argv[0]
  python_cmd = shlex.join([f"../{common.REMOTE_PYTHON}", "-m", "vin_jax.main", main_command,
                           *main_argv[1:], f"--workdir={args.workdir}"])
  env = " ".join(f"{k}={shlex.quote(v)}" for k, v in run_env(args, main_command, worker).items())
  log = f"{common.REMOTE_LOG_DIR}/{log_name(args.run_name, main_command)}"
  return common.bash_script(
      f"mkdir -p {common.REMOTE_LOG_DIR}",
      f'if {JOB_RUNNING}; then '
      f'echo "$(hostname): a job is still running (pid $(cat {PID_FILE}), see ~/{LATEST_LOG}); '
      'stop it with --stop" >&2; exit 1; fi',
      f'echo "=== $(date -u +%FT%TZ) $(hostname)" >> {log}',
      f'printf "%s\\n" {shlex.quote(python_cmd)} >> {log}',
      f"ln -sfn {log_name(args.run_name, main_command)} {LATEST_LOG}",
      f"cd {common.REMOTE_CODE_DIR}",
      f"export {env}",
      # setsid: the job gets its own process group, so --stop ends it with everything it spawned.
      f"setsid nohup {python_cmd} >> ../{log} 2>&1 < /dev/null &",
      f"echo $! > ../{PID_FILE}",
      f'echo "$(hostname): started {main_command} of {args.run_name} (pid $!), log ~/{log}"',
  )


def logs_script(lines):
  return common.bash_script(f'tail -n {lines} -F {LATEST_LOG} | sed -u "s/^/[$(hostname)] /"')


def stop_script():
  return common.bash_script(
      f'if {JOB_RUNNING}; then '
      f'kill -TERM -- "-$(cat {PID_FILE})" 2>/dev/null || kill -TERM "$(cat {PID_FILE})"; '
      'echo "$(hostname): stopped pid $(cat ' + PID_FILE + ')"; '
      'else echo "$(hostname): no job running"; fi')


def parse_args(argv):
  own_argv, main_argv = split_argv(argv)
  parser = common.new_parser(__doc__.split("\n")[0])
  common.add_settings(parser, *SETTINGS)
  parser.add_argument("--run_name", default=os.environ.get("VIN_RUN_NAME"),
                      help="names the workdir and the log (env $VIN_RUN_NAME)")
  parser.add_argument("--workdir", default=None, help="default: gs://BUCKET/runs/RUN_NAME")
  parser.add_argument("--tfds_data_dir", default=None, help="default: gs://BUCKET/tfds")
  parser.add_argument("--worker", default=None,
                      help='"all" or a worker index; default: 0 for `data`, all otherwise')
  parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                      help="extra environment variable for the run (repeatable)")
  mode = parser.add_mutually_exclusive_group()
  mode.add_argument("--follow", action="store_true", help="after starting, stream the log of --log_worker")
  mode.add_argument("--logs", action="store_true", help="only stream the latest job's log on --log_worker")
  mode.add_argument("--stop", action="store_true", help="stop the running job on all workers")
  parser.add_argument("--log_worker", default="0", help='worker whose log to stream, or "all"')
  parser.add_argument("--lines", type=int, default=100, help="log lines to show before following")
  args = parser.parse_args(own_argv)
  launching = not (args.logs or args.stop)
  common.resolve_settings(parser, args, required=SETTINGS[:3] + (("bucket",) if launching else ()))
  if launching and not args.run_name:
    parser.error("missing settings: --run_name (or $VIN_RUN_NAME)")
  if args.run_name and not all(c.isalnum() or c in "-_." for c in args.run_name):
    parser.error(f"--run_name={args.run_name!r} may only contain letters, digits, '-', '_' and '.'")
  for item in args.env:
    if "=" not in item or not item.partition("=")[0].isidentifier():
      parser.error(f"--env={item!r} must be KEY=VALUE")
  args.main_argv = main_argv
  if launching:
    if not main_argv or main_argv[0] not in MAIN_COMMANDS:
      parser.error(f"give the vin_jax.main command after '--', one of {', '.join(MAIN_COMMANDS)}; "
                   f"got {main_argv[:1] or 'nothing'}")
    if any(a == "--workdir" or a.startswith("--workdir=") for a in main_argv):
      parser.error("set the workdir with this script's --workdir (before '--'), not in the vin_jax.main args")
    args.workdir = args.workdir or f"{args.bucket}/runs/{args.run_name}"
    if not args.workdir.startswith("gs://"):
      parser.error(f"--workdir={args.workdir!r} must be on GCS (gs://...): every worker must see it")
    args.worker = args.worker or ("0" if main_argv[0] == "data" else "all")
  elif main_argv:
    parser.error("--logs and --stop take no command after '--'")
  return args


def main(argv=None):
  args = parse_args(sys.argv[1:] if argv is None else argv)
  common.print_settings(args, SETTINGS + ("run_name", "workdir"))
  if args.stop:
    common.run_or_print(common.tpu_ssh(args, stop_script(), worker="all"), args.dry_run)
    return 0
  if not args.logs:
    common.run_or_print(common.tpu_ssh(args, launch_script(args, args.main_argv, args.worker), args.worker),
                        args.dry_run)
  if args.logs or args.follow:
    try:
      common.run_or_print(common.tpu_ssh(args, logs_script(args.lines), args.log_worker),
                          args.dry_run, check=False)
    except KeyboardInterrupt:
      print("\nstopped following; the run goes on", file=sys.stderr)
  return 0


if __name__ == "__main__":
  sys.exit(main())
