"""The analytic FLOPs model of one sampling step against XLA's count of the compiled step (tiny:test shapes),
and the scaling claims it supports at the paper's config (analytic only)."""
import pytest

from vin_jax import config as config_lib
from vin_jax.evaluation import flops
from tests.conftest import REPO

LENGTHS = (2, 5)            # chunks of 4 latent frames: 8 and 20 latent frames
PAPER_FRAMES = (40, 80, 160, 320)


@pytest.fixture(scope="module")
def config():
  return config_lib.load_config_file(REPO / "configs" / "tiny.py", "test")


@pytest.fixture(scope="module")
def paper():
  c = config_lib.load_config_file(REPO / "configs" / "paper.py")
  c.data.video_dir = "/unused"      # validate wants a folder for video_folder data; nothing reads it here
  c.data.latents = True             # nor VAE weights: training on precomputed latents
  config_lib.validate(c)
  return c


@pytest.fixture(scope="module")
def xla_flops(config):
  """(method, chunks) -> XLA FLOPs; the autoregressive chains (1 and 2 chunks) are compiled once."""
  cache = {}

  def get(method, num_chunks):
    if method == "autoregressive":
      for k in (1, 2):
        if ("chain", k) not in cache:
          cache[("chain", k)] = flops.xla_compiled_cost(config, method, k)
      return flops.combine_autoregressive(cache[("chain", 1)], cache[("chain", 2)], num_chunks)["flops"]
    if (method, num_chunks) not in cache:
      cache[(method, num_chunks)] = flops.xla_sampling_step_cost(config, method, num_chunks)
    return cache[(method, num_chunks)]["flops"]

  return get


@pytest.mark.parametrize("num_chunks", LENGTHS)
@pytest.mark.parametrize("method", flops.METHODS)
def test_analytic_flops_within_10_percent_of_xla(config, xla_flops, method, num_chunks):
  analytic = flops.sampling_step_flops(config, method, num_chunks)
  measured = xla_flops(method, num_chunks)
  assert analytic["total"] == pytest.approx(measured, rel=0.10), (method, num_chunks, analytic, measured)
  # At width 32 the elementwise ops matter: matmuls alone would miss XLA's count by more than 10%.
  assert analytic["matmul"] < 0.93 * measured


def test_guidance_doubles_the_model_and_matches_xla(config):
  guided = config.copy_and_resolve_references()
  guided.sampling.guidance_scale = 3.0
  plain, doubled = (flops.sampling_step_flops(c, "vin", 2) for c in (config, guided))
  for part in ("text", "vin", "dit"):   # (the VIN's keyframe positions are embedded once for all rows)
    assert doubled[part] == pytest.approx(2 * plain[part], rel=0.01)
  measured = flops.xla_sampling_step_cost(guided, "vin", 2)
  assert doubled["total"] == pytest.approx(measured["flops"], rel=0.10)
  assert measured["memory_bytes"] > 0


def _shared(config):
  shared = config.copy_and_resolve_references()
  shared.chunking.context_mode, shared.sampling.fusion = "shared", "none"
  return shared


@pytest.mark.parametrize("num_chunks", LENGTHS)
def test_shared_context_flops_match_xla_and_undercut_recompute(config, xla_flops, num_chunks):
  shared = _shared(config)
  analytic = flops.sampling_step_flops(shared, "vin", num_chunks)
  measured = flops.xla_sampling_step_cost(shared, "vin", num_chunks)["flops"]
  assert analytic["total"] == pytest.approx(measured, rel=0.10), (num_chunks, analytic, measured)
  assert measured < 0.9 * xla_flops("vin", num_chunks)   # no context frame is computed twice


@pytest.mark.parametrize("overrides, method", [
    ({"model.global_tokens_in_dit": "keys_values"}, "vin"),
    ({"model.attention_layout": "factorised"}, "vin"),
    ({"model.attention_layout": "factorised"}, "full"),
    ({"model.attention_layout": "factorised", "model.global_tokens_in_dit": "keys_values",
      "chunking.context_mode": "shared", "sampling.fusion": "none"}, "vin"),
])
def test_layout_options_flops_match_xla(config, overrides, method):
  """The factorised layout and keys_values global tokens (model/factorised.py, DiTBlock) in the analytic model."""
  variant = config_lib.override(config.copy_and_resolve_references(), overrides)
  analytic = flops.sampling_step_flops(variant, method, LENGTHS[-1])["total"]
  measured = flops.xla_sampling_step_cost(variant, method, LENGTHS[-1])["flops"]
  assert analytic == pytest.approx(measured, rel=0.10), (overrides, method, analytic, measured)


def test_paper_keys_values_global_tokens_cut_shared_vin_flops(paper):
  """Not updating the 512 global tokens in the 28 blocks of every window saves their queries, text attention and
  MLP; factorised attention is quadratic in tokens per frame, not per window."""
  shared = _shared(paper)
  kv = config_lib.override(shared.copy_and_resolve_references(), {"model.global_tokens_in_dit": "keys_values"})
  fact = config_lib.override(paper.copy_and_resolve_references(), {"model.attention_layout": "factorised"})
  for f in PAPER_FRAMES:
    assert (flops.sampling_step_flops(kv, "vin", f // 20)["total"]
            < 0.95 * flops.sampling_step_flops(shared, "vin", f // 20)["total"])
  full = [flops.sampling_step_flops(fact, "full", f // 20)["total"] / f for f in PAPER_FRAMES]
  assert max(full) / min(full) < 1.10, full   # per-frame cost of a factorised full window: flat in length


def test_paper_shared_context_cuts_vin_flops(paper):
  shared = _shared(paper)
  for f in PAPER_FRAMES:
    recompute = flops.sampling_step_flops(paper, "vin", f // 20)["total"]
    assert flops.sampling_step_flops(shared, "vin", f // 20)["total"] < 0.7 * recompute


def test_autoregressive_is_a_one_chunk_chain_then_two_chunk_chains(config):
  """As sample_autoregressive runs it: chunk 0 alone, every later chunk as the 2nd chunk of a VIN video."""
  for n in LENGTHS:
    ar = flops.sampling_step_flops(config, "autoregressive", n)
    one, two = (flops.sampling_step_flops(config, "vin", k) for k in (1, 2))
    assert ar["total"] == pytest.approx(one["total"] + (n - 1) * two["total"])


def test_paper_vin_over_full_falls_with_length(paper):
  ratios = [flops.sampling_step_flops(paper, "vin", f // 20)["total"]
            / flops.sampling_step_flops(paper, "full", f // 20)["total"] for f in PAPER_FRAMES]
  assert all(a > b for a, b in zip(ratios, ratios[1:])), ratios
  assert ratios[-1] < 0.5


def test_paper_vin_flops_per_frame_flat_full_grows(paper):
  vin = [flops.flops_per_frame(paper, "vin", f // 20) for f in PAPER_FRAMES]
  assert max(vin) / min(vin) < 1.10, vin
  full = [flops.flops_per_frame(paper, "full", f // 20) for f in PAPER_FRAMES]
  assert full[-1] > 3 * full[0]     # attention over the whole video: per-frame cost grows with length
  parts = flops.sampling_step_flops(paper, "vin", 16)
  assert parts["total"] == pytest.approx(sum(parts[k] for k in ("text", "vin", "dit", "update")))
  assert parts["num_frames"] == 320


def test_unknown_method(config):
  with pytest.raises(ValueError, match="method='freenoise'"):
    flops.sampling_step_flops(config, "freenoise", 2)


def test_depth_extrapolation_matches_a_direct_compile_and_isolates_the_blocks(config):
  """`xla_depth_extrapolated` (how cost.py counts the paper's own dimensions) against a direct compile at depth
  3; its 'dit_blocks' part against the analytic model's blocks (window_dit at depth 3 less at depth 0)."""
  deep = config.copy_and_resolve_references()
  deep.model.depth, deep.model.scan_layers, deep.model.attention = 3, False, "einsum"
  extrapolated = flops.xla_depth_extrapolated(deep, "vin", 2)
  direct = flops.xla_sampling_step_cost(deep, "vin", 2)["flops"]
  assert extrapolated["total"] == pytest.approx(direct, rel=1e-3)
  rows, context = 2 if deep.sampling.guidance_scale != 1.0 else 1, deep.chunking.inference_context_frames
  window = context + deep.chunking.chunk_frames
  blocks = []
  for depth in (3, 0):
    c = deep.copy_and_resolve_references()
    c.model.depth = depth
    blocks.append(flops.window_dit(c, rows, 2, window, global_tokens=True, context_frames=context).total)
  analytic_blocks = blocks[0] - blocks[1]
  assert extrapolated["dit_blocks"] == pytest.approx(analytic_blocks, rel=0.10)
  assert extrapolated["dit_blocks"] < 0.95 * extrapolated["total"]      # the VIN, text and update are left out
