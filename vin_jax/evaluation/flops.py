"""FLOPs of one sampling step: an analytic model of the code, and XLA's own count to check it against.

One sampling step = one denoiser evaluation of the whole video (all windows, the VIN, the text encoder) plus
the fusion and scheduler update, for `batch` videos (doubled when classifier-free guidance is on, because
`guided_prediction` runs the model on 2B rows). Methods:
- `vin`: text encoder; VIN (keyframe embedding, G global tokens cross-attending to every keyframe token,
  processor blocks); DiT over N windows of L + F latent frames, each joined with the G global tokens.
- `no_global`: the same windows without the VIN and without global tokens.
- `full`: one window over all T = N * F latent frames, no context, no global tokens.
- `autoregressive`: what `sampler.sample_autoregressive` runs: a 1-chunk chain for chunk 0, then N - 1
  chains of a 2-chunk VIN video (the previous chunk held clean). Its "step" is one step of every chain,
  so that `steps * step_flops` is the cost of the whole sample, as for the parallel methods.

What is counted, in XLA's `HloCostAnalysis` convention (so that the two numbers can be compared):
- matmuls: 2 * M * N * K for every Linear (projections of text keys/values are counted once per window:
  the code repeats the text over windows) and for the attention score and value einsums, over every key
  the code computes, masked padding included (window 0's invalid context, text padding);
- elementwise: 1 FLOP per output element of each arithmetic op, 1 per input element of a reduction:
  bias adds, RMS norms, tanh-GELU = 8, SiLU = 4, softmax = 5 per logit (+2 with a key mask that is not a
  compile-time all-true constant), RoPE = 3, AdaLN modulation and gates, residuals, fusion and the
  scheduler update. Transcendentals (exp, tanh, rsqrt, sin) are not FLOPs, as in XLA. These terms are
  ~11-13% of the total at width 32 and ~1.3% at the paper's config (mostly softmax over 8k-token
  windows);
  dtype converts (bf16) and per-row scalars are left out.
Each op is counted once. XLA's number can be higher by a few percent at small shapes, because its fusion
pass duplicates cheap producers (a bias add feeding an RMS norm, a softmax subtract) into several
consumers and counts them each time: the model reads 2-4% below XLA at width 32, 0-2.5% at 64-96.
`xla_sampling_step_cost` compiles one step (`sample_parallel` with num_steps=1, exactly what `generate`
jits, so the scan body is counted once and exactly) and returns XLA's FLOPs and memory.
"""
from __future__ import annotations

import dataclasses
import time

from vin_jax import config as config_lib

METHODS = ("vin", "no_global", "full", "autoregressive")
GELU, SILU = 8, 4                      # XLA FLOPs per element (tanh approximation; x * logistic(x))
SOFTMAX, SOFTMAX_MASK = 5, 2           # per logit: scale, max, 2 subtracts, sum; 2 mask selects
UPDATE, SKIP, FUSION = 8, 2, 4         # per latent element: hold + scheduler step; input skip; fusion


@dataclasses.dataclass(frozen=True)
class Cost:
  """FLOPs split into matmul (2*M*N*K) and elementwise (XLA's count of arithmetic and reductions)."""
  matmul: float = 0.0
  elementwise: float = 0.0

  def __add__(self, other: "Cost") -> "Cost":
    return Cost(self.matmul + other.matmul, self.elementwise + other.elementwise)

  def __mul__(self, k: float) -> "Cost":
    return Cost(self.matmul * k, self.elementwise * k)

  __rmul__ = __mul__

  @property
  def total(self) -> float:
    return self.matmul + self.elementwise


def total(costs) -> Cost:
  return sum(costs, Cost())


# ----------------------------------------------------------------------------------------------
# Layers (vin_jax.model.layers). `n` is a token count (all rows), `d` a width.

def linear(n, d_in, d_out) -> Cost:
  return Cost(2 * n * d_in * d_out, n * d_out)                  # + bias


def rms_norm(n, d, scale=True) -> Cost:
  return Cost(0, (4 if scale else 3) * n * d + 2 * n)          # x*x, mean, x*rsqrt (, * scale)


def attention_core(rows, q, k, heads, head_dim, masked) -> Cost:
  """The einsum + logsumexp attention: rows x heads x q x k logits."""
  logits = rows * heads * q * k
  return Cost(4 * logits * head_dim, (SOFTMAX + SOFTMAX_MASK * masked) * logits + 2 * rows * heads * q)


def attention(rows, q, width, heads, *, k=None, kv_width=None, rope_tokens=0, masked=False,
              shared_keys=0, keys_only=0, first_rows=0) -> Cost:
  """layers.Attention: self-attention (k None) over q tokens, or cross-attention from q to k tokens.
  `shared_keys`: keys and values per row read from the previous chunk (context_mode="shared"): re-rotated,
  not projected, and attended by all rows but the `first_rows` (the videos' first chunks, which have no
  neighbour: `LocalContext.attend`). `keys_only`: self-attention keys and values that are not queries."""
  k = q + keys_only if k is None else k
  kv_width = kv_width or width
  return total([linear(rows * q, width, width), rms_norm(rows * q * heads, width // heads),
                2 * linear(rows * k, kv_width, width), rms_norm(rows * k * heads, width // heads),
                Cost(0, 2 * 3 * rows * rope_tokens * width + 3 * rows * shared_keys * width),
                attention_core(rows - first_rows, q, k + shared_keys, heads, width // heads, masked),
                attention_core(first_rows, q, k, heads, width // heads, masked),
                linear(rows * q, width, width)])


def mlp(n, d, ratio) -> Cost:
  hidden = int(d * ratio)
  return linear(n, d, hidden) + Cost(0, GELU * n * hidden) + linear(n, hidden, d)


def timestep_embedder(n, d) -> Cost:
  return total([Cost(0, 129 * n), linear(n, 256, d), Cost(0, SILU * n * d), linear(n, d, d), rms_norm(n, d)])


def adaln(n, d, mods) -> Cost:
  return Cost(0, SILU * n * d) + linear(n, d, mods * d)


def dit_block(rows, segments, width, heads, ratio, text_len, text_width, *, masked, rope_tokens=0,
              shared_keys=0, keys_only=0, factorised=False, first_rows=0) -> Cost:
  """layers.DiTBlock on `rows` rows of segments [(groups T, tokens per group S)]: joint self-attention,
  text cross-attention, MLP, with sandwich norms and AdaLN modulation per group.
  `keys_only`: tokens that are keys and values only (model.global_tokens_in_dit="keys_values"): modulated and
  projected, not queried or updated. `factorised` (model.attention_layout): the first segment is the window,
  whose self-attention is spatial (per frame, + the other tokens as keys) then temporal (`factorised_attention`)."""
  n = rows * sum(t * s for t, s in segments)                   # all query tokens
  groups = rows * sum(t for t, _ in segments)
  q = n // rows
  modulate = rms_norm(n, width, scale=False) + Cost(0, 2 * n * width + groups * width)
  gate = Cost(0, 2 * n * width)
  if factorised:
    self_attention = factorised_attention(rows, segments, width, heads, keys_only=keys_only, masked=masked,
                                          shared_keys=shared_keys)
  else:
    self_attention = attention(rows, q, width, heads, rope_tokens=rope_tokens, masked=masked,
                               shared_keys=shared_keys, keys_only=keys_only, first_rows=first_rows)
  return total([
      Cost(0, 6 * groups * width + 6 * rows * bool(keys_only) * width),   # per-block table + modulations
      modulate, rms_norm(rows * keys_only, width, scale=False) + Cost(0, 2 * rows * keys_only * width),
      self_attention, rms_norm(n, width), gate,
      rms_norm(n, width), attention(rows, q, width, heads, k=text_len, kv_width=text_width, masked=True),
      Cost(0, n * width),
      modulate, mlp(n, width, ratio), rms_norm(n, width), gate])


def factorised_attention(rows, segments, width, heads, *, keys_only, masked, shared_keys) -> Cost:
  """model/factorised.py's self-attention, after the shared modulation: spatial attention of each of the window's
  T frames (S queries; S + G keys, G = the other segments' tokens and `keys_only`), the G' query tokens of the
  other segments attending to everything, then the temporal attention of each of the S positions (T queries,
  T + shared_keys / S keys) with its own modulation, post norm and gate."""
  (t, s), others = segments[0], segments[1:]
  g_queries = sum(tg * sg for tg, sg in others)
  g = g_queries + keys_only
  n, dh = rows * t * s, width // heads
  spatial = total([linear(n + rows * g_queries, width, width), rms_norm((n + rows * g_queries) * heads, dh),
                   2 * linear(n + rows * g, width, width), rms_norm((n + rows * g) * heads, dh),
                   Cost(0, 2 * 3 * n * width),
                   attention_core(rows * t, s, s + g, heads, dh, masked),
                   attention_core(rows, g_queries, t * s + g + shared_keys, heads, dh, masked) if g_queries
                   else Cost(), Cost(0, 3 * rows * shared_keys * width * bool(g_queries)),
                   linear(n + rows * g_queries, width, width)])
  temporal = total([rms_norm(n, width, scale=False), Cost(0, 4 * n * width + 2 * rows * t * width),
                    linear(n, width, width), rms_norm(n * heads, dh), 2 * linear(n, width, width),
                    rms_norm(n * heads, dh), Cost(0, 2 * 3 * n * width + 3 * rows * shared_keys * width),
                    attention_core(rows * s, t, t + shared_keys // s, heads, dh, masked),
                    linear(n, width, width), rms_norm(n, width), Cost(0, 2 * n * width)])
  return spatial + temporal


# ----------------------------------------------------------------------------------------------
# Modules.

def text_encoder(config, rows) -> Cost:
  """vin_jax.text.encoder.TextEncoder on `rows` captions of text.max_length tokens."""
  t = config.text
  n = rows * t.max_length
  if t.encoder == "bytes":
    embed = Cost(0, 2 * n * t.width)
  else:
    embed = linear(n, t.precomputed_dim, t.width) + Cost(0, 2 * n * t.precomputed_dim)
  block = total([rms_norm(n, t.width), attention(rows, t.max_length, t.width, t.num_heads, masked=True),
                 Cost(0, n * t.width), rms_norm(n, t.width), mlp(n, t.width, 4.0), Cost(0, n * t.width)])
  return total([embed, t.depth * block, rms_norm(n, t.width)])


def _tokens_per_frame(config) -> int:
  h, w, _ = config_lib.latent_shape(config)
  p = config.model.patch_size
  return (h // p) * (w // p)


def keyframes_per_chunk(config) -> int:
  return -(-config.chunking.chunk_frames // config_lib.keyframe_stride(config))


def vin(config, rows, num_chunks) -> Cost:
  """vin_jax.model.vin.VideoInterfaceNetwork: [rows, N chunks] noisy video -> G global tokens."""
  v, t = config.vin, config.text
  d, g = v.width, v.num_global_tokens
  _, _, c = config_lib.latent_shape(config)
  p, s = config.model.patch_size, _tokens_per_frame(config)
  frames = num_chunks * keyframes_per_chunk(config)
  n_kf = rows * frames * s                                     # keyframe tokens
  embed = total([linear(n_kf, p * p * c, d), Cost(0, 3 * n_kf * d),          # + spatial, frame, time
                 linear(frames, d, d), timestep_embedder(rows * frames, d), rms_norm(n_kf, d)])
  encoder = total([rms_norm(rows * g, d), attention(rows, g, d, v.num_heads, k=frames * s),
                   Cost(0, rows * g * d), rms_norm(rows * g, d), mlp(rows * g, d, v.mlp_ratio),
                   Cost(0, rows * g * d)])
  processor = total([timestep_embedder(rows, d), adaln(rows, d, 6),
                     v.processor_depth * dit_block(rows, [(1, g)], d, v.num_heads, v.mlp_ratio, t.max_length,
                                                   t.width, masked=False),
                     rms_norm(rows * g, d)])
  return embed + encoder + processor


def window_dit(config, rows, num_windows, window_frames, *, global_tokens, context_frames,
               shared: bool = False, mask_ratio: float = 0.0) -> Cost:
  """vin_jax.model.dit.WindowDiT on rows * num_windows windows of `window_frames` latent frames.
  `shared`: the context_frames are read from the neighbour's keys and values (not in the window).
  `mask_ratio`: masked training's (train.mask_ratio, `model/masking.py`): only the kept tokens of the
  context and own parts enter the DiT, as one-token modulation groups (a training-step count: sampling never
  masks; not checked against XLA, whose training-step count the tests compare at 0.61x for 0.5).

  The key mask is a compile-time constant; with no context frames it is all true and XLA drops it (so in
  joint shared mode, where the first chunks attend without the halo, no key is masked). The count is the
  unsharded one: split over 'chunk' devices the first chunk's halo stays masked.
  """
  m, t = config.model, config.text
  d, pt = m.width, m.temporal_patch
  _, _, c = config_lib.latent_shape(config)
  s, tp = _tokens_per_frame(config), window_frames // pt
  wr = rows * num_windows                                       # window rows
  patch_dim = pt * m.patch_size ** 2 * c
  if mask_ratio > 0:
    from vin_jax.model import masking
    lp = (0 if shared else context_frames) // pt
    kept = masking.kept(lp * s, mask_ratio) + masking.kept((tp - lp) * s, mask_ratio)
    segments, rope_tokens, n = [(kept, 1)], kept, wr * kept
  else:
    segments, rope_tokens, n = [(tp, s)], tp * s, wr * tp * s
  cost = total([linear(n, patch_dim, d), timestep_embedder(wr * tp, d), adaln(wr * tp, d, 6)])
  keys_only = 0
  if global_tokens:
    g = config.vin.num_global_tokens
    cost += total([linear(wr * g, config.vin.width, d), timestep_embedder(wr, d), adaln(wr, d, 6)])
    if m.get("global_tokens_in_dit", "joint") == "keys_values":
      keys_only = g
    else:
      segments.append((1, g))
  factorised = m.get("attention_layout", "joint") == "factorised"
  # Joint shared attention splits off the first chunks (`LocalContext.attend`): no key is masked.
  split_first = shared and context_frames > 0 and not factorised
  cost += m.depth * dit_block(wr, segments, d, m.num_heads, m.mlp_ratio, t.max_length, t.width,
                              masked=(context_frames > 0 and not split_first) or mask_ratio > 0,
                              rope_tokens=rope_tokens, shared_keys=context_frames // pt * s if shared else 0,
                              keys_only=keys_only, factorised=factorised, first_rows=rows if split_first else 0)
  return cost + total([linear(wr * tp, d, 2 * d), rms_norm(n, d, scale=False), Cost(0, 2 * n * d),
                       linear(n, d, patch_dim)])


# ----------------------------------------------------------------------------------------------
# One sampling step.

def _parallel_step(config, batch, rows, num_chunks, *, full, use_global) -> dict[str, Cost]:
  h, w, c = config_lib.latent_shape(config)
  f = config.chunking.chunk_frames
  frame = h * w * c
  full = full or config.model.window_mode == "full"          # a full-window model: every method is one window
  context = 0 if full else config.chunking.inference_context_frames
  use_vin = use_global and not full and config.vin.enabled
  shared = not full and config.chunking.get("context_mode", "recompute") == "shared"
  recomputed = 0 if shared else context                        # context frames inside each window
  num_windows, window_frames = (1, num_chunks * f) if full else (num_chunks, recomputed + f)
  video = batch * num_chunks * f * frame
  update = Cost(0, UPDATE * video + SKIP * rows * num_windows * window_frames * frame
                + FUSION * batch * num_chunks * recomputed * frame)
  if rows > batch:
    update += Cost(0, 3 * video)                                # u + w * (c - u)
  dit = window_dit(config, rows, num_windows, window_frames, global_tokens=use_vin, context_frames=context,
                   shared=shared)
  return {"text": text_encoder(config, rows), "vin": vin(config, rows, num_chunks) if use_vin else Cost(),
          "dit": dit, "update": update}


def step_costs(config, method: str, num_chunks: int, *, batch: int = 1) -> dict[str, Cost]:
  """{part: Cost} for one sampling step of `method` on a video of `num_chunks` chunks."""
  if method not in METHODS:
    raise ValueError(f"method={method!r} must be one of {METHODS}")
  rows = batch * (2 if config.sampling.guidance_scale != 1.0 else 1)
  if method == "autoregressive":
    first = _parallel_step(config, batch, rows, 1, full=False, use_global=True)
    pair = _parallel_step(config, batch, rows, 2, full=False, use_global=True)
    return {k: first[k] + (num_chunks - 1) * pair[k] for k in first}
  return _parallel_step(config, batch, rows, num_chunks, full=method == "full", use_global=method == "vin")


def sampling_step_flops(config, method: str, num_chunks: int, *, batch: int = 1) -> dict[str, float]:
  """FLOPs of one sampling step: {'text', 'vin', 'dit', 'update', 'total', 'matmul', 'num_frames',
  'per_frame'}; `per_frame` is total / (num_chunks * chunk_frames) latent frames."""
  costs = step_costs(config, method, num_chunks, batch=batch)
  out = {k: c.total for k, c in costs.items()}
  out["total"] = sum(out.values())
  out["matmul"] = sum(c.matmul for c in costs.values())
  out["num_frames"] = num_chunks * config.chunking.chunk_frames
  out["per_frame"] = out["total"] / out["num_frames"]
  return out


def flops_per_frame(config, method: str, num_chunks: int, *, batch: int = 1) -> float:
  """FLOPs of one sampling step per latent frame of the video."""
  return sampling_step_flops(config, method, num_chunks, batch=batch)["per_frame"]


# ----------------------------------------------------------------------------------------------
# XLA's count.

def compile_sampler_step(config, method: str, num_chunks: int, *, batch: int = 1):
  """The jitted sampler of `generate` at num_steps=1, compiled for abstract params and inputs.

  For `autoregressive` this is one chain of `num_chunks` chunks (1 or 2). Returns (compiled, seconds).
  """
  import jax
  import jax.numpy as jnp

  from vin_jax.diffusion import sampler
  from vin_jax.diffusion.schedules import Schedule
  from vin_jax.model import ModelDef

  model_def = ModelDef(config)
  settings = sampler.SamplerSettings.for_method(config, method)
  settings = dataclasses.replace(settings, num_steps=1, t_alpha=0)     # fusion active, as in early steps
  schedule = Schedule.from_config(config)
  h, w, c = config_lib.latent_shape(config)
  video = jax.ShapeDtypeStruct((batch, num_chunks, config.chunking.chunk_frames, h, w, c), jnp.float32)
  t = config.text
  text = (jax.ShapeDtypeStruct((batch, t.max_length), jnp.int32) if t.encoder == "bytes" else
          jax.ShapeDtypeStruct((batch, t.max_length, t.precomputed_dim), jnp.float32))
  mask = jax.ShapeDtypeStruct(video.shape[:3], jnp.bool_)

  def chain(params, noise, text, clean_x0, clean_mask):
    return sampler.sample_parallel(model_def.bind(params), schedule, settings, noise, text, clean_x0=clean_x0,
                                   clean_mask_BxNxF=clean_mask)

  start = time.perf_counter()
  compiled = jax.jit(chain).lower(model_def.abstract_params(), video, text, video, mask).compile()
  return compiled, time.perf_counter() - start


def xla_compiled_cost(config, method: str, num_chunks: int, *, batch: int = 1) -> dict[str, float]:
  """XLA's {'flops', 'memory_bytes', 'compile_seconds'} of one compiled step of `sample_parallel` (for
  `autoregressive`: one chain of `num_chunks` chunks). Memory is argument + output + temp - alias bytes
  (CPU's peak_memory_in_bytes leaves out temporaries)."""
  compiled, seconds = compile_sampler_step(config, method, num_chunks, batch=batch)
  analysis = compiled.cost_analysis()
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  memory = compiled.memory_analysis()
  return {"flops": float(analysis.get("flops", 0.0)),
          "memory_bytes": float(memory.argument_size_in_bytes + memory.output_size_in_bytes
                                + memory.temp_size_in_bytes - memory.alias_size_in_bytes),
          "compile_seconds": seconds}


def combine_autoregressive(first: dict, pair: dict, num_chunks: int) -> dict[str, float]:
  """A step of every autoregressive chain from the 1-chunk and 2-chunk chains' costs: FLOPs add up
  (first + (N - 1) * pair); memory is the larger chain's (chains run one at a time; the finished chunks,
  N * F latent frames, are not included)."""
  pair = pair if num_chunks > 1 else {k: 0.0 for k in first}
  return {"flops": first["flops"] + (num_chunks - 1) * pair["flops"],
          "memory_bytes": max(first["memory_bytes"], pair["memory_bytes"]),
          "compile_seconds": first["compile_seconds"] + pair["compile_seconds"]}


def xla_sampling_step_cost(config, method: str, num_chunks: int, *, batch: int = 1) -> dict[str, float]:
  """XLA's {'flops', 'memory_bytes', 'compile_seconds'} for one sampling step, comparable to
  `sampling_step_flops(...)['total']` (autoregressive: see `combine_autoregressive`)."""
  if method != "autoregressive":
    return xla_compiled_cost(config, method, num_chunks, batch=batch)
  first = xla_compiled_cost(config, method, 1, batch=batch)
  pair = xla_compiled_cost(config, method, 2, batch=batch) if num_chunks > 1 else None
  return combine_autoregressive(first, pair, num_chunks)


def xla_depth_extrapolated(config, method: str, num_chunks: int, *, batch: int = 1) -> dict[str, float]:
  """XLA's FLOPs of one sampling step of the `model.depth`-block model, from unrolled compiles at depth 1 and 2
  with einsum attention: every block costs the same, so flops(depth) = f1 + (depth - 1) * (f2 - f1). Makes the
  paper's own dimensions countable on a CPU in seconds (a 28-block compile takes minutes per case).

  Returns {'total': the step, 'dit_blocks': depth * (f2 - f1), the DiT's blocks alone: every window's (or the
  whole video's) attention, MLP and modulation in every block, without the VIN network, the text encoder, the
  patch embedding, the final layer and the update}."""
  counts = []
  for depth in (1, 2):
    shallow = config.copy_and_resolve_references()
    shallow.model.depth, shallow.model.scan_layers, shallow.model.attention = depth, False, "einsum"
    counts.append(xla_sampling_step_cost(shallow, method, num_chunks, batch=batch)["flops"])
  per_block = counts[1] - counts[0]
  return {"total": counts[0] + (config.model.depth - 1) * per_block, "dit_blocks": config.model.depth * per_block}


def xla_depth_extrapolated_flops(config, method: str, num_chunks: int, *, batch: int = 1) -> float:
  """The 'total' of `xla_depth_extrapolated`."""
  return xla_depth_extrapolated(config, method, num_chunks, batch=batch)["total"]
