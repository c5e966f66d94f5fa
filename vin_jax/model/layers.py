"""Shared building blocks: the one attention function, 3D RoPE, sandwich-norm blocks, shared AdaLN-single.

Shape letters: B batch, L/Q/K token counts, H heads, Dh head dim, D width, T frames (or temporal patches),
S spatial tokens per frame.
"""
from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from vin_jax.parallel import mesh as mesh_lib

NEG_INF = -1e30
# model.attention: "einsum" materialises fp32 [B, H, Q, K] logits (the reference); "blocked" runs query blocks
# of BLOCK_QUERIES one at a time, each rematerialised in the backward pass, so logits never exist for all
# queries at once (memory-efficient attention, Rabe & Staats 2021; same numbers); "xla" / "cudnn" are
# jax.nn.dot_product_attention's implementations; "splash" is Pallas splash attention (`model/splash.py`: TPU
# flash attention; off TPU it runs in Pallas interpret mode, slowly, for tests).
# "auto": cudnn on GPU, splash on TPU, einsum on CPU.
ATTENTION_KINDS = ("auto", "einsum", "blocked", "xla", "cudnn", "splash")
BLOCK_QUERIES = 1024
# model.remat: "none"; "full" recomputes each block in the backward pass (keeps only its input); "dots"
# saves the outputs of matmuls without batch dimensions (the linear layers), recomputes the rest.
REMAT_POLICIES = ("none", "full", "dots")


def resolve_attention(kind: str, backend: str | None = None) -> str:
  """model.attention -> the implementation used on `backend` (default: this process's JAX backend)."""
  if kind not in ATTENTION_KINDS:
    raise ValueError(f"model.attention={kind!r} must be one of {ATTENTION_KINDS}")
  if kind != "auto":
    return kind
  return {"gpu": "cudnn", "tpu": "splash"}.get(backend or jax.default_backend(), "einsum")


def attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK=None, *, return_lse: bool = False,
              kind: str = "einsum"):
  """Softmax attention, softmax statistics in fp32. Returns out [B, Q, H, Dh] (and lse [B, Q, H] if asked).

  A query whose keys are all masked gets output 0 (and lse = -1e30). `kind` is a resolved model.attention.
  The lse path (the VIN's distributed keyframe combine) is einsum + logsumexp, not
  jax.nn.dot_product_attention, because that lse must carry a gradient.
  """
  if return_lse or kind == "einsum":
    return _einsum_attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK, return_lse=return_lse)
  if kind == "blocked":
    return _blocked_attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK)
  if kind == "splash":
    from vin_jax.model import splash   # Pallas: imported only when used
    return splash.splash_attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK)
  if kind in ("xla", "cudnn"):
    mask = None if key_mask_BxK is None else key_mask_BxK[:, None, None, :]
    out = jax.nn.dot_product_attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, mask=mask, implementation=kind)
    if key_mask_BxK is not None:  # all keys masked: 0, as the reference (dot_product_attention averages)
      out = jnp.where(jnp.any(key_mask_BxK, axis=-1)[:, None, None, None], out, 0).astype(out.dtype)
    return out
  raise ValueError(f"attention kind={kind!r} must be a resolved model.attention ({ATTENTION_KINDS[1:]})")


def _blocked_attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK):
  """Exact attention over query blocks of BLOCK_QUERIES (the last padded), one at a time, rematerialised."""
  b, q_len = q_BxQxHxDh.shape[:2]
  if q_len <= BLOCK_QUERIES:
    return _einsum_attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK)
  num_blocks = -(-q_len // BLOCK_QUERIES)
  pad = num_blocks * BLOCK_QUERIES - q_len
  q = jnp.pad(q_BxQxHxDh, ((0, 0), (0, pad), (0, 0), (0, 0)))
  blocks = jnp.moveaxis(q.reshape(b, num_blocks, BLOCK_QUERIES, *q.shape[2:]), 1, 0)   # [nb, B, bq, H, Dh]
  one_block = jax.checkpoint(lambda qb: _einsum_attention(qb, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK))
  out = jax.lax.map(one_block, blocks)                                                 # [nb, B, bq, H, Dh]
  return jnp.moveaxis(out, 0, 1).reshape(b, num_blocks * BLOCK_QUERIES, *out.shape[3:])[:, :q_len]


def _einsum_attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK=None, *, return_lse: bool = False):
  """The reference: fp32 logits [B, H, Q, K] with einsum + logsumexp (its lse carries a gradient)."""
  dtype = q_BxQxHxDh.dtype
  scale = 1.0 / math.sqrt(q_BxQxHxDh.shape[-1])
  logits_BxHxQxK = jnp.einsum("bqhd,bkhd->bhqk", q_BxQxHxDh.astype(jnp.float32),
                              k_BxKxHxDh.astype(jnp.float32)) * scale
  if key_mask_BxK is not None:
    logits_BxHxQxK = jnp.where(key_mask_BxK[:, None, None, :], logits_BxHxQxK, NEG_INF)
  lse_BxHxQ = jax.nn.logsumexp(logits_BxHxQxK, axis=-1)
  probs = jnp.exp(logits_BxHxQxK - lse_BxHxQ[..., None])
  if key_mask_BxK is not None:
    probs = jnp.where(key_mask_BxK[:, None, None, :], probs, 0.0)
  out_BxQxHxDh = jnp.einsum("bhqk,bkhd->bqhd", probs, v_BxKxHxDh.astype(jnp.float32)).astype(dtype)
  if return_lse:
    return out_BxQxHxDh, jnp.transpose(lse_BxHxQ, (0, 2, 1))
  return out_BxQxHxDh


def rope_angles(positions_LxA: jax.Array, head_dim: int, theta: float) -> jax.Array:
  """Angles [L, head_dim // 2] for A-dimensional positions (A=3: time, row, column); per-row positions
  [B, L, A] give per-row angles [B, L, head_dim // 2] (masked training's kept tokens).

  The head dim's rotation pairs are split over the axes: the spatial axes get pairs // (A) each and time
  gets the rest.
  """
  num_axes = positions_LxA.shape[-1]
  pairs = head_dim // 2
  per_spatial = pairs // num_axes
  sizes = [pairs - per_spatial * (num_axes - 1)] + [per_spatial] * (num_axes - 1)
  angles = []
  for axis, n in enumerate(sizes):
    if n == 0:
      continue
    freqs = theta ** (-jnp.arange(n, dtype=jnp.float32) / n)
    angles.append(positions_LxA[..., axis:axis + 1].astype(jnp.float32) * freqs)
  return jnp.concatenate(angles, axis=-1)


def apply_rope(x_BxLxHxDh: jax.Array, angles_LxP: jax.Array) -> jax.Array:
  """Rotates the first L' = angles.shape[-2] tokens of x (rotate-half convention); later tokens pass.
  Angles [L', P] are shared by all rows, [B, L', P] are per row."""
  n = angles_LxP.shape[-2]
  head, tail = x_BxLxHxDh[:, :n], x_BxLxHxDh[:, n:]
  pairs = angles_LxP.shape[-1]
  x1, x2 = head[..., :pairs].astype(jnp.float32), head[..., pairs:].astype(jnp.float32)
  cos, sin = jnp.cos(angles_LxP)[..., None, :], jnp.sin(angles_LxP)[..., None, :]   # [(B,) L', 1, P]
  rotated = jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x_BxLxHxDh.dtype)
  return jnp.concatenate([rotated, tail], axis=1)


class RMSNorm(nnx.Module):
  """RMS norm computed in fp32; `use_scale=False` for norms that AdaLN modulates."""

  def __init__(self, dim: int, *, use_scale: bool = True, eps: float = 1e-6):
    self.eps = eps
    self.scale = nnx.Param(jnp.ones((dim,), jnp.float32)) if use_scale else None

  def __call__(self, x):
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.scale is not None:
      y = y * self.scale[...]
    return y.astype(x.dtype)


def _linear(din, dout, rngs, *, zero=False, dtype=jnp.float32):
  init = nnx.initializers.zeros_init() if zero else nnx.initializers.xavier_uniform()
  return nnx.Linear(din, dout, kernel_init=init, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)


class Attention(nnx.Module):
  """Multi-head attention with QK-norm and optional RoPE on a prefix of the queries and keys."""

  def __init__(self, width: int, num_heads: int, *, kv_width: int | None = None, rngs: nnx.Rngs,
               dtype=jnp.float32, kind: str = "einsum"):
    self.num_heads = num_heads
    self.kind = resolve_attention(kind)
    self.head_dim = width // num_heads
    kv_width = kv_width or width
    self.q = _linear(width, width, rngs, dtype=dtype)
    self.k = _linear(kv_width, width, rngs, dtype=dtype)
    self.v = _linear(kv_width, width, rngs, dtype=dtype)
    self.out = _linear(width, width, rngs, dtype=dtype)
    self.q_norm = RMSNorm(self.head_dim)
    self.k_norm = RMSNorm(self.head_dim)

  def project_q(self, x_BxQxD, rope=None):
    q = self.q_norm(self.q(x_BxQxD).reshape(*x_BxQxD.shape[:2], self.num_heads, self.head_dim))
    return q if rope is None else apply_rope(q, rope)

  def project_kv(self, x_BxKxD, rope=None):
    shape = (*x_BxKxD.shape[:2], self.num_heads, self.head_dim)
    k = self.k_norm(self.k(x_BxKxD).reshape(shape))
    v = self.v(x_BxKxD).reshape(shape)
    return (k if rope is None else apply_rope(k, rope)), v

  def merge_heads(self, o_BxQxHxDh):
    return self.out(o_BxQxHxDh.reshape(*o_BxQxHxDh.shape[:2], -1))

  def __call__(self, x_BxQxD, context_BxKxD=None, *, key_mask_BxK=None, rope_angles_LxP=None,
               local_context=None, keys_only_BxMxD=None):
    """Self-attention (context None) or cross-attention. RoPE applies to self-attention only.

    `local_context` (a `local_context.LocalContext`, self-attention only) adds or stops the keys and
    values of the previous chunk's frames (chunking.context_mode). `keys_only_BxMxD` (self-attention only):
    tokens that are keys and values after the queries' own, but not queries (key_mask covers Q + M)."""
    if context_BxKxD is None:
      q = self.project_q(x_BxQxD, rope_angles_LxP)
      kv_in = x_BxQxD if keys_only_BxMxD is None else jnp.concatenate([x_BxQxD, keys_only_BxMxD], axis=1)
      k, v = self.project_kv(kv_in, rope_angles_LxP)
      if local_context is not None:
        return self.merge_heads(local_context.attend(q, k, v, key_mask_BxK, kind=self.kind))
    else:
      q = self.project_q(x_BxQxD)
      k, v = self.project_kv(context_BxKxD)
    return self.merge_heads(attention(q, k, v, key_mask_BxK, kind=self.kind))


class Mlp(nnx.Module):

  def __init__(self, width: int, ratio: float, *, rngs: nnx.Rngs, dtype=jnp.float32, zero_out=False):
    hidden = int(width * ratio)
    self.fc1 = _linear(width, hidden, rngs, dtype=dtype)
    self.fc2 = _linear(hidden, width, rngs, dtype=dtype, zero=zero_out)

  def __call__(self, x):
    return self.fc2(jax.nn.gelu(self.fc1(x)))


def timestep_features(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal features [..., dim] of t in [0, 1] (scaled by 1000 like discrete diffusion steps)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = (t.astype(jnp.float32) * 1000.0)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


def position_features(pos: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal features [..., dim] of integer positions (frame indices), for any video length."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = pos.astype(jnp.float32)[..., None] * freqs
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nnx.Module):
  """t [...] -> [..., width]; normalised before AdaLN (STIV: projected conditions are normalised)."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.fc1 = _linear(256, width, rngs)
    self.fc2 = _linear(width, width, rngs)
    self.norm = RMSNorm(width)

  def __call__(self, t):
    return self.norm(self.fc2(jax.nn.silu(self.fc1(timestep_features(t)))))


MICRO_CONDITIONS = ("fps", "height", "width")   # the columns of micro_BxK (model.micro_conditions)


class MicroConditionEmbedder(nnx.Module):
  """STIV's micro-conditions: (fps, height, width in pixels) [..., 3] -> [..., width], added to the timestep
  embedding wherever it feeds AdaLN. fp32, like the timestep embedder.

  Each scalar: sinusoidal features -> fc1 -> SiLU -> fc2; the three are summed and RMS-normalised (no learned
  scale; STIV normalises the projected conditions), then `out`, zero-initialised: a model without
  micro-conditions loaded into one with them (`train --init_from`) starts with identical outputs. The zero
  layer sits after the norm: zeros before it would make the norm divide by ~0 (gain 1/sqrt(eps)), so the
  embedding would jump to unit size after one step.
  """

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    for name in MICRO_CONDITIONS:
      setattr(self, name, ConditionMlp(256, width, rngs=rngs))
    self.norm = RMSNorm(width, use_scale=False)
    self.out = _linear(width, width, rngs, zero=True)

  def __call__(self, micro_BxK):
    micro = micro_BxK.astype(jnp.float32)
    h = sum(getattr(self, name)(position_features(micro[..., i], 256)) for i, name in enumerate(MICRO_CONDITIONS))
    return self.out(self.norm(h))


class ConditionMlp(nnx.Module):
  """fc1 -> SiLU -> fc2 in fp32 (the embedders' MLP)."""

  def __init__(self, din: int, width: int, *, rngs: nnx.Rngs):
    self.fc1 = _linear(din, width, rngs)
    self.fc2 = _linear(width, width, rngs)

  def __call__(self, x):
    return self.fc2(jax.nn.silu(self.fc1(x)))


class SharedAdaLN(nnx.Module):
  """AdaLN-single (PixArt-alpha, STIV): one MLP maps the timestep embedding to `num_mods` modulations for
  all blocks; each block adds its own small table. Output [..., num_mods, D]."""

  def __init__(self, width: int, num_mods: int = 6, *, rngs: nnx.Rngs):
    self.num_mods = num_mods
    self.proj = _linear(width, num_mods * width, rngs, zero=True)

  def __call__(self, t_emb):
    return self.proj(jax.nn.silu(t_emb)).reshape(*t_emb.shape[:-1], self.num_mods, -1)


@jax.tree_util.register_pytree_node_class
class Segment:
  """A group of tokens sharing a modulation per leading group: tokens [B, T, S, D], mod [B, T, M, D].

  A DiT window is one segment with T frames of S spatial tokens; the global tokens are a segment with T=1.
  `queries=False` (model.global_tokens_in_dit="keys_values"): the segment's tokens are only keys and values
  of the blocks' self-attention; no block updates them. Such segments come after the query segments.
  A pytree, so that a block over segments can be rematerialised.
  """

  def __init__(self, x_BxTxSxD, mod_BxTxMxD, rope_LxP=None, *, queries: bool = True):
    self.x, self.mod, self.rope, self.queries = x_BxTxSxD, mod_BxTxMxD, rope_LxP, queries

  def with_x(self, x_BxTxSxD) -> "Segment":
    return Segment(x_BxTxSxD, self.mod, self.rope, queries=self.queries)

  def tree_flatten(self):
    return (self.x, self.mod, self.rope), self.queries

  @classmethod
  def tree_unflatten(cls, queries, children):
    return cls(*children, queries=queries)


def flatten_tokens(xs: Sequence[jax.Array]) -> jax.Array:
  return jnp.concatenate([x.reshape(x.shape[0], -1, x.shape[-1]) for x in xs], axis=1)


def split_tokens(x_BxLxD, shapes):
  outs, start = [], 0
  for shape in shapes:
    n = shape[1] * shape[2]
    outs.append(x_BxLxD[:, start:start + n].reshape(shape))
    start += n
  return outs


class DiTBlock(nnx.Module):
  """Joint self-attention over all segments, cross-attention to text, MLP; sandwich norm; AdaLN-single.

  Modulation rows: 0 shift_attn, 1 scale_attn, 2 gate_attn, 3 shift_mlp, 4 scale_mlp, 5 gate_mlp.
  Segments with `queries=False` are keys and values of the self-attention only, and pass unchanged.
  `model/factorised.py` subclasses it with STIV's spatial-then-temporal self-attention.
  """

  def __init__(self, width: int, num_heads: int, mlp_ratio: float, text_width: int, *, rngs: nnx.Rngs,
               dtype=jnp.float32, attention_kind: str = "einsum"):
    self.table = nnx.Param(jnp.zeros((6, width), jnp.float32))
    self.norm_attn = RMSNorm(width, use_scale=False)
    self.attn = Attention(width, num_heads, rngs=rngs, dtype=dtype, kind=attention_kind)
    self.post_attn = RMSNorm(width)
    self.norm_cross = RMSNorm(width)
    self.cross = Attention(width, num_heads, kv_width=text_width, rngs=rngs, dtype=dtype, kind=attention_kind)
    self.norm_mlp = RMSNorm(width, use_scale=False)
    self.mlp = Mlp(width, mlp_ratio, rngs=rngs, dtype=dtype)
    self.post_mlp = RMSNorm(width)

  def __call__(self, segments: list[Segment], text_BxLtxDt, text_mask_BxLt, key_mask_BxL=None,
               local_context=None):
    segments = [s.with_x(mesh_lib.rows_over_auto_batch_axes(s.x)) for s in segments]
    flags = [s.queries for s in segments]
    if flags != sorted(flags, reverse=True):
      raise ValueError("segments with queries=False (keys and values only) must come after the query segments")
    mods = [s.mod + self.table[...] for s in segments]
    queried = [s.with_x(x) for s, x in zip(segments, self.self_attention(segments, mods, key_mask_BxL,
                                                                           local_context))]
    shapes = [s.x.shape for s in queried]
    qmods = mods[:len(queried)]
    x = flatten_tokens([s.x for s in queried])
    x = x + self.cross(self.norm_cross(x), text_BxLtxDt, key_mask_BxK=text_mask_BxLt)
    xs = split_tokens(x, shapes)
    h = self.mlp(flatten_tokens(modulated(self.norm_mlp, xs, qmods, 3, 4)))
    xs = [x_ + u * m[:, :, None, 5] for x_, u, m in zip(xs, split_tokens(self.post_mlp(h), shapes), qmods)]
    out = [s.with_x(x_) for s, x_ in zip(queried, xs)] + segments[len(queried):]
    return [s.with_x(mesh_lib.rows_over_auto_batch_axes(s.x)) for s in out]

  def self_attention(self, segments: list[Segment], mods, key_mask_BxL, local_context) -> list[jax.Array]:
    """The query segments' tokens after the self-attention's residual update, [B, T, S, D] each.

    Joint: every query token attends to every token (keys_values-only segments' included), the local
    context's keys and values too."""
    h = modulated(self.norm_attn, [s.x for s in segments], mods, 0, 1)
    queried = [s for s in segments if s.queries]
    n = len(queried)
    # RoPE covers the segments that carry positions, which come first.
    ropes = [s.rope for s in segments if s.rope is not None]
    rope = jnp.concatenate(ropes, axis=-2) if ropes else None
    extra = flatten_tokens(h[n:]) if len(h) > n else None
    out = self.attn(flatten_tokens(h[:n]), key_mask_BxK=key_mask_BxL, rope_angles_LxP=rope, local_context=local_context,
                    keys_only_BxMxD=extra)
    updates = split_tokens(self.post_attn(out), [s.x.shape for s in queried])
    return [s.x + u * m[:, :, None, 2] for s, u, m in zip(queried, updates, mods)]


def modulated(norm, xs: Sequence[jax.Array], mods: Sequence[jax.Array], shift_row: int, scale_row: int):
  """AdaLN: norm(x) * (1 + scale) + shift for each segment's tokens [B, T, S, D] and modulation [B, T, M, D]."""
  return [norm(x) * (1 + m[:, :, None, scale_row]) + m[:, :, None, shift_row] for x, m in zip(xs, mods)]


def make_blocks(make_block, depth: int, rngs: nnx.Rngs, *, stacked: bool = False):
  """`depth` blocks `make_block(rngs)`: an nnx.List, or with `stacked` ONE block module whose parameters have
  a leading layer axis [depth, ...] (model.scan_layers; `run_blocks` scans over it). Depth 0 is an empty list."""
  if not stacked or depth == 0:
    return nnx.List([make_block(rngs) for _ in range(depth)])

  @nnx.split_rngs(splits=depth)
  @nnx.vmap(in_axes=(0,), out_axes=0)
  def create(layer_rngs):
    return make_block(layer_rngs)

  return create(rngs)


def _remat_policy(remat: str):
  if remat not in REMAT_POLICIES:
    raise ValueError(f"model.remat={remat!r} must be one of {REMAT_POLICIES}")
  return jax.checkpoint_policies.dots_with_no_batch_dims_saveable if remat == "dots" else None


def _residual_dtype(segments: list[Segment]) -> list[Segment]:
  """Tokens in the dtype a block returns (a bf16 residual meets fp32 modulations: fp32), so that every
  block, unrolled or scanned, sees the same carry dtype."""
  return [s.with_x(s.x.astype(jnp.promote_types(s.x.dtype, s.mod.dtype))) for s in segments]


def run_blocks(blocks, segments: list[Segment], *args, remat: str = "none"):
  """Applies `blocks` in order: an nnx.List of DiTBlocks one by one, or a stacked DiTBlock (leading layer
  axis, `make_blocks(stacked=True)`) with one scan over the layers. With remat != "none" each block (the
  scan body) is rematerialised in the backward pass (model.remat, see REMAT_POLICIES)."""
  policy = _remat_policy(remat)
  segments = _residual_dtype(segments)
  if isinstance(blocks, DiTBlock):
    return _scan_blocks(blocks, segments, args, remat, policy)
  for block in blocks:
    if remat == "none":
      segments = block(segments, *args)
      continue
    # Pure in the block's state (split / merge), as the scanned path: nnx.remat would write the block's
    # variables back, which fails when the call sits inside a lax.scan of the sampler's steps.
    graphdef, state = nnx.split(block)
    segments = jax.checkpoint(lambda st, segs: nnx.merge(graphdef, st)(segs, *args), policy=policy)(state, segments)
  return segments


def _scan_blocks(stacked: DiTBlock, segments: list[Segment], args, remat: str, policy):
  """jax.lax.scan over the layer axis of a stacked block's state; segments are the carry."""
  graphdef, state_NxX = nnx.split(stacked)

  def body(segs, layer_state):
    return nnx.merge(graphdef, layer_state)(segs, *args), None

  if remat != "none":
    body = jax.checkpoint(body, policy=policy, prevent_cse=False)
  segments, _ = jax.lax.scan(body, _vary_like_the_block(segments, (args, state_NxX)), state_NxX)
  return segments


def _vary_like_the_block(segments: list[Segment], inputs) -> list[Segment]:
  """Inside shard_map, joint attention makes every segment's tokens vary over every mesh axis that any input
  varies over (the global tokens, the same on all 'chunk' devices, meet the chunk's own tokens). A scan's
  carry must keep its type, so the tokens enter already varying over all of those axes."""
  leaves = jax.tree.leaves((segments, inputs))
  axes = frozenset().union(*(_varying_axes(x) for x in leaves))
  return [seg.with_x(_vary_over(seg.x, axes)) for seg in segments]


def vary_like(x, like):
  """x, marked as varying over every manual mesh axis that `like` varies over (inside shard_map)."""
  return _vary_over(x, _varying_axes(like))


def _vary_over(x, axes: frozenset):
  missing = tuple(sorted(axes - _varying_axes(x)))
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def _varying_axes(x) -> frozenset:
  """The manual mesh axes a traced value varies over (empty outside shard_map)."""
  return frozenset(jax.typeof(x).mat.varying)


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))
