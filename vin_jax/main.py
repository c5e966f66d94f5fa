"""The command line: python -m vin_jax.main <command> --config=configs/NAME.py[:variant] --workdir=DIR.

Commands:
  data      build the configured data set (TFDS ArrayRecord) in data.data_dir / $TFDS_DATA_DIR / WORKDIR/data
  train     train (or resume) in WORKDIR
  sample    sample long videos from the latest checkpoint in WORKDIR into --out
  evaluate  metrics for --videos='GLOB' (mp4 files) or --samples=OUTDIR, written to --out=FILE.json
  ablate    the paper's ablation table at small scale in WORKDIR (trains, samples, evaluates; resumable)

Overrides: --config.train.steps=100 --config.sampling.fusion=none ... (a misspelled field fails).
"""
from __future__ import annotations

import sys
import warnings

from absl import app, flags, logging
from ml_collections import config_flags

COMMANDS = ("data", "train", "sample", "evaluate", "ablate")

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/tiny.py[:variant].",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: checkpoints, metrics, config.")
_OUT = flags.DEFINE_string("out", None, "sample: output directory; evaluate: output JSON file.")
_NUM_CHUNKS = flags.DEFINE_integer("num_chunks", None, "sample: chunks per video (default sampling.num_chunks).")
_METHOD = flags.DEFINE_enum("method", None, ["vin", "full", "autoregressive", "no_global", "freenoise"],
                            "sample: method (default sampling.method).")
_SEED = flags.DEFINE_integer("seed", 0, "sample: seed of the initial noise.")
_PROMPT = flags.DEFINE_string("prompt", None, "sample: caption (default: the data set's first captions).")
_FIRST_FRAME = flags.DEFINE_boolean("first_frame", False, "sample: give each video the first frame of the "
                                    "validation video whose caption it uses (image-to-video).")
_VIDEOS = flags.DEFINE_string("videos", None, "evaluate: a glob of mp4 files.")
_SAMPLES = flags.DEFINE_string("samples", None, "evaluate: a sample output directory (samples.npz).")


def _usage_error(message: str):
  print(f"error: {message}\n\n{__doc__}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) != 2 or argv[1] not in COMMANDS:
    _usage_error(f"give exactly one command out of {COMMANDS}, got {argv[1:]}")
  command = argv[1]
  if not flags.FLAGS["verbosity"].present:  # Orbax and TFDS log at INFO; --verbosity=0 shows them
    logging.set_verbosity(logging.WARNING)
  # imageio-ffmpeg starts ffmpeg with fork+exec, which is safe; Python warns because JAX has threads.
  warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
  if command == "evaluate":
    from vin_jax.cli import evaluate_command
    evaluate_command(videos=_VIDEOS.value, samples=_SAMPLES.value, out=_OUT.value)
    return
  config = _CONFIG.value
  if config is None:
    _usage_error("--config is required")
  if not _WORKDIR.value:
    _usage_error("--workdir is required")
  from vin_jax import config as config_lib
  from vin_jax.parallel import distributed
  distributed.initialize_from_env()
  import jax
  try:
    config_lib.validate(config, num_devices=jax.device_count(), purpose=command)
  except config_lib.ConfigError as e:
    print(f"invalid config: {e}", file=sys.stderr)
    sys.exit(2)
  except OSError as e:  # ml_collections defers a failed --config file load to the first field access
    print(f"error: cannot load --config: {e}", file=sys.stderr)
    sys.exit(2)
  if command == "data":
    from vin_jax.data import builder
    data_dir = config_lib.resolve_data_dir(config, _WORKDIR.value)
    builder.build_dataset(config, data_dir)
    print(f"data set ready in {data_dir}")
  elif command == "train":
    from vin_jax import train
    metrics = train.train(config, _WORKDIR.value)
    print(f"trained to step {metrics.get('step')} in {_WORKDIR.value}: loss {metrics.get('loss')}")
  elif command == "sample":
    from vin_jax.cli import sample_command
    try:
      sample_command(config, _WORKDIR.value, out=_OUT.value, num_chunks=_NUM_CHUNKS.value, method=_METHOD.value,
                     seed=_SEED.value, prompt=_PROMPT.value, first_frame=_FIRST_FRAME.value)
    except config_lib.ConfigError as e:
      print(f"invalid config: {e}", file=sys.stderr)
      sys.exit(2)
  elif command == "ablate":
    from vin_jax import ablation
    try:
      ablation.run(config, _WORKDIR.value)
    except config_lib.ConfigError as e:
      print(f"invalid config: {e}", file=sys.stderr)
      sys.exit(2)
    except ablation.Interrupted as e:
      print(f"ablation interrupted: {e}", flush=True)


def _parse_flags(argv):
  """absl's parsing, with a one-line error for a bad --config override instead of a traceback."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError, TypeError, ValueError, flags.Error) as e:
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    hint = f" (overrides given: {' '.join(bad)})" if bad else ""
    print(f"error: bad flag or config override: {e}{hint}\nRun with --help for the flags.", file=sys.stderr)
    sys.exit(2)


def run():
  app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
