"""Number formats: accuracy, agreement with torchao, backend selection, build-once, memory.

Everything runs on CPU. Formats are parametrized from the registry, so a newly registered format
is tested here for free (it only needs an entry in ``ERROR_BANDS``).
"""

from __future__ import annotations

import copy
import math
import sys
import warnings

import pytest
import torch
from torch import nn

from tmpdiff_core.errors import BackendUnavailableError, PrepareError, UnknownPrecisionError
from tmpdiff_core.formats import _quant_math as qm
from tmpdiff_core.formats import (
    all_formats,
    backends_for,
    base,
    canonical_name,
    module_nbytes,
    select_backend,
)

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
QUANTIZED = [f.name for f in all_formats() if not f.reference]
REFERENCE = [f.name for f in all_formats() if f.reference]
# Formats whose torchao path runs on CPU (backend="torchao" forced), see ecosystem notes §5.2.
TORCHAO_ON_CPU = ("int8", "int8wo", "int4wo", "fp4wo")

# Relative error ||y_q - y|| / ||y|| of the emulated layer against the fp32 product of the
# unquantized weights, for a default-initialized Linear(256, 192) and randn inputs (2, 7, 256),
# in fp32, bf16 and fp16. Measured on torch 2.13 CPU over 5 seeds x 3 dtypes (SQNR = -20 log10):
#   fp8    0.035-0.038  (28.5-29.0 dB)   e4m3 weights and activations
#   int8   0.0076-0.0086 (41.3-42.4 dB)  int8 weights and activations
#   int8wo 0.0038-0.0051 (45.8-48.5 dB)  int8 weights only (bf16 output rounding included)
#   int4wo 0.065-0.068  (23.4-23.8 dB)   int4 weights, groups of 128
#   fp4wo  0.100-0.104  (19.7-20.0 dB)   e2m1 weights, e4m3 scale per 16, per-tensor fp32 scale
# and the bands below leave roughly 30% either side.
# The lower bound proves the layer really quantizes (is not silently the reference).
ERROR_BANDS = {
    "fp8": (0.025, 0.05),
    "int8": (0.005, 0.012),
    "int8wo": (0.0025, 0.007),
    "int4wo": (0.045, 0.09),
    "fp4wo": (0.07, 0.14),
}
# The reference precisions cast nothing: bf16/fp16 inputs only carry their own rounding.
REFERENCE_BAND = (0.0, 0.01)


def make_linear(in_features=256, out_features=192, *, dtype=torch.float32, seed=0, bias=True):
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features, bias=bias).to(dtype)


def make_input(shape=(2, 7, 256), *, dtype=torch.float32, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen).to(dtype)


def rel_error(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


def fp32_reference(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    bias = None if linear.bias is None else linear.bias.float()
    return nn.functional.linear(x.float(), linear.weight.float(), bias)


def build(fmt: str, linear: nn.Linear, backend: str = "auto") -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # CPU auto-selection warns; tested below
        chosen = select_backend(fmt, "cpu", backend)
    with torch.no_grad():
        return chosen.build(linear)


def quantizer_module(fmt: str):
    """The Python module defining ``fmt``'s emulated layer (and its ``quantize_weight``)."""
    emulated = next(b for b in backends_for(fmt) if b.name == "emulated")
    return sys.modules[emulated.module_cls.__module__]


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Forget which fallback warnings were already given, so 'warn once' is testable."""
    monkeypatch.setattr(base, "_warned", set())


# --------------------------------------------------------------------------------- accuracy


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("fmt", [f.name for f in all_formats()])
def test_auto_backend_shape_dtype_and_error_band(fmt, dtype):
    linear = make_linear(dtype=dtype)
    x = make_input(dtype=dtype)
    module = build(fmt, linear)
    with torch.no_grad():
        y = module(x)
        y_native = linear(x)
    assert y.shape == (2, 7, 192)
    assert y.dtype == dtype
    assert torch.isfinite(y).all()
    err = rel_error(y, fp32_reference(linear, x))
    if fmt in REFERENCE:
        assert torch.equal(y, y_native)
        lo, hi = REFERENCE_BAND
    else:
        assert fmt in ERROR_BANDS, f"add an error band for the new format {fmt!r}"
        lo, hi = ERROR_BANDS[fmt]
        # not silently the unquantized layer in the same dtype
        assert rel_error(y, y_native) > lo / 2
    assert lo <= err <= hi, f"{fmt} {dtype}: rel. error {err:.4f} ({-20 * math.log10(err):.1f} dB)"


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_every_backend_that_runs_on_cpu_stays_in_band(fmt):
    linear = make_linear(dtype=torch.bfloat16, seed=3)
    x = make_input(dtype=torch.bfloat16, seed=4)
    ref = fp32_reference(linear, x)
    ran = []
    for backend in backends_for(fmt):
        if backend.unavailable_reason(torch.device("cpu")) is not None:
            continue
        with torch.no_grad():
            y = backend.build(linear)(x)
        assert y.shape == (2, 7, 192) and y.dtype == torch.bfloat16
        lo, hi = ERROR_BANDS[fmt]
        assert lo <= rel_error(y, ref) <= hi, backend.name
        ran.append(backend.name)
    assert "emulated" in ran


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_no_nan_for_zero_rows_and_zero_inputs(fmt):
    linear = make_linear(dtype=torch.bfloat16)
    with torch.no_grad():
        linear.weight[:3] = 0  # all-zero output rows: torchao's scale rule would give 0 / 0
    x = make_input(dtype=torch.bfloat16)
    x[0, 0] = 0  # an all-zero token: per-token activation scale 0
    with torch.no_grad():
        y = build(fmt, linear, "emulated")(x)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y[0, 0], linear.bias.detach().to(y.dtype), rtol=0, atol=0)


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_fp16_with_large_activations_stays_finite(fmt):
    """Diffusion activations reach the hundreds; torchao's int8 W8A8 overflows fp16 there."""
    linear = make_linear(1024, 256, dtype=torch.float16)
    x = make_input((4, 1024), dtype=torch.float32) * 60
    x = x.half()
    with torch.no_grad():
        y = build(fmt, linear, "emulated")(x)
    assert torch.isfinite(y).all()
    assert rel_error(y, fp32_reference(linear, x)) <= ERROR_BANDS[fmt][1]


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_no_bias_and_2d_input(fmt):
    linear = make_linear(bias=False)
    module = build(fmt, linear, "emulated")
    x = make_input((5, 256))
    with torch.no_grad():
        y = module(x)
    assert y.shape == (5, 192)
    assert rel_error(y, fp32_reference(linear, x)) <= ERROR_BANDS[fmt][1]


# ----------------------------------------------------------------------- agreement with torchao


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("fmt", TORCHAO_ON_CPU)
def test_emulation_matches_torchao_on_cpu(fmt, dtype):
    """Same quantized weights to the bit; outputs equal up to BLAS kernel choice.

    Both sides run the same torch ops on the same quantized values (int8 dot products are exact
    int32 on both), so on torch 2.13 CPU the outputs are bit-identical too. The output tolerance
    (1e-5 relative for fp32, one bf16 ulp) only allows for a BLAS library picking another kernel
    for the float matmul; the dequantized weights must match exactly.
    """
    linear = make_linear(dtype=dtype, seed=5)
    x = make_input(dtype=dtype, seed=6)
    emulated = build(fmt, linear, "emulated")
    ao = build(fmt, linear, "torchao")
    assert type(ao.weight).__module__.startswith("torchao")
    assert torch.equal(emulated.dequantize(), ao.weight.dequantize())
    with torch.no_grad():
        y_emulated, y_ao = emulated(x), ao(x)
    tol = 1e-5 if dtype == torch.float32 else 2**-7
    torch.testing.assert_close(y_emulated, y_ao, rtol=tol, atol=tol * y_ao.abs().max().item())


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
def test_fp8_quantization_matches_torchao(dtype):
    """torchao's fp8 W8A8 needs sm89+, but its quantizers run on CPU: compare both halves.

    Weights against ``Float8WeightOnlyConfig`` (same per-row rule), activations against
    ``Float8Tensor.from_hp(x, PerRow())`` (what the W8A8 config calls per forward): bit-exact
    codes and scales. The product is then checked against fp32 math on torchao's dequantized
    operands (1e-5 in fp32, where only the summation order differs; one ulp in bf16, where that
    difference can flip the final rounding).
    """
    from torchao.quantization import Float8WeightOnlyConfig, PerRow, quantize_
    from torchao.quantization.quantize_.workflows import Float8Tensor

    linear = make_linear(dtype=dtype, seed=7)
    x = make_input((9, 256), dtype=dtype, seed=8)
    emulated = build("fp8", linear, "emulated")
    ao = copy.deepcopy(linear)
    quantize_(ao, Float8WeightOnlyConfig(set_inductor_config=False))
    assert torch.equal(emulated.qdata, ao.weight.qdata)
    assert torch.equal(emulated.scale, ao.weight.scale)
    assert torch.equal(emulated.dequantize(), ao.weight.dequantize())

    fp8 = quantizer_module("fp8")
    x_q, x_scale = fp8.quantize_activation(x)
    x_ao = Float8Tensor.from_hp(x, granularity=PerRow())
    assert torch.equal(x_q, x_ao.qdata) and torch.equal(x_scale, x_ao.scale)

    expected = x_ao.dequantize(torch.float32) @ ao.weight.dequantize(torch.float32).T
    expected = (expected + linear.bias.float()).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 2**-7
    with torch.no_grad():
        torch.testing.assert_close(emulated(x), expected, rtol=tol, atol=1e-5)


def test_fp4_encoding_matches_torchao_bit_for_bit():
    from torchao.prototype.mx_formats.kernels import f32_to_f4_unpacked

    grid = torch.linspace(-7, 7, 5601)  # steps of 1/400: every midpoint (tie) is on the grid
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])
    x = torch.cat([grid, ties, -ties, torch.tensor([0.0, -0.0, 1e-9, 6.0, 100.0])])
    codes = qm.fp4_e2m1_encode(x)
    assert torch.equal(codes, f32_to_f4_unpacked(x))
    assert torch.equal(qm.fp4_e2m1_decode(codes), qm.fp4_e2m1_decode(f32_to_f4_unpacked(x)))


def test_nibble_packing_round_trips():
    gen = torch.Generator().manual_seed(0)
    signed = torch.randint(-8, 8, (6, 32), generator=gen, dtype=torch.int8)
    assert torch.equal(qm.unpack_nibbles(qm.pack_nibbles(signed), signed=True), signed)
    unsigned = torch.randint(0, 16, (6, 32), generator=gen, dtype=torch.uint8)
    assert torch.equal(qm.unpack_nibbles(qm.pack_nibbles(unsigned), signed=False), unsigned)


def test_int8_exact_matmul_beyond_fp32_integer_range():
    gen = torch.Generator().manual_seed(0)
    a = torch.full((3, 4096), -128, dtype=torch.int8)  # sums reach 2**26: not exact in one fp32
    b = torch.randint(-128, 128, (5, 4096), generator=gen, dtype=torch.int8)
    expected = a.long() @ b.long().T
    assert torch.equal(qm.int8_matmul_exact(a, b).long(), expected)


# ---------------------------------------------------------------------------- backend selection


def test_auto_on_cpu_gives_fp8_emulation_and_warns_once(fresh_warnings):
    with pytest.warns(RuntimeWarning, match=r"fp8 runs in emulation") as record:
        backend = select_backend("fp8", "cpu")
    assert backend.name == "emulated" and backend.real_kernel is False
    assert "fp8 W8A8 needs CUDA compute capability >= 8.9 (this is cpu)" in str(record[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert select_backend("fp8", "cpu").name == "emulated"  # no second warning


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_auto_on_cpu_is_emulation(fmt, fresh_warnings):
    with pytest.warns(RuntimeWarning, match=fmt):
        assert select_backend(fmt, "cpu").name == "emulated"


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_emulation_is_registered_last_and_real_kernels_first(fmt):
    backends = backends_for(fmt)
    assert backends[-1].name == "emulated" and backends[-1].real_kernel is False
    assert all(b.real_kernel for b in backends[:-1])
    assert len({b.name for b in backends}) == len(backends)


@pytest.mark.parametrize(
    ("fmt", "backend", "reason"),
    [
        ("fp8", "scaled_mm", "fp8 W8A8 needs CUDA compute capability >= 8.9 (this is cpu)"),
        ("fp8", "torchao", "fp8 W8A8 needs CUDA compute capability >= 8.9 (this is cpu)"),
        ("int8", "int_mm", "needs a CUDA GPU (this is cpu)"),
    ],
)
def test_forcing_an_unavailable_backend_raises_with_the_reason(fmt, backend, reason):
    with pytest.raises(
        BackendUnavailableError, match=reason.replace("(", r"\(").replace(")", r"\)")
    ):
        select_backend(fmt, "cpu", backend)


def test_forcing_an_unknown_backend_lists_the_registered_ones():
    with pytest.raises(
        BackendUnavailableError, match="available: fused, scaled_mm, torchao, emulated"
    ):
        select_backend("fp8", "cpu", "tensorrt")


@pytest.mark.parametrize("fmt", TORCHAO_ON_CPU)
def test_forcing_torchao_on_cpu_works(fmt):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        backend = select_backend(fmt, "cpu", "torchao")
    assert backend.name == "torchao" and backend.real_kernel
    module = build(fmt, make_linear(dtype=torch.bfloat16), "torchao")
    with torch.no_grad():
        assert module(make_input(dtype=torch.bfloat16)).shape == (2, 7, 192)


@pytest.mark.parametrize("fmt", ("int8", "int8wo", "fp4wo"))
def test_torchao_refuses_fp16_layers(fmt):
    """torchao's int8 intermediates overflow fp16; its NVFP4 rejects fp16 outright."""
    with pytest.raises(PrepareError, match=r"needs bfloat16/float32 weights.*torch\.float16"):
        build(fmt, make_linear(dtype=torch.float16), "torchao")


def test_unknown_precision_lists_known_names():
    with pytest.raises(UnknownPrecisionError, match="known precisions:.*fp8.*int4wo") as info:
        select_backend("int3", "cpu")
    assert isinstance(info.value, ValueError)
    for name in QUANTIZED + REFERENCE:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("alias", "name"),
    [("FP8_E4M3", "fp8"), ("int8dq", "int8"), ("int4", "int4wo"), ("nvfp4wo", "fp4wo")],
)
def test_aliases(alias, name):
    assert canonical_name(alias) == name


# ------------------------------------------------------------------------ build once, shapes


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_weights_are_quantized_once_at_build(fmt, monkeypatch):
    module = quantizer_module(fmt)
    calls = []
    original = module.quantize_weight

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "quantize_weight", counting)
    built = build(fmt, make_linear(), "emulated")
    assert len(calls) == 1
    x = make_input()
    with torch.no_grad():
        outputs = [built(x) for _ in range(3)]
    assert len(calls) == 1
    assert all(torch.equal(outputs[0], y) for y in outputs[1:])


@pytest.mark.parametrize(("in_features", "group"), [(256, 128), (192, 64), (96, 32), (160, 32)])
def test_int4_group_size_falls_back(in_features, group):
    module = build("int4wo", make_linear(in_features, 64), "emulated")
    assert module.group_size == group
    assert module.scale.shape == (64, in_features // group)


@pytest.mark.parametrize("backend", ["emulated", "torchao"])
def test_int4_indivisible_width_is_a_prepare_error(backend):
    with pytest.raises(PrepareError, match=r"int4wo needs in_features divisible.*in_features=40"):
        build("int4wo", make_linear(40, 64), backend)


@pytest.mark.parametrize("backend", ["emulated", "torchao"])
def test_fp4_indivisible_width_is_a_prepare_error(backend):
    with pytest.raises(PrepareError, match=r"fp4wo needs in_features.*in_features=40"):
        build("fp4wo", make_linear(40, 64), backend)


@pytest.mark.parametrize("fmt", QUANTIZED)
def test_to_dtype_moves_but_keeps_quantized_data(fmt):
    linear = make_linear(dtype=torch.bfloat16)
    module = build(fmt, linear, "emulated")
    before = {n: b.dtype for n, b in module.named_buffers()}
    x = make_input(dtype=torch.bfloat16)
    with torch.no_grad():
        y = module(x)
        module.to(torch.float16)
        after = {n: b.dtype for n, b in module.named_buffers()}
        y16 = module(x.half())
    assert before == after
    assert module.bias.dtype == torch.float16  # the bias follows the model's dtype
    assert rel_error(y16, y) < 0.01


# -------------------------------------------------------------------------------------- memory


@pytest.mark.parametrize(
    ("fmt", "low", "high"),
    [
        ("int8wo", 0.45, 0.55),  # int8 codes + fp32 scale per row + bf16 bias
        ("int8", 0.45, 0.55),
        ("fp8", 0.45, 0.55),
        ("int4wo", 0.24, 0.30),  # packed nibbles + bf16 scale per 128 weights
        ("fp4wo", 0.24, 0.32),  # packed nibbles + e4m3 scale per 16 weights
    ],
)
def test_module_nbytes_against_bf16(fmt, low, high):
    linear = make_linear(dtype=torch.bfloat16)
    ratio = module_nbytes(build(fmt, linear, "emulated")) / module_nbytes(linear)
    assert low < ratio < high, ratio


# --------------------------------------------------------------------------- CUDA (skipped on CPU)

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# How far each real kernel may be from emulation on the same device (relative, whole output):
# int8 kernels and torchao's NVFP4 dequantize the same integers/codes -> bit-exact; fp8 GEMMs
# differ in accumulation order (fast accumulation) and where the bias rounds (about 1e-3 on an
# H100); torchao's CUDA int4 kernel rounds asymmetrically (min/max + zero point), so it is only
# held to the format's error band against the fp32 reference.
CUDA_AGREEMENT = {"fp8": 5e-3, "int8": 0.0, "int8wo": 0.0, "fp4wo": 0.0, "int4wo": None}


@needs_cuda
@pytest.mark.parametrize("fmt", QUANTIZED)
def test_real_kernels_on_cuda_match_emulation(fmt):
    linear = make_linear(256, 192, dtype=torch.bfloat16, seed=9).cuda()
    ref_linear = copy.deepcopy(linear)
    checked = []
    for rows in (1, 16, 77):  # int_mm pads M <= 16
        x = make_input((rows, 256), dtype=torch.bfloat16, seed=rows).cuda()
        ref = fp32_reference(ref_linear, x)
        with torch.no_grad():
            y_emulated = build(fmt, linear, "emulated").to("cuda")(x)
        for backend in backends_for(fmt):
            if backend.real_kernel is False or backend.unavailable_reason(x.device) is not None:
                continue
            with torch.no_grad():
                y = backend.build(linear)(x)
            assert y.dtype == torch.bfloat16 and y.shape == (rows, 192)
            lo, hi = ERROR_BANDS[fmt]
            assert rel_error(y, ref) <= hi, backend.name
            if CUDA_AGREEMENT[fmt] is not None:
                assert rel_error(y, y_emulated) <= CUDA_AGREEMENT[fmt], (backend.name, rows)
            checked.append(backend.name)
    assert checked, f"no real kernel for {fmt} ran on this GPU"
