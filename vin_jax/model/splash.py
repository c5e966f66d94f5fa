"""Pallas splash attention (TPU flash attention) behind `layers.attention(kind="splash")`.

Splash never materialises [Q, K] logits: it runs over blocks of queries and keys in VMEM, keeps the softmax
statistics (running max and sum) in fp32, and recomputes the probabilities in its own backward kernels. Our
inputs are padded to whole blocks, and key masks (padding, a window's missing context, the text mask) become
key segment ids: a query (segment 1) attends only to keys of segment 1.

Off TPU the same kernel runs in Pallas interpret mode: slow, numerically the TPU kernel, for tests.

The gradient is our own custom VJP around splash's forward and backward functions (private in JAX 0.10.2,
which setup.py pins; the tests run both in interpret mode): splash's own VJP returns cotangents that do not
vary over the enclosing shard_map's manual axes while the inputs do, which JAX rejects in the train step.

A pallas_call cannot be split by XLA's partitioner, so when some mesh axes are left to the compiler (the
train step's shard_map is manual over 'chunk' only), the call runs under a nested shard_map that is manual
over those axes too, with the batch split over them as the activations already are.
"""
from __future__ import annotations

import contextlib
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental.pallas.ops.tpu import splash_attention as splash
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as splash_kernel
from jax.sharding import PartitionSpec as P

from vin_jax.model import layers
from vin_jax.parallel import mesh as mesh_lib

# None: the kernel is interpreted unless this process's default backend is the TPU. `compiled_for_tpu()` sets
# False while benchmarks/tpu_aot.py traces for TPU devices from a CPU process.
INTERPRET: bool | None = None
LANE = 128                      # sequence lengths are padded to a multiple of this
BLOCK_CHOICES = (512, 256, 128)  # the largest that divides the padded length is the kernel's block


@contextlib.contextmanager
def compiled_for_tpu():
  """Within: splash lowers to the TPU kernel even in a CPU process (compile-only use); restored after, so
  other code in the process (a test worker) still interprets it on the CPU."""
  global INTERPRET
  before, INTERPRET = INTERPRET, False
  try:
    yield
  finally:
    INTERPRET = before


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


def _block(padded_len: int) -> int:
  return next(b for b in BLOCK_CHOICES if padded_len % b == 0)


@functools.lru_cache(maxsize=None)
def _kernel(num_heads: int, q_len: int, k_len: int, interpret: bool):
  """The splash kernel for one sequence pair [H, q_len, Dh] x [H, k_len, Dh], both multiples of LANE."""
  bq, bk = _block(q_len), _block(k_len)
  sizes = splash.BlockSizes(block_q=bq, block_kv=bk, block_kv_compute=bk,
                            block_q_dkv=bq, block_kv_dkv=bk, block_kv_dkv_compute=bk,
                            block_q_dq=bq, block_kv_dq=bk)
  mask = splash.MultiHeadMask([splash.FullMask((q_len, k_len)) for _ in range(num_heads)])
  with jax.ensure_compile_time_eval():   # its mask tables are constants, cached across traces: never tracers
    return splash.make_splash_mha(mask, block_sizes=sizes, head_shards=1, q_seq_shards=1, interpret=interpret)


def splash_attention(q_BxQxHxDh, k_BxKxHxDh, v_BxKxHxDh, key_mask_BxK=None):
  """Softmax attention by the splash kernel: out [B, Q, H, Dh] in q's dtype; a query with no unmasked key
  gets 0 (as `layers.attention`'s reference)."""
  b, q_len, h, dh = q_BxQxHxDh.shape
  k_len = k_BxKxHxDh.shape[1]
  qp, kp = _round_up(q_len, LANE), _round_up(k_len, LANE)
  valid_BxK = jnp.ones((b, k_len), bool) if key_mask_BxK is None else key_mask_BxK
  valid_BxKp = jnp.pad(valid_BxK, ((0, 0), (0, kp - k_len)))
  dtype = q_BxQxHxDh.dtype
  q = (q_BxQxHxDh.astype(jnp.float32) * (1.0 / math.sqrt(dh))).astype(dtype)   # splash does not scale

  def heads_major(x_BxLxHxDh, padded):
    x = jnp.pad(x_BxLxHxDh, ((0, 0), (0, padded - x_BxLxHxDh.shape[1]), (0, 0), (0, 0)))
    return jnp.transpose(x, (0, 2, 1, 3)).astype(dtype)                          # [B, H, Lp, Dh]

  interpret = jax.default_backend() != "tpu" if INTERPRET is None else INTERPRET
  shape = (h, qp, kp, interpret)
  out = _attend(shape, heads_major(q, qp), heads_major(k_BxKxHxDh, kp), heads_major(v_BxKxHxDh, kp),
                valid_BxKp.astype(jnp.int32))                                         # [B, H, Qp, Dh]
  out = jnp.transpose(out[:, :, :q_len], (0, 2, 1, 3))
  if key_mask_BxK is not None:
    out = jnp.where(jnp.any(key_mask_BxK, axis=-1)[:, None, None, None], out, 0)
  return out.astype(dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _attend(shape, q_BxHxQxDh, k_BxHxKxDh, v_BxHxKxDh, kv_segment_BxK):
  """The kernel of `shape` = (heads, Q, K, interpret) over a batch; keys of segment 0 are masked."""
  return _attend_fwd(shape, q_BxHxQxDh, k_BxHxKxDh, v_BxHxKxDh, kv_segment_BxK)[0]


def _attend_fwd(shape, q, k, v, kv_segment):
  def forward(q_, k_, v_, kv_segment_):
    def one(q1, k1, v1, seg1):
      kernel = _kernel(*shape)
      assert kernel.fwd_mask_info.partial_mask_blocks is None   # a full mask: nothing for splash to collapse
      out, residuals = splash_kernel._splash_attention_fwd(
          kernel.fwd_mask_info, kernel.dq_mask_info, kernel.dkv_mask_info, q1, k1, v1, _segments(shape, seg1),
          None, **kernel.kwargs)
      return out, residuals[6]                                  # out [H, Q, Dh], logsumexp [H, Q]
    return jax.vmap(one)(q_, k_, v_, kv_segment_)
  out, lse = _per_device_over_auto_axes(forward, q, k, v, kv_segment, interpret=shape[3])
  return out, (q, k, v, kv_segment, out, lse)


def _attend_bwd(shape, residuals, d_out):
  q, k, v, kv_segment = residuals[:4]

  def backward(q_, k_, v_, kv_segment_, out_, lse_, d_out_):
    def one(q1, k1, v1, seg1, out1, lse1, d_out1):
      kernel = _kernel(*shape)
      kw = kernel.kwargs
      splash_residuals = (q1, k1, v1, _segments(shape, seg1), None, out1, lse1, kernel.dq_mask_info,
                          kernel.dkv_mask_info)
      grads = splash_kernel._splash_attention_bwd(
          kw["save_residuals"], kw["mask_value"], kw["is_mqa"], kw["block_sizes"], kw["residual_checkpoint_name"],
          kw["mask_function"], kw["attn_logits_soft_cap"], kw["interpret"], splash_residuals, d_out1)
      return grads[3:6]
    return jax.vmap(one)(q_, k_, v_, kv_segment_, out_, lse_, d_out_)
  dq, dk, dv = _per_device_over_auto_axes(backward, *residuals, d_out, interpret=shape[3])
  # Outside the per-device region: the cotangents must vary over the manual axes their inputs vary over.
  dq, dk, dv = (layers.vary_like(g, x) for g, x in zip((dq, dk, dv), (q, k, v)))
  return dq, dk, dv, np.zeros(kv_segment.shape, jax.dtypes.float0)


_attend.defvjp(_attend_fwd, _attend_bwd)


def _segments(shape, kv_segment_K):
  return splash.SegmentIds(q=jnp.ones(shape[1], jnp.int32), kv=kv_segment_K)


def _per_device_over_auto_axes(fn, *batch_major, interpret: bool = False):
  """fn(*batch_major), run per device over the mesh axes that are still the compiler's (Auto) here, with
  axis 0 (the batch) split over them when it divides, else replicated. Outside a mesh fn runs as it is; so
  does it when every axis is already manual (the sampler's shard_map, which is unchecked: a Pallas kernel's
  outputs declare no varying axes), and so does the interpreted kernel, plain jnp that XLA partitions."""
  auto = mesh_lib.auto_axes()
  if not auto or interpret:
    return fn(*batch_major)
  spec = P(tuple(auto)) if batch_major[0].shape[0] % int(np.prod(list(auto.values()))) == 0 else P()
  return jax.shard_map(fn, mesh=jax.sharding.get_abstract_mesh(), in_specs=(spec,) * len(batch_major),
                       out_specs=spec, axis_names=set(auto), check_vma=False)(*batch_major)
