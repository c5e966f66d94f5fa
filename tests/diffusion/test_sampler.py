"""The scan sampler against a plain Python-loop reference, and the baselines (full, no_global, autoregressive,
FreeNoise) on a randomly initialised tiny model (configs/tiny.py:test)."""
import copy
import dataclasses
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vin_jax import config as config_lib
from vin_jax import sampling
from vin_jax.diffusion import sampler
from vin_jax.diffusion.schedules import Schedule
from vin_jax.model import ModelDef
from vin_jax.text import tokenizer

REPO = pathlib.Path(__file__).resolve().parents[2]
PROMPTS = ["one red square", "two sprites"]
LONG_CHUNKS = 5   # longer than any training video of tiny:test (buckets of 1, 2 and 4 chunks)


@pytest.fixture(scope="module")
def config():
  c = config_lib.load_config_file(REPO / "configs" / "tiny.py", "test")
  config_lib.validate(c)
  assert c.diffusion.objective == "flow"   # the reference below takes Euler steps
  return c


@pytest.fixture(scope="module")
def model_def(config):
  return ModelDef(config)


@pytest.fixture(scope="module")
def params(model_def):
  """Random parameters, every leaf perturbed: the final layers are zero-initialised, and a model that predicts
  zeros would make every comparison below trivially true. (numpy noise: nothing to compile.)"""
  rng = np.random.RandomState(1)
  return jax.tree.map(lambda leaf: leaf + 0.05 * rng.standard_normal(leaf.shape).astype(leaf.dtype),
                      model_def.init(jax.random.key(0)))


@pytest.fixture(scope="module")
def text(config):
  return jnp.asarray(tokenizer.tokenize(PROMPTS, config.text.max_length))


def latent_noise(config, seed, num_chunks):
  h, w, c = config_lib.latent_shape(config)
  shape = (len(PROMPTS), num_chunks, config.chunking.chunk_frames, h, w, c)
  return sampler.initial_noise(jax.random.key(seed), shape)


@pytest.fixture(scope="module")
def predict(model_def, config):
  """The jitted model call, with the global tokens spelled out: window predictions [B, N, L + F, h, w, c] for
  `x` with the global tokens of `token_video` (pass x itself for the model's own tokens). One compile serves
  the reference sampler and the global-token tests."""
  L = config.chunking.inference_context_frames

  @jax.jit
  def fn(params, x, t, text, drop, token_video):
    model = model_def.bind(params)
    global_tokens = model.global_tokens(token_video, t, *model.encode_text(text, drop))
    preds, _ = model(x, t, text, context_frames=L, drop_text_B=drop, global_tokens=global_tokens)
    return preds
  return fn


# ----------------------------------------------------------------------------------------------
# The reference: Python loops, the paper's fusion formula written out, Euler steps of the flow ODE.

def reference_sample(predict, params, noise, text, *, num_steps, context_frames, fusion, t_alpha,
                     guidance_scale=1.0, cfg_renorm=False):
  L = context_frames
  x = np.asarray(noise, np.float32)
  b, n, f = x.shape[:3]
  ts = np.linspace(1.0, 0.0, num_steps + 1).astype(np.float32)
  for i in range(num_steps):
    s = num_steps - i
    t = np.full((b, n, f), ts[i], np.float32)
    cond = np.asarray(predict(params, x, t, text, np.zeros((b,), bool), x), np.float64)
    preds = cond
    if guidance_scale != 1.0:
      uncond = np.asarray(predict(params, x, t, text, np.ones((b,), bool), x), np.float64)
      preds = uncond + guidance_scale * (cond - uncond)
      if cfg_renorm:
        for bi in range(b):
          for ni in range(n):
            for j in range(L + f):
              preds[bi, ni, j] *= np.linalg.norm(cond[bi, ni, j]) / np.linalg.norm(preds[bi, ni, j])
    fuse = {"early": s > t_alpha, "none": False}[fusion]
    pred = np.zeros_like(x, np.float64)
    for ci in range(n):
      for j in range(f):
        own = preds[:, ci, L + j]
        k = j - (f - L)                       # position in the overlap with the next window's context
        if fuse and ci + 1 < n and k >= 0:
          W = k + 0.5
          pred[:, ci, j] = ((L - W) * own + W * preds[:, ci + 1, k]) / L
        else:
          pred[:, ci, j] = own
    x = (x + (ts[i + 1] - ts[i]) * pred).astype(np.float32)
  return x


# Early fusion without guidance is what generate("vin") runs; fusion "none" with renormalised guidance (w = 2)
# covers the other branch of both switches in one more compile.
@pytest.mark.parametrize("fusion,guidance_scale,cfg_renorm", [("early", 1.0, False), ("none", 2.0, True)])
def test_scan_sampler_matches_the_python_loop(config, model_def, params, text, predict, generated, fusion,
                                              guidance_scale, cfg_renorm):
  settings = dataclasses.replace(sampler.SamplerSettings.from_config(config), fusion=fusion,
                                 guidance_scale=guidance_scale, cfg_renorm=cfg_renorm)
  assert settings.num_steps == 4 and settings.t_alpha == 2 and settings.context_frames == 2
  noise = latent_noise(config, 0, LONG_CHUNKS)
  if settings == sampler.SamplerSettings.for_method(config, "vin"):
    got = generated["vin"]   # generate() runs exactly this scan on exactly this noise
  else:
    schedule = Schedule.from_config(config)
    scan = jax.jit(lambda p, z, tx: sampler.sample_parallel(model_def.bind(p), schedule, settings, z, tx))
    got = np.asarray(scan(params, noise, text))
  want = reference_sample(predict, params, noise, text, num_steps=settings.num_steps,
                          context_frames=settings.context_frames, fusion=fusion, t_alpha=settings.t_alpha,
                          guidance_scale=guidance_scale, cfg_renorm=cfg_renorm)
  assert got.shape == noise.shape
  assert np.abs(got - np.asarray(noise)).max() > 0.1   # it moved
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)   # fp32 rounding: XLA fuses the scan and the loop differently


# ----------------------------------------------------------------------------------------------
# generate(): every method, seeds.

@pytest.fixture(scope="module")
def autoregressive_chain():
  """Filled by `generated`: the jitted `sample_parallel` (fusion 'none') that generate() hands to
  `sample_autoregressive`, compiled for 1- and 2-chunk videos."""
  return []


@pytest.fixture(scope="module")
def generated(config, model_def, params, text, autoregressive_chain):
  """generate() for every method, seed 0, LONG_CHUNKS chunks."""
  original = sampler.sample_autoregressive

  def spy(chain, noise, text, **kwargs):
    autoregressive_chain.append(chain)
    return original(chain, noise, text, **kwargs)

  out = {}
  for method in sampler.METHODS:
    sampler.sample_autoregressive = spy
    try:
      out[method] = np.asarray(sampling.generate(config, model_def, params, text, jax.random.key(0), method=method,
                                                 num_chunks=LONG_CHUNKS))
    finally:
      sampler.sample_autoregressive = original
  assert len(autoregressive_chain) == 1
  return out


@pytest.mark.parametrize("method", sampler.METHODS)
def test_every_method_samples_long_videos(config, generated, method):
  h, w, c = config_lib.latent_shape(config)
  latents = generated[method]
  assert latents.shape == (len(PROMPTS), LONG_CHUNKS, config.chunking.chunk_frames, h, w, c)
  assert np.all(np.isfinite(latents))
  assert latents.std() > 0.1


def test_methods_differ(generated):
  # Same seed, same initial noise (FreeNoise reschedules its own): different methods, different videos.
  methods = list(generated)
  for i, a in enumerate(methods):
    for b in methods[i + 1:]:
      assert np.abs(generated[a] - generated[b]).max() > 1e-3, (a, b)


def test_same_seed_same_samples_other_seed_other_samples(config, generated, model_def, params, text):
  # no_global: the cheapest compile; the seed handling is the same for every parallel method.
  again = np.asarray(sampling.generate(config, model_def, params, text, jax.random.key(0), method="no_global",
                                       num_chunks=LONG_CHUNKS))
  np.testing.assert_array_equal(again, generated["no_global"])
  other = np.asarray(sampling.generate(config, model_def, params, text, jax.random.key(1), method="no_global",
                                       num_chunks=LONG_CHUNKS))
  assert np.abs(other - generated["no_global"]).max() > 0.1


# ----------------------------------------------------------------------------------------------
# The autoregressive baseline: N sequential chains, each with the previous chunk given clean.

def test_autoregressive_runs_one_chain_per_chunk_on_clean_context(config, generated, autoregressive_chain, text):
  chain = autoregressive_chain[0]
  calls = []

  def counting_chain(z, tx, x0, mask):
    out = chain(z, tx, x0, mask)
    calls.append(dict(noise=np.asarray(z), clean_x0=np.asarray(x0), clean_mask=np.asarray(mask),
                      out=np.asarray(out)))
    return out

  noise = latent_noise(config, 0, LONG_CHUNKS)   # what generate() started from
  result = np.asarray(sampler.sample_autoregressive(counting_chain, noise, text))
  np.testing.assert_array_equal(result, generated["autoregressive"])
  noise = np.asarray(noise)
  f = config.chunking.chunk_frames
  assert len(calls) == LONG_CHUNKS                               # N sequential chains
  first = calls[0]
  assert first["noise"].shape[1] == 1 and not first["clean_mask"].any()
  np.testing.assert_array_equal(first["noise"][:, 0], noise[:, 0])
  np.testing.assert_array_equal(result[:, 0], first["out"][:, 0])
  for i in range(1, LONG_CHUNKS):
    call, previous = calls[i], calls[i - 1]
    mask = call["clean_mask"]
    assert mask.shape == (len(PROMPTS), 2, f)
    assert mask[:, 0].all() and not mask[:, 1].any()            # the previous chunk, given clean
    np.testing.assert_array_equal(call["clean_x0"][:, 0], previous["out"][:, -1])
    np.testing.assert_array_equal(call["noise"][:, 1], noise[:, i])
    np.testing.assert_array_equal(call["out"][:, 0], call["clean_x0"][:, 0])   # held clean throughout
    np.testing.assert_array_equal(result[:, i], call["out"][:, 1])
  # The clean chunk is context that matters: another previous chunk gives another next chunk.
  last = calls[-1]
  other = chain(last["noise"], text, last["clean_x0"] * np.array([-1.0, 1.0])[None, :, None, None, None, None],
                last["clean_mask"])
  assert np.abs(np.asarray(other[:, 1]) - last["out"][:, 1]).max() > 1e-3


# ----------------------------------------------------------------------------------------------
# Global tokens carry information between chunks, and the windows use them.

@pytest.fixture(scope="module")
def noisy_inputs(config):
  x = latent_noise(config, 3, LONG_CHUNKS)   # the reference's shapes: `predict` is compiled once
  t = jnp.full(x.shape[:3], 0.7)
  return x, t, np.zeros((x.shape[0],), bool)


def test_global_tokens_are_used_and_connect_distant_chunks(config, model_def, params, text, predict, noisy_inputs):
  x, t, drop = noisy_inputs
  L = config.chunking.inference_context_frames
  base = np.asarray(predict(params, x, t, text, drop, x))
  model = model_def.bind(params)
  assert model.vin is not None
  # (The reference sampler above runs on `predict`, so its tokens are the model's own: it matches the scan.)

  # Another video's global tokens change the predictions of every chunk.
  swapped = np.asarray(predict(params, x, t, text, drop, latent_noise(config, 4, x.shape[1])))
  for chunk in range(x.shape[1]):
    assert np.abs(swapped[:, chunk, L:] - base[:, chunk, L:]).max() > 1e-3, chunk

  # Changing the last chunk reaches chunk 0 through the global tokens only: with the tokens held fixed,
  # window 0 sees its own chunk alone and does not change.
  x_changed = x.at[:, -1].set(-x[:, -1])
  changed = np.asarray(predict(params, x_changed, t, text, drop, x_changed))
  assert np.abs(changed[:, 0] - base[:, 0]).max() > 1e-3
  changed_fixed_tokens = np.asarray(predict(params, x_changed, t, text, drop, x))
  np.testing.assert_allclose(changed_fixed_tokens[:, 0], base[:, 0], atol=1e-6)
  assert np.abs(changed_fixed_tokens[:, -1] - base[:, -1]).max() > 1e-3


def test_no_global_differs_from_vin(generated):
  assert np.abs(generated["no_global"] - generated["vin"]).max() > 1e-3


def test_global_guidance_extrapolates_from_the_no_token_branch(config, model_def, params, text, predict,
                                                               noisy_inputs):
  """sampling.global_guidance_scale (beyond the paper) with text guidance: the one batched four-branch call
  equals p(-G) + s_global (p(G) - p(-G)), each text-guided, from separate model calls, on the first
  ceil(global_guidance_fraction * num_steps) steps, and p(G) after them; the baselines run without it."""
  x, t, drop = noisy_inputs
  s_text, s_global = 2.0, 3.0
  settings = dataclasses.replace(sampler.SamplerSettings.from_config(config), guidance_scale=s_text,
                                 global_guidance_scale=s_global, num_steps=4, global_guidance_fraction=0.3)
  assert sampler.global_guidance_steps(settings) == 2
  assert sampler.global_guidance_steps(dataclasses.replace(settings, global_guidance_fraction=0.5)) == 2
  assert sampler.global_guidance_steps(dataclasses.replace(settings, global_guidance_fraction=1.0)) == 4
  at_step = jax.jit(lambda p, step: sampler.guided_prediction(model_def.bind(p), x, t, text, settings, step=step))
  got = np.asarray(at_step(params, 1))     # the last guided step
  L = settings.context_frames
  no_tokens = jax.jit(lambda p, d: model_def.bind(p)(x, t, text, context_frames=L, drop_text_B=d,
                                                     use_global=False)[0])
  text_guided = lambda cond, uncond: uncond + s_text * (np.asarray(cond, np.float64) - uncond)
  with_g = text_guided(predict(params, x, t, text, drop, x), np.asarray(predict(params, x, t, text, ~drop, x)))
  without = text_guided(no_tokens(params, drop), np.asarray(no_tokens(params, ~drop)))
  np.testing.assert_allclose(got, without + s_global * (with_g - without), atol=1e-4, rtol=1e-4)
  assert np.abs(got - with_g).max() > 1e-3
  np.testing.assert_allclose(np.asarray(at_step(params, 2)), with_g, atol=1e-4, rtol=1e-4)   # past the interval

  guided = copy.deepcopy(config)
  guided.sampling.global_guidance_scale = s_global
  assert sampler.SamplerSettings.for_method(guided, "vin").global_guidance_scale == s_global
  for method in ("autoregressive", "freenoise", "no_global", "full"):
    assert not sampler.guides_global_tokens(sampler.SamplerSettings.for_method(guided, method)), method


# ----------------------------------------------------------------------------------------------
# FreeNoise.

@pytest.mark.parametrize("num_frames,window,stride", [(20, 4, 2), (20, 4, 4), (20, 4, 3), (4, 4, 2), (23, 8, 5),
                                                      (40, 20, 4), (9, 4, 1)])
def test_freenoise_windows_cover_every_frame(num_frames, window, stride):
  starts = sampler.freenoise_windows(num_frames, window, stride)
  covered = np.zeros(num_frames, int)
  for s in starts:
    assert 0 <= s <= num_frames - window
    covered[s:s + window] += 1
  assert covered.min() >= 1
  assert starts[0] == 0 and starts[-1] == num_frames - window
  assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= stride)


@pytest.mark.parametrize("window,stride", [(4, 5), (4, 0)])
def test_freenoise_windows_reject_gaps(window, stride):
  with pytest.raises(ValueError, match="freenoise_stride"):
    sampler.freenoise_windows(20, window, stride)


def test_rescheduled_noise_is_permuted_first_chunk(config):
  h, w, c = config_lib.latent_shape(config)
  shape = (len(PROMPTS), LONG_CHUNKS, config.chunking.chunk_frames, h, w, c)
  noise = np.asarray(sampler.initial_noise(jax.random.key(0), shape, rescheduled=True))
  assert noise.shape == shape
  first = noise[:, 0]
  # Chunk 0 is the independent draw's chunk 0, so the two noise kinds pair up video by video.
  np.testing.assert_array_equal(first, np.asarray(sampler.initial_noise(jax.random.key(0), shape))[:, 0])
  assert not np.array_equal(noise[:, 1], noise[:, 2])
  for b in range(shape[0]):
    flat_first = first[b].reshape(shape[2], -1)
    for n in range(1, shape[1]):
      flat = noise[b, n].reshape(shape[2], -1)
      # Each frame of chunk n is one frame of chunk 0, each used exactly once.
      match = [int(np.flatnonzero(np.all(flat_first == frame, axis=1))[0]) for frame in flat]
      assert sorted(match) == list(range(shape[2]))
  # Not all the identity: the rescheduling shuffles.
  assert any(not np.array_equal(noise[:, n], first) for n in range(1, shape[1]))


# ----------------------------------------------------------------------------------------------
# Given (clean) frames: image-to-video and the ablation's pinned first frame, for every method.

def _first_frame_given(config, seed=5):
  h, w, c = config_lib.latent_shape(config)
  shape = (len(PROMPTS), LONG_CHUNKS, config.chunking.chunk_frames, h, w, c)
  frame = 2.0 * jax.random.normal(jax.random.key(seed), (len(PROMPTS), h, w, c))
  return jnp.zeros(shape).at[:, 0, 0].set(frame), jnp.zeros(shape[:3], bool).at[:, 0, 0].set(True)


@pytest.mark.parametrize("method", sampler.METHODS)
def test_given_first_frame_is_held_and_steers_the_video(config, model_def, params, text, generated, method):
  clean_x0, clean_mask = _first_frame_given(config)
  out = np.asarray(sampling.generate(config, model_def, params, text, jax.random.key(0), method=method,
                                     num_chunks=LONG_CHUNKS, clean_x0=clean_x0, clean_mask=clean_mask))
  np.testing.assert_array_equal(out[:, 0, 0], np.asarray(clean_x0[:, 0, 0]))
  # The rest of the first chunk sees the given frame (same noise otherwise), so it changes.
  assert np.abs(out[:, 0, 1:] - generated[method][:, 0, 1:]).max() > 1e-4


def test_autoregressive_refuses_given_frames_after_the_first_chunk(config, model_def, params, text):
  clean_x0, clean_mask = _first_frame_given(config)
  with pytest.raises(ValueError, match="first chunk only"):
    sampling.generate(config, model_def, params, text, jax.random.key(0), method="autoregressive",
                      num_chunks=LONG_CHUNKS, clean_x0=clean_x0, clean_mask=clean_mask.at[:, 1, 0].set(True))


def test_given_frames_need_both_arrays(config, model_def, params, text):
  clean_x0, _ = _first_frame_given(config)
  with pytest.raises(ValueError, match="both"):
    sampling.generate(config, model_def, params, text, jax.random.key(0), num_chunks=LONG_CHUNKS,
                      clean_x0=clean_x0)


@pytest.mark.parametrize("rescheduled", [False, True])
def test_initial_noise_is_the_same_however_rows_and_chunks_are_split(rescheduled):
  shape = (4, 6, 3, 2, 2, 1)
  rng = jax.random.key(3)
  whole = np.asarray(sampler.initial_noise(rng, shape, rescheduled=rescheduled))
  for rows, chunks in ((slice(0, 2), slice(0, 3)), (slice(2, 4), slice(3, 6)), (slice(1, 3), slice(2, 5))):
    part_shape = (rows.stop - rows.start, chunks.stop - chunks.start) + shape[2:]
    part = sampler.initial_noise(rng, part_shape, row_offset=rows.start, chunk_offset=chunks.start,
                                 rescheduled=rescheduled)
    np.testing.assert_array_equal(np.asarray(part), whole[rows, chunks])


def test_rescheduled_noise_reaches_the_sampler(config, model_def, params, text):
  # sampling.noise="rescheduled" changes every chunk but the first one's starting noise, hence the samples.
  resched = config_lib.override(copy.deepcopy(config), {"sampling.noise": "rescheduled"})
  a = sampling.generate(config, model_def, params, text, jax.random.key(0), num_chunks=LONG_CHUNKS)
  b = sampling.generate(resched, model_def, params, text, jax.random.key(0), num_chunks=LONG_CHUNKS)
  assert float(jnp.abs(a[:, 1:] - b[:, 1:]).max()) > 1e-3


def test_a_full_attention_model_samples_its_own_methods_and_names_the_others(config):
  """A model trained with model.window_mode='full' has no chunk windows: its default method is `full`, the
  autoregressive baseline runs (previous chunk, chunk) pairs as one window, and `vin` fails with the method
  to pass (it crashed with 'mul got incompatible shapes')."""
  full_config = copy.deepcopy(config)
  full_config.model.window_mode = "full"
  full_config.sampling.num_steps = 2
  assert sampler.default_method(full_config) == "full" and sampler.default_method(config) == config.sampling.method
  model_def = ModelDef(full_config)
  params = model_def.init(jax.random.key(0))
  text = jnp.asarray(tokenizer.tokenize(PROMPTS, full_config.text.max_length))
  for method in ("vin", "no_global"):
    with pytest.raises(ValueError, match="--method=full"):
      sampling.generate(full_config, model_def, params, text, jax.random.key(0), method=method, num_chunks=2)
  h, w, c = config_lib.latent_shape(full_config)
  for method in ("full", "autoregressive"):
    latents = sampling.generate(full_config, model_def, params, text, jax.random.key(0), method=method,
                                num_chunks=2)
    assert latents.shape == (len(PROMPTS), 2, full_config.chunking.chunk_frames, h, w, c)
    assert np.all(np.isfinite(np.asarray(latents)))
