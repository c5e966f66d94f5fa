"""The command line: python -m vin_jax.main <command> --config=configs/NAME.py[:variant] --workdir=DIR.

Commands:
  data      build the configured data set (TFDS ArrayRecord) in data.data_dir / $TFDS_DATA_DIR / WORKDIR/data
  train     train (or resume) in WORKDIR
  sample    sample long videos from the latest checkpoint in WORKDIR (or the export --params=OUT) into --out
  export    write WORKDIR's latest checkpoint as safetensors + config.json into --out (for sample --params,
            train --init_from)
  evaluate  metrics for --videos='GLOB' (mp4 files) or --samples=OUTDIR, written to --out=FILE.json
  ablate    the paper's ablation table at small scale in WORKDIR (trains, samples, evaluates; resumable)
  convert   --kind=sd_vae|wan_vae|t5 --src=DIR_OR_FILE --out=OUT: Hugging Face safetensors (diffusers'
            AutoencoderKL / AutoencoderKLWan, transformers' T5) -> vin_jax weights for autoencoder.weights / text.t5_dir (no --config)
  precompute  encode the data set to latents (and captions to T5 embeddings) for data.latents=True; resumable

Overrides: --config.train.steps=100 --config.sampling.fusion=none ... (a misspelled field fails).
Without --config, `sample --params=OUT` and `export --workdir=DIR` use the run config stored there
(--config=configs/exported.py:OUT); overrides still apply.
"""
from __future__ import annotations

import sys
import warnings

from absl import app, flags, logging
from ml_collections import config_flags

from vin_jax.convert import KINDS   # numpy only: the converters' modules load when used

COMMANDS = ("data", "train", "sample", "evaluate", "ablate", "export", "convert", "precompute")

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
_IMAGE = flags.DEFINE_string("image", None, "sample: image-to-video from this image file (PNG, JPEG; resized and "
                             "centre-cropped to data.height x data.width), given as every video's first frame.")
_CONDITION_VIDEO = flags.DEFINE_string("condition_video", None, "sample: video prediction: the first "
                                       "--condition_frames latent frames of this video (at data.fps) are given.")
_CONDITION_FRAMES = flags.DEFINE_integer("condition_frames", None, "sample: latent frames of --condition_video given.")
_INTERPOLATE = flags.DEFINE_string("interpolate", None, "sample: frame interpolation: this video, read at "
                                   "data.fps / 2, fills the even latent frames and the model the odd ones (a model "
                                   "trained with diffusion.clean_every=2, e.g. configs/tiny.py:interpolate).")
_VIDEOS = flags.DEFINE_string("videos", None, "evaluate: a glob of mp4 files.")
_SAMPLES = flags.DEFINE_string("samples", None, "evaluate: a sample output directory (samples.npz).")
_PARAMS = flags.DEFINE_string("params", None, "sample: an export directory to sample from instead of WORKDIR's "
                              "checkpoint (its config.json is the config unless --config is given).")
_INIT_FROM = flags.DEFINE_string("init_from", None, "train: start a fresh run from an export or a workdir: every "
                                 "weight whose name and shape match is loaded (report in WORKDIR/init_from.json).")
_WEIGHTS = flags.DEFINE_enum("weights", "ema", ["ema", "params"], "export, train --init_from (of a workdir): "
                             "which weights of the checkpoint.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "export: dtype of the written weights.")
_FORCE = flags.DEFINE_boolean("force", False, "export, convert: replace an existing --out.")
_KIND = flags.DEFINE_enum("kind", None, list(KINDS), "convert: what --src holds.")
_SRC = flags.DEFINE_string("src", None, "convert: a Hugging Face directory (config.json + *.safetensors) or a "
                           ".safetensors file with config.json beside it.")
_MAX_SHARD_BYTES = flags.DEFINE_integer("max_shard_bytes", 4 * 2 ** 30, "export: largest safetensors file; "
                                        "more weights go into model-0000i-of-0000N shards and an index.")


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
  if command == "convert":
    _convert()
    return
  config = _CONFIG.value
  if config is None:
    _usage_error("--config is required")
  if not _WORKDIR.value and not (command == "sample" and _PARAMS.value):
    _usage_error("--workdir is required")
  if _PARAMS.value and command != "sample" or _INIT_FROM.value and command != "train":
    _usage_error("--params is a flag of sample, --init_from one of train")
  from vin_jax import config as config_lib
  from vin_jax.parallel import distributed
  distributed.initialize_from_env()
  import jax
  try:
    # export restores onto its own mesh over all devices: the run's mesh need not fit this machine
    config_lib.validate(config, num_devices=None if command == "export" else jax.device_count(), purpose=command)
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
  elif command == "precompute":
    from vin_jax.data import precompute
    try:
      precompute.precompute(config, _WORKDIR.value)
    except (config_lib.ConfigError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  elif command == "train":
    from vin_jax import train
    from vin_jax.export import ExportError
    try:
      metrics = train.train(config, _WORKDIR.value, init_from=_INIT_FROM.value, init_weights=_WEIGHTS.value)
    except (ExportError, config_lib.ConfigError, FileNotFoundError) as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    print(f"trained to step {metrics.get('step')} in {_WORKDIR.value}: loss {metrics.get('loss')}")
  elif command == "sample":
    from vin_jax.cli import InputError, sample_command
    from vin_jax.export import ExportError
    try:
      sample_command(config, _WORKDIR.value, out=_OUT.value, num_chunks=_NUM_CHUNKS.value, method=_METHOD.value,
                     seed=_SEED.value, prompt=_PROMPT.value, first_frame=_FIRST_FRAME.value,
                     params_dir=_PARAMS.value, image=_IMAGE.value, condition_video=_CONDITION_VIDEO.value,
                     condition_frames=_CONDITION_FRAMES.value, interpolate=_INTERPOLATE.value)
    except config_lib.ConfigError as e:
      print(f"invalid config: {e}", file=sys.stderr)
      sys.exit(2)
    except InputError as e:   # an unreadable --image / --condition_video, a bad frame count
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    except ExportError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
  elif command == "export":
    from vin_jax.export import ExportError, command as export_cli
    try:
      export_cli.export_command(config, _WORKDIR.value, _OUT.value, weights=_WEIGHTS.value, dtype=_DTYPE.value,
                                force=_FORCE.value, max_shard_bytes=_MAX_SHARD_BYTES.value)
    except ExportError as e:
      print(f"error: {e}", file=sys.stderr)
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


def _convert():
  from vin_jax import convert
  if not (_KIND.value and _SRC.value and _OUT.value):
    _usage_error("convert needs --kind, --src and --out")
  try:
    info = convert.convert(_KIND.value, _SRC.value, _OUT.value, force=_FORCE.value)
  except convert.ConversionError as e:
    print(f"error: cannot convert {_SRC.value}: {e}", file=sys.stderr)
    sys.exit(2)
  print(f"converted {info['num_tensors']} tensors ({info['num_params']:,} parameters) of {_KIND.value} to {_OUT.value}")


def _parse_flags(argv):
  """absl's parsing, with a one-line error for a bad --config override instead of a traceback."""
  from vin_jax.export import command as export_cli
  argv = sys.argv = export_cli.implied_config_argv(argv, flags.FLAGS)  # config_flags reads overrides from sys.argv
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
