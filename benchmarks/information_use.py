"""Does a trained model use what it is given? A diagnostic table, one forward pass per cell.

For validation videos noised to time t, the denoiser's x0 error on chunk 0's frames 1.. (the frames a
given first frame should inform) is measured
  * with every frame noisy,
  * with the first latent frame given clean (image-to-video, `diffusion.first_frame_cond_prob`),
and the error on one middle frame with every other frame of the video given clean (an upper bound on what
attention could recover). Then the first frame is swapped for another video's and the mean change of the
predictions is printed per chunk: chunk 0 sees the first frame directly, later chunks only through the
global tokens (and, if it reaches them, the local context). Last, every window's x0 error at t = 0.8 and
0.9 with the global tokens of the video itself, of none, of the video nearly clean (t = 0.2) and of
another video nearly clean: how much of a video's identity the windows take from the global tokens.
For sprite data, finally, the colour that reaches each chunk from the clean first frame at sampling-like noise
(t = 0.9 .. 1): the decoded x0 estimate's dominant sprite colour per chunk, compared with the video's true
colour, with the first frame swapped for another video's (does chunk k follow the first frame or its own
noisy frames?) and with no global tokens; and whether the global tokens hold that colour at all: a linear
(ridge) probe from the tokens of training videos to the first frame's colour, scored on held-out videos.

  python benchmarks/information_use.py --config=configs/micro.py --workdir=runs/ablation/models/vin \
      --data_dir=runs/ablation/data
  python benchmarks/information_use.py --params=EXPORT_DIR --data_dir=runs/ablation/data   # an export's config
"""
from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

from vin_jax import autoencoder as autoencoder_lib
from vin_jax import config as config_lib
from vin_jax import sampling
from vin_jax import train as train_lib
from vin_jax.data import builder
from vin_jax.diffusion.schedules import Schedule
from vin_jax.evaluation import attributes
from vin_jax.model import windows
from vin_jax.text import tokenizer


def x0_hat(model, schedule, x_t, t, text, context_frames, **model_kwargs):
  """Window x0 estimates [B, N, L + F, ...] and the window predictions (`model_kwargs`: e.g. use_global)."""
  preds, _ = model(x_t, t, text, context_frames=context_frames, **model_kwargs)
  x_win, _ = windows.build_windows(x_t, context_frames)
  t_win, _ = windows.build_windows(t, context_frames)
  return schedule.x0_eps(x_win, preds, t_win)[0], preds


def captions_of(examples) -> list[str]:
  return [e["caption"].decode() if isinstance(e["caption"], bytes) else str(e["caption"]) for e in examples]


def chunk_colours(config, latents_BxNxFxhxwxc) -> list[list[str | None]]:
  """Dominant sprite colour name (or None) of every chunk of every decoded video: [B][N]."""
  frames = np.asarray(sampling.decode_to_uint8(config, latents_BxNxFxhxwxc))   # [B, T, H, W, 3]
  per_chunk = config_lib.pixel_frames_per_chunk(config)
  return [attributes.attribute_consistency(video, per_chunk)["chunk_colors"] for video in frames]


def match_per_chunk(colours_BxN, names_B, keep_B=None) -> np.ndarray:
  """Fraction [N] of the videos (those with keep_B, default all) whose chunk colour is names_B[b]."""
  keep = np.ones(len(names_B), bool) if keep_B is None else np.asarray(keep_B, bool)
  hits = np.array([[c == names_B[b] for c in colours_BxN[b]] for b in range(len(names_B))], float)
  return hits[keep].mean(axis=0) if keep.any() else np.full(hits.shape[1], np.nan)


def first_frame_colour_table(config, model, schedule, x0, noise, text, truth, times=(0.9, 0.98, 1.0)):
  """Prints, per t, the fraction of videos whose chunk k's x0 colour is the true one (own first frame), the
  swapped-in first frame's (another video's), and the true one without global tokens. x0 [B, N, F, h, w, c]."""
  L = config.chunking.context_frames
  donor = np.roll(np.arange(len(truth)), 1)
  truth_donor = [truth[i] for i in donor]
  differ = [a != b for a, b in zip(truth, truth_donor)]
  fmt = lambda v: " ".join(f"{x:.2f}" for x in v)
  print(f"\ncolour of each chunk's x0 estimate, first frame clean, every other frame at t ({len(truth)} videos; "
        f"chance about 1/6; swap over the {sum(differ)} pairs of different colours), chunk 0..N-1:")
  print(f"{'t':>5} | {'own first frame: true':>24} | {'swapped: the new first frame':>28} | "
        f"{'swapped: still the true':>24} | {'no global tokens: true':>24}")
  for t in times:
    tt = jnp.full(x0.shape[:3], t).at[:, 0, 0].set(0.0)
    x_t = schedule.add_noise(x0, noise, tt)
    x_swap = x_t.at[:, 0, 0].set(x_t[donor, 0, 0])
    colours = lambda x, **kw: chunk_colours(config, x0_hat(model, schedule, x, tt, text, L, **kw)[0][:, :, L:])
    own, swap, none = colours(x_t), colours(x_swap), colours(x_t, use_global=False)
    print(f"{t:5.2f} | {fmt(match_per_chunk(own, truth)):>24} | {fmt(match_per_chunk(swap, truth_donor, differ)):>28} | "
          f"{fmt(match_per_chunk(swap, truth, differ)):>24} | {fmt(match_per_chunk(none, truth)):>24}")


def ridge_probe_accuracy(features_NxD, labels_N, num_train: int, num_classes: int, ridge: float = 1.0) -> float:
  """Held-out accuracy of a ridge regression onto one-hot labels (argmax), trained on the first num_train rows."""
  x = np.asarray(features_NxD, np.float64)
  mean, std = x[:num_train].mean(0), x[:num_train].std(0) + 1e-6
  x = np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
  y = np.eye(num_classes)[np.asarray(labels_N)]
  a, b = x[:num_train], y[:num_train]
  w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ b)
  return float(np.mean(np.argmax(x[num_train:] @ w, 1) == np.asarray(labels_N)[num_train:]))


def token_colour_probe(config, model, schedule, data_dir, num_videos=768, num_train=512, batch=64):
  """Prints the probe's accuracy from the global tokens to the first frame's colour, three ways."""
  source = builder.data_source(config, data_dir, "train")
  num_videos = min(num_videos, len(source))
  num_train = min(num_train, num_videos * 2 // 3)
  ae = autoencoder_lib.make_autoencoder(config)
  feats = {"frame 0 clean, rest t=1": [], "all t=1 (nothing to read)": [], "all t=0.2": []}
  labels = []
  for start in range(0, num_videos, batch):
    ex = [source[i] for i in range(start, min(start + batch, num_videos))]
    labels += [int(np.asarray(e["colors"])[0]) for e in ex]
    frames = jnp.asarray(np.stack([e["frames"] for e in ex]))
    text = jnp.asarray(tokenizer.tokenize(captions_of(ex), config.text.max_length))
    x0 = train_lib.frames_to_latents(ae, frames, config.chunking.chunk_frames)
    noise = jax.random.normal(jax.random.key(start), x0.shape)
    ones = jnp.ones(x0.shape[:3])
    for key, tt in zip(feats, (ones.at[:, 0, 0].set(0.0), ones, 0.2 * ones)):
      tokens = model.global_tokens(schedule.add_noise(x0, noise, tt), tt, *model.encode_text(text))
      feats[key].append(np.asarray(tokens, np.float32).reshape(len(ex), -1))
  from vin_jax.data.sprites import COLOR_NAMES
  print(f"\nlinear probe, global tokens -> the first frame's colour ({num_train} training videos, "
        f"{num_videos - num_train} held out; chance about 1/{len(COLOR_NAMES)}):")
  for key, rows in feats.items():
    acc = ridge_probe_accuracy(np.concatenate(rows), labels, num_train, len(COLOR_NAMES))
    print(f"  {key:>28}: {acc:.2f}")


def main():
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", default=None, help="config file[:variant]; default with --params: the "
                      "export's config.json")
  parser.add_argument("--workdir", default=None, help="the run whose latest checkpoint is measured")
  parser.add_argument("--params", default=None, help="an export directory (python -m vin_jax.main export) "
                      "instead of --workdir")
  parser.add_argument("--data_dir", default=None, help="default: the config's data dir for WORKDIR")
  parser.add_argument("--num_videos", type=int, default=16)
  parser.add_argument("--times", default="0.5,0.8,0.95")
  parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                      help="config override as in --config.FIELD=VALUE of the main CLI (repeatable); use the "
                           "ones the model was trained with")
  args = parser.parse_args()
  if bool(args.workdir) == bool(args.params):
    parser.error("give one of --workdir=DIR or --params=EXPORT_DIR")
  if not args.config and not args.params:
    parser.error("--config is required with --workdir")

  if args.config:
    path, _, arg = args.config.partition(":")
    config = config_lib.load_config_file(path, arg or None)
  else:
    from vin_jax.export import config_json
    config = config_json.load_config(args.params)
  for item in args.set:
    field, _, value = item.partition("=")
    current = config_lib.get_field(config, field)
    parsed = value.lower() in ("1", "true") if isinstance(current, bool) else type(current)(value)
    config_lib.override(config, {field: parsed})
  config_lib.validate(config, purpose="information_use")
  data_dir = args.data_dir or config_lib.resolve_data_dir(config, args.workdir)
  if args.params:
    model_def, params, step = sampling.load_exported(config, args.params)
  else:
    model_def, params, step = sampling.load_params(config, args.workdir)
  model = model_def.bind(params)
  schedule = Schedule.from_config(config)
  source = builder.data_source(config, data_dir, "validation")
  examples = [source[i % len(source)] for i in range(args.num_videos)]
  frames = jnp.asarray(np.stack([e["frames"] for e in examples]))
  text = jnp.asarray(tokenizer.tokenize(captions_of(examples), config.text.max_length))
  x0 = train_lib.frames_to_latents(autoencoder_lib.make_autoencoder(config), frames, config.chunking.chunk_frames)
  L = config.chunking.context_frames
  f = config.chunking.chunk_frames
  middle = f // 2
  noise = jax.random.normal(jax.random.key(1), x0.shape)
  run = jax.jit(lambda x_t, t: x0_hat(model, schedule, x_t, t, text, L))

  print(f"checkpoint step {step}; {args.num_videos} validation videos of {x0.shape[1]} chunks; x0 error = mean "
        "squared error of the latent x0 estimate")
  print(f"{'t':>5} | {'all noisy':>10} | {'frame 0 clean':>13} | {'middle frame, all others clean':>31}")
  for t in (float(v) for v in args.times.split(",")):
    t_all = jnp.full(x0.shape[:3], t)
    t_first = t_all.at[:, 0, 0].set(0.0)
    errors = []
    for tt in (t_all, t_first):
      est, _ = run(schedule.add_noise(x0, noise, tt), tt)
      errors.append(float(jnp.mean(jnp.square(est[:, 0, L + 1:] - x0[:, 0, 1:]))))
    t_others = jnp.zeros(x0.shape[:3]).at[:, 0, middle].set(t)
    est, _ = run(schedule.add_noise(x0, noise, t_others), t_others)
    clean_others = float(jnp.mean(jnp.square(est[:, 0, L + middle] - x0[:, 0, middle])))
    est, _ = run(schedule.add_noise(x0, noise, t_all), t_all)
    middle_noisy = float(jnp.mean(jnp.square(est[:, 0, L + middle] - x0[:, 0, middle])))
    print(f"{t:5.2f} | {errors[0]:10.3f} | {errors[1]:13.3f} | {clean_others:14.3f} (all noisy {middle_noisy:.3f})")

  t = 0.8
  tt = jnp.full(x0.shape[:3], t).at[:, 0, 0].set(0.0)
  x_t = schedule.add_noise(x0, noise, tt)
  _, base = run(x_t, tt)
  _, swapped = run(x_t.at[:, 0, 0].set(jnp.roll(x_t[:, 0, 0], 1, axis=0)), tt)
  change = np.asarray(jnp.abs(base - swapped)[:, :, L:].mean(axis=(0, 2, 3, 4, 5)))
  scale = float(jnp.abs(base[:, :, L:]).mean())
  print(f"\nfirst frame swapped for another video's (t = {t}): mean |change| of each chunk's own predictions "
        f"(prediction scale {scale:.3f})")
  print("  " + "  ".join(f"chunk {i}: {c:.4f}" for i, c in enumerate(change)))

  print("\nwhat the windows read from the global tokens: x0 error of every chunk's own frames at time t, with "
        "the global tokens of")
  print(f"{'t':>5} | {'this video':>10} | {'none':>8} | {'this video at t=0.2':>19} | {'another video at t=0.2':>22}")
  t_low = jnp.full(x0.shape[:3], 0.2)
  informed = model.global_tokens(schedule.add_noise(x0, noise, t_low), t_low, *model.encode_text(text))
  for t in (0.8, 0.9):
    tt = jnp.full(x0.shape[:3], t)
    x_t = schedule.add_noise(x0, noise, tt)
    row = []
    for kwargs in ({}, {"use_global": False}, {"global_tokens": informed},
                   {"global_tokens": jnp.roll(informed, 1, axis=0)}):
      est = x0_hat(model, schedule, x_t, tt, text, L, **kwargs)[0]
      row.append(float(jnp.mean(jnp.square(est[:, :, L:] - x0))))
    print(f"{t:5.2f} | {row[0]:10.3f} | {row[1]:8.3f} | {row[2]:19.3f} | {row[3]:22.3f}")
  print("(global tokens that saw the video nearly clean should lower the error if the windows read identity "
        "from them; another video's should raise it)")

  if config.data.name == "sprites" and "colors" in examples[0]:
    from vin_jax.data.sprites import COLOR_NAMES
    truth = [COLOR_NAMES[int(np.asarray(e["colors"])[0])] for e in examples]
    first_frame_colour_table(config, model, schedule, x0, noise, text, truth)
    if model.vin is not None:
      token_colour_probe(config, model, schedule, data_dir)


if __name__ == "__main__":
  main()
