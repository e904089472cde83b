"""Triton kernels of the CUDA fast paths. Imported only where ``triton`` is importable.

Each kernel reproduces a pure-PyTorch function of ``tmpdiff_core.formats`` to the bit (the CPU
tests run them under ``TRITON_INTERPRET=1`` against those functions):

* ``fp8_rowwise_quant``: ``formats.fp8.quantize_activation`` (per-token e4m3 codes + fp32 scale)
  in one kernel instead of the ~6 eager PyTorch launches: a row is read in 4096-column chunks twice
  (``amax``, then quantize), the second time from L2, so wide rows (15360 columns) neither spill
  registers nor cost a second pass over device memory.
* ``int8_rowwise_quant``: ``formats.int8.quantize_activation`` likewise.
* ``int8_scaled_mm``: ``int8.rescale(x_q @ w_q^T)`` as one GEMM whose epilogue applies the
  per-token and per-row scales and the bias in ``rescale``'s order and roundings, so the int32 accumulator never
  goes through device memory (``torch._int_mm`` writes it out and a second pass rescales it).

``INTERPRET`` selects code that the Triton interpreter can run (no ``libdevice``); on a GPU the
kernels use the hardware's round-to-nearest-even instruction.

``register_mm_op()`` registers the GEMM as the ``torch.library.triton_op`` ``tmpdiff::int8_scaled_mm``
(launching through ``wrap_triton``): under ``torch.compile`` Inductor calls the kernel from its own
generated code. Eager callers launch the kernels directly (``traced=False``).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

if not INTERPRET:  # pragma: no cover - GPU only
    from triton.language.extra import libdevice
else:  # the interpreter has no libdevice; the kernels never touch it there
    libdevice = None

# Globals a kernel reads must be constexpr (the GPU compiler refuses plain ones)
FP8_MAX = tl.constexpr(448.0)
_MAGIC = tl.constexpr(12582912.0)  # 1.5 * 2**23: (y + M) - M rounds |y| < 2**22 to nearest even

_TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}


@triton.jit
def _round_bf16(v):
    """fp32 -> nearest-even bf16 value, kept in fp32 (bit arithmetic: the Triton interpreter's
    own bf16 cast truncates, the GPU's rounds; this is the same on both)."""
    bits = v.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _round_like_input(v, X_DTYPE: tl.constexpr):
    """Round an fp32 value to the input dtype and back, as PyTorch's bf16/fp16 arithmetic does."""
    if X_DTYPE == tl.float32:
        return v
    if X_DTYPE == tl.bfloat16:
        return _round_bf16(v)
    return v.to(X_DTYPE).to(tl.float32)


@triton.jit
def _rint(y, USE_LIBDEVICE: tl.constexpr):
    """Round half to even (``torch.round``) of fp32 values already clamped to a small range."""
    if USE_LIBDEVICE:
        return libdevice.rint(y)
    return (y + _MAGIC) - _MAGIC


@triton.jit
def _load_chunk(x_ptr, row, stride_xm, k0, K, BLOCK_K: tl.constexpr):
    """Columns ``[k0, k0 + BLOCK_K)`` of a row, in fp32, with their offsets and mask."""
    offs = k0 + tl.arange(0, BLOCK_K)
    mask = offs < K
    x = tl.load(x_ptr + row * stride_xm + offs, mask=mask, other=0.0).to(tl.float32)
    return x, offs, mask


@triton.jit
def _row_amax(x_ptr, row, stride_xm, K, BLOCK_K: tl.constexpr):
    """Pass 1 over a row, chunk by chunk: ``max |x|``. Pass 2 (the caller) reads the row again,
    from L2: rows of up to 15360 columns never sit in registers whole (that spilled and left one
    program per SM), and the second read costs no DRAM traffic."""
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        x, _, _ = _load_chunk(x_ptr, row, stride_xm, k0, K, BLOCK_K)
        acc = tl.maximum(acc, tl.abs(x))
    return tl.max(acc, axis=0)


@triton.jit
def _fp8_quant_kernel(
    x_ptr,
    q_ptr,
    s_ptr,
    K,
    stride_xm,
    stride_qm,
    X_DTYPE: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    amax = _row_amax(x_ptr, row, stride_xm, K, BLOCK_K)
    # qm.fp8_scale: amax / 448 divided in the input dtype, then fp32; underflow -> fp32; 0 -> 1
    exact = tl.math.div_rn(amax, FP8_MAX)
    scale = _round_like_input(exact, X_DTYPE)
    scale = tl.where(scale == 0.0, exact, scale)
    scale = tl.where(scale == 0.0, 1.0, scale)
    for k0 in range(0, K, BLOCK_K):
        x, offs, mask = _load_chunk(x_ptr, row, stride_xm, k0, K, BLOCK_K)
        y = tl.math.div_rn(x, scale)
        y = tl.minimum(tl.maximum(y, -FP8_MAX), FP8_MAX)
        tl.store(q_ptr + row * stride_qm + offs, y.to(tl.float8e4nv), mask=mask)
    tl.store(s_ptr + row, scale)


@triton.jit
def _int8_quant_kernel(
    x_ptr,
    q_ptr,
    s_ptr,
    K,
    stride_xm,
    stride_qm,
    X_DTYPE: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_LIBDEVICE: tl.constexpr,
    EPS: tl.constexpr,  # a constant: as a runtime float, Inductor would pass it as fp64
):
    row = tl.program_id(0).to(tl.int64)
    amax = _row_amax(x_ptr, row, stride_xm, K, BLOCK_K)
    # qm.int_symmetric_scale: amax / 127.5 in the input dtype, clamp(min=eps), fp32
    scale = _round_like_input(tl.math.div_rn(amax, 127.5), X_DTYPE)
    scale = tl.maximum(scale, EPS)
    inv = tl.math.div_rn(1.0, scale)
    for k0 in range(0, K, BLOCK_K):
        x, offs, mask = _load_chunk(x_ptr, row, stride_xm, k0, K, BLOCK_K)
        y = tl.minimum(tl.maximum(x * inv, -129.0), 128.0)  # the clamp below decides the rest
        y = _rint(y, USE_LIBDEVICE)
        y = tl.minimum(tl.maximum(y, -128.0), 127.0)
        tl.store(q_ptr + row * stride_qm + offs, y.to(tl.int8), mask=mask)
    tl.store(s_ptr + row, scale)


def _block_k(k: int) -> int:
    return min(max(16, triton.next_power_of_2(k)), 4096)


def _num_warps(block_k: int) -> int:
    return 4 if block_k <= 2048 else 8


def fp8_rowwise_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row e4m3 codes and fp32 ``(rows, 1)`` scales of a 2-D, last-dim-contiguous input."""
    m, k = x.shape
    q = torch.empty((m, k), device=x.device, dtype=torch.float8_e4m3fn)
    s = torch.empty((m, 1), device=x.device, dtype=torch.float32)
    if m:
        block = _block_k(k)
        _fp8_quant_kernel[(m,)](
            x, q, s, k, x.stride(0), q.stride(0),
            X_DTYPE=_TL_DTYPES[x.dtype], BLOCK_K=block, num_warps=_num_warps(block),
        )  # fmt: skip
    return q, s


def int8_rowwise_quant(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row symmetric int8 codes and fp32 ``(rows, 1)`` scales of a 2-D input."""
    m, k = x.shape
    q = torch.empty((m, k), device=x.device, dtype=torch.int8)
    s = torch.empty((m, 1), device=x.device, dtype=torch.float32)
    if m:
        block = _block_k(k)
        _int8_quant_kernel[(m,)](
            x, q, s, k, x.stride(0), q.stride(0),
            X_DTYPE=_TL_DTYPES[x.dtype], BLOCK_K=block, USE_LIBDEVICE=not INTERPRET, EPS=eps,
            num_warps=_num_warps(block),
        )  # fmt: skip
    return q, s


def _mm_configs():
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 2})]
    shapes = [
        # (BLOCK_M, BLOCK_N, BLOCK_K, stages, warps): Hopper wgmma-friendly int8 tiles
        (128, 256, 128, 3, 8),
        (256, 128, 128, 3, 8),
        (128, 128, 128, 4, 8),
        (128, 128, 128, 4, 4),
        # small M (FLUX's 512 text tokens: 128-row tiles left most SMs idle, 0.11 vs 0.05 ms bf16)
        (64, 128, 128, 4, 4),
        (64, 256, 128, 3, 8),
        (64, 64, 256, 3, 4),
    ]
    return [
        triton.Config(
            {"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k, "GROUP_M": 8}, num_stages=s, num_warps=w
        )
        for m, n, k, s, w in shapes
    ]


@triton.autotune(configs=_mm_configs(), key=["M", "N", "K"], warmup=5, rep=20)
@triton.jit
def _int8_mm_kernel(
    a_ptr,
    b_ptr,
    sa_ptr,
    sb_ptr,
    bias_ptr,
    c_ptr,
    M,
    N,
    K,
    stride_am,
    stride_bn,
    stride_cm,
    HAS_BIAS: tl.constexpr,
    OUT_DTYPE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """``C = rescale(A @ B^T)``: A (M, K) int8, B (N, K) int8 (both K-contiguous), C (M, N)."""
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_pid_n
    first_m = (pid // group) * GROUP_M
    size_m = min(num_pid_m - first_m, GROUP_M)
    pid_m = first_m + ((pid % group) % size_m)
    pid_n = (pid % group) // size_m

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    rows_a = tl.where(offs_m < M, offs_m, 0).to(tl.int64)
    rows_b = tl.where(offs_n < N, offs_n, 0).to(tl.int64)
    a_ptrs = a_ptr + rows_a[:, None] * stride_am + offs_k[None, :]
    b_ptrs = b_ptr + rows_b[None, :] * stride_bn + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        k_mask = offs_k < K - k0
        a = tl.load(a_ptrs, mask=k_mask[None, :], other=0)
        b = tl.load(b_ptrs, mask=k_mask[:, None], other=0)
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    # int8.rescale: ((acc fp32 * x_scale) -> mid dtype) * w_scale fp32 + bias -> out dtype, where
    # the mid dtype is the output's except for fp16 (fp32 there, so nothing overflows early)
    sa = tl.load(sa_ptr + offs_m, mask=offs_m < M, other=1.0)
    sb = tl.load(sb_ptr + offs_n, mask=offs_n < N, other=1.0)
    y = acc.to(tl.float32) * sa[:, None]
    if OUT_DTYPE == tl.bfloat16:
        y = _round_bf16(y)
    y = y * sb[None, :]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0).to(tl.float32)
        y = y + bias[None, :]
    y = _round_like_input(y, OUT_DTYPE)
    c_ptrs = c_ptr + offs_m[:, None].to(tl.int64) * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, y.to(OUT_DTYPE), mask=(offs_m[:, None] < M) & (offs_n[None, :] < N))


def int8_scaled_mm(
    x_q: torch.Tensor,
    x_scale: torch.Tensor,
    w_q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None,
    out_dtype: torch.dtype,
    traced: bool = False,
) -> torch.Tensor:
    """``int8.rescale(x_q @ w_q^T, x_scale, w_scale, bias, out_dtype)`` in one kernel."""
    m, k = x_q.shape
    n = w_q.shape[0]
    out = torch.empty((m, n), device=x_q.device, dtype=out_dtype)
    if m == 0:
        return out
    x_q = x_q if x_q.stride(-1) == 1 else x_q.contiguous()
    w_q = w_q if w_q.stride(-1) == 1 else w_q.contiguous()
    sa = x_scale.reshape(-1).contiguous()
    sb = w_scale.reshape(-1).contiguous()
    b = bias.contiguous() if bias is not None else sb  # a dummy pointer when there is no bias

    def grid(meta):
        return (triton.cdiv(m, meta["BLOCK_M"]) * triton.cdiv(n, meta["BLOCK_N"]),)

    # inside the triton_op: wrap_triton; eager: the kernel itself (torch 2.11's eager wrap_triton
    # path cost ~0.6 ms of Python per launch on the H100 host, 25x the kernel)
    (wrap_triton(_int8_mm_kernel) if traced else _int8_mm_kernel)[grid](
        x_q, w_q, sa, sb, b, out, m, n, k, x_q.stride(0), w_q.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, OUT_DTYPE=_TL_DTYPES[out_dtype],
    )  # fmt: skip
    return out


def register_mm_op() -> None:
    """Register the GEMM as the ``torch.library.triton_op`` ``tmpdiff::int8_scaled_mm`` (call
    once: ``_dispatch.register_mm_op`` guards it)."""

    @triton_op("tmpdiff::int8_scaled_mm", mutates_args=())
    def int8_scaled_mm_op(
        x_q: torch.Tensor,
        x_scale: torch.Tensor,
        w_q: torch.Tensor,
        w_scale: torch.Tensor,
        bias: torch.Tensor | None,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        return int8_scaled_mm(x_q, x_scale, w_q, w_scale, bias, out_dtype, traced=True)
