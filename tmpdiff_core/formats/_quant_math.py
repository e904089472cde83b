"""Quantization arithmetic shared by the formats: scales, rounding, group reshapes, bit packing.

Every function here is pure (tensors in, tensors out) and follows torchao 0.18's numerics to the
bit, so an emulated layer and the torchao layer it stands in for store the same quantized weights:

* integer scales (``choose_qparams_affine``, symmetric): ``amax / ((qmax - qmin) / 2)`` computed
  *in the input's dtype*, clamped below by an ``eps``, then cast to the scale dtype; values are
  ``clamp(round_half_even(x * (1 / scale)), qmin, qmax)``.
* fp8 scales (``_choose_scale_float8``): ``amax / 448`` in the input's dtype, then fp32; values are
  ``clamp(x_fp32 / scale, -448, 448).to(float8_e4m3fn)`` (round to nearest even, saturating).
* fp4 e2m1 codes (``f32_to_f4_unpacked``): round to nearest even, saturating at 6.

Where torchao would divide by zero (an all-zero row gives scale 0 and ``0 / 0 = nan``) we use scale
1 instead; that changes nothing else, since every value of such a row quantizes to 0 either way.
"""

from __future__ import annotations

import torch

FP8_DTYPE = torch.float8_e4m3fn
FP8_E4M3_MAX = 448.0
FP4_E2M1_MAX = 6.0
INT8_RANGE = (-128, 127)
INT4_RANGE = (-8, 7)

# Largest K for which an int8 x int8 dot product is exact in fp32: |a*b| <= 2**14, so a sum of
# 1024 such products stays within 2**24, the last integer fp32 holds exactly.
_EXACT_FP32_CHUNK = 1024

# The fp4 e2m1 magnitudes in code order (codes 0..7; bit 3 is the sign).
_FP4_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def absmax(x: torch.Tensor) -> torch.Tensor:
    """``max |x|`` over the last dim, kept as a size-1 dim, in ``x``'s own dtype."""
    return x.abs().amax(dim=-1, keepdim=True)


def int_symmetric_scale(
    x: torch.Tensor, qmin: int, qmax: int, *, eps: float, scale_dtype: torch.dtype
) -> torch.Tensor:
    """Symmetric integer scale over the last dim (torchao ``choose_qparams_affine``, SYMMETRIC).

    The division happens in ``x.dtype`` (so a bf16 weight gets a bf16-rounded scale) exactly as
    torchao does, then the result is cast to ``scale_dtype``.
    """
    scale = absmax(x) / (float(qmax - qmin) / 2)
    return torch.clamp(scale, min=eps).to(scale_dtype)


def quantize_int(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int) -> torch.Tensor:
    """``clamp(round(x * (1 / scale)), qmin, qmax)`` as int8 (torchao ``quantize_affine``)."""
    q = torch.round(x * (1.0 / scale))
    return torch.clamp(q, qmin, qmax).to(torch.int8)


def rowwise_int_quant(
    x: torch.Tensor, qmin: int, qmax: int, *, eps: float, scale_dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric integer quantization, one scale per row of the last dim: ``(q_int8, scale)``.

    Used for per-output-row weights, per-token activations and (after ``group_view``) groups.
    """
    scale = int_symmetric_scale(x, qmin, qmax, eps=eps, scale_dtype=scale_dtype)
    return quantize_int(x, scale, qmin, qmax), scale


def fp8_scale(x: torch.Tensor) -> torch.Tensor:
    """fp32 fp8-e4m3 scale per row of the last dim: ``amax / 448``, divided in ``x.dtype``."""
    scale = (absmax(x) / FP8_E4M3_MAX).to(torch.float32)
    # fp16 can underflow amax / 448 to 0 for a tiny but nonzero row: redo those in fp32. A row that
    # is still 0 is all zeros; any scale quantizes it to 0, and 1 avoids torchao's 0 / 0 = nan.
    scale = torch.where(scale == 0, absmax(x).float() / FP8_E4M3_MAX, scale)
    return torch.where(scale == 0, torch.ones_like(scale), scale)


def quantize_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``clamp(x_fp32 / scale, -448, 448)`` cast to e4m3fn (round to nearest even, saturating)."""
    return (x.float() / scale).clamp(-FP8_E4M3_MAX, FP8_E4M3_MAX).to(FP8_DTYPE)


def rowwise_fp8_quant(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp8 e4m3 quantization, one fp32 scale per row of the last dim: ``(q_fp8, scale)``."""
    scale = fp8_scale(x)
    return quantize_fp8(x, scale), scale


def group_size_for(in_features: int, candidates: tuple[int, ...]) -> int | None:
    """The first candidate group size that divides ``in_features``, or ``None``."""
    return next((g for g in candidates if in_features % g == 0), None)


def group_view(w: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(out, in)`` -> ``(out, in // group_size, group_size)``: one group per last-dim row."""
    out_features, in_features = w.shape
    return w.reshape(out_features, in_features // group_size, group_size)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Pack 4-bit codes (uint8 or int8, last dim even) two per byte, even index in the low nibble.

    Same layout as torchao's ``pack_uint4``. Signed int4 values are stored two's-complement.
    """
    u = (codes.to(torch.int16) & 0xF).to(torch.uint8)
    return u[..., 0::2] | (u[..., 1::2] << 4)


def unpack_nibbles(packed: torch.Tensor, *, signed: bool) -> torch.Tensor:
    """Inverse of ``pack_nibbles``: uint8 codes, or int8 values in [-8, 7] if ``signed``."""
    low, high = packed & 0xF, packed >> 4
    codes = torch.stack((low, high), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)
    if not signed:
        return codes
    codes = codes.to(torch.int8)
    return torch.where(codes >= 8, codes - 16, codes)


def fp4_e2m1_encode(x: torch.Tensor) -> torch.Tensor:
    """fp32 values -> fp4 e2m1 codes (uint8, sign in bit 3); nearest-even rounding, saturating.

    Bit-identical to torchao's ``f32_to_f4_unpacked``. A tie between two magnitudes goes to the
    one with the even code (even mantissa), e.g. 2.5 -> 2 and 3.5 -> 4.
    """
    mag = x.abs()
    code = torch.zeros(x.shape, dtype=torch.uint8, device=x.device)
    for i, (lo, hi) in enumerate(zip(_FP4_VALUES[:-1], _FP4_VALUES[1:], strict=True)):
        mid = (lo + hi) / 2
        # crossing the midpoint moves up one code; on the midpoint itself only if that lands even
        code += ((mag > mid) | ((mag == mid) & (i % 2 == 1))).to(torch.uint8)
    return code | (torch.signbit(x).to(torch.uint8) << 3)


def fp4_e2m1_decode(codes: torch.Tensor) -> torch.Tensor:
    """fp4 e2m1 codes (uint8, sign in bit 3) -> fp32 values."""
    table = torch.tensor(_FP4_VALUES, dtype=torch.float32, device=codes.device)
    mag = table[(codes & 0x7).long()]
    return torch.where((codes & 0x8) != 0, -mag, mag)


def int8_matmul_exact(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for int8 ``a (M, K)`` and ``b (N, K)``, exact, as int32, on any device.

    Emulation cannot count on ``torch._int_mm`` (CUDA needs M > 16 and K, N multiples of 8; other
    devices lack it), so it multiplies in fp32 over K-chunks short enough to stay exact and sums
    the chunks in int32. TF32 or bf16 matmul modes keep it exact too: int8 values fit their
    mantissas and accumulation stays fp32.
    """
    out = None
    for k0 in range(0, a.shape[-1], _EXACT_FP32_CHUNK):
        part = (
            a[:, k0 : k0 + _EXACT_FP32_CHUNK].float() @ b[:, k0 : k0 + _EXACT_FP32_CHUNK].float().T
        )
        part = part.to(torch.int32)
        out = part if out is None else out + part
    return out
