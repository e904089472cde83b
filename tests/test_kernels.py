"""CPU tests of ``tmpdiff_core.kernels`` (the ``fused`` CUDA backend) and the speed benchmark.

The GPU paths themselves run in ``benchmarks/flux_speed.py`` on an H100. Here: the dispatch (CPU,
no Triton, under ``torch.compile`` -> the formats' own PyTorch functions), the layers' numbers
against the formats' layers, the backend's registration and refusals, the Triton kernels' math
under the Triton interpreter (skipped when Triton is not installed), and the benchmark's logic on
a tiny model.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tmpdiff_core.kernels as fast
from tmpdiff_core.errors import BackendUnavailableError, PrepareError
from tmpdiff_core.formats import backends_for, fp8, int8, select_backend
from tmpdiff_core.formats import base as formats_base
from tmpdiff_core.kernels import _dispatch

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _x(m: int, k: int, dtype=torch.bfloat16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(m, k, generator=g) * torch.logspace(-2, 2, m)[:, None]
    return x.to(dtype)


# --- registration and dispatch ---------------------------------------------------------------


@pytest.fixture(autouse=True)
def _restore_format_registry():
    """Formats registered by a test (``comfy_fp8``) must not leak into later test files."""
    saved = (
        dict(formats_base._FORMATS),
        dict(formats_base._ALIASES),
        {k: list(v) for k, v in formats_base._BACKENDS.items()},
    )
    yield
    for current, old in zip(
        (formats_base._FORMATS, formats_base._ALIASES, formats_base._BACKENDS), saved, strict=True
    ):
        current.clear()
        current.update(old)


def test_fused_backend_is_first_on_cuda_and_emulation_stays_the_cpu_choice():
    fast.register()  # idempotent: formats already registered it on import
    for name in ("fp8", "int8"):
        names = [b.name for b in backends_for(name)]
        assert names.count("fused") == 1
        assert names[0] == "fused" and names[-1] == "emulated"
        assert select_backend(name, "cpu").name == "emulated"


def test_fused_backend_refuses_cpu_with_a_reason():
    fast.register()
    with pytest.raises(BackendUnavailableError, match="fused fp8"):
        select_backend("fp8", "cpu", "fused")
    with pytest.raises(BackendUnavailableError, match="fused int8"):
        select_backend("int8", "cpu", "fused")


def test_fused_backend_build_checks_shapes():
    backend = fast.FusedBackend("fp8")
    with pytest.raises(PrepareError, match="divisible by 16"):
        backend.build(torch.nn.Linear(24, 32))
    with pytest.raises(PrepareError, match="divisible by 8"):
        fast.FusedBackend("int8").build(torch.nn.Linear(12, 32))
    with pytest.raises(ValueError):
        fast.FusedBackend("int4wo")


def test_set_int8_mm_impl():
    fast.register()
    fast.set_int8_mm_impl("int_mm")
    assert [b for b in backends_for("int8") if b.name == "fused"][0].int8_mm_impl == "int_mm"
    fast.set_int8_mm_impl("triton")
    assert fast.FusedBackend("int8").build(torch.nn.Linear(16, 16)).mm_impl == "triton"
    with pytest.raises(ValueError):
        fast.set_int8_mm_impl("cublas")


def test_cpu_dispatch_is_the_formats_math():
    x = _x(5, 64)
    assert not fast.use_triton(x)
    q, s = fast.quantize_fp8(x)
    rq, rs = fp8.quantize_activation(x)
    assert torch.equal(q.view(torch.uint8), rq.view(torch.uint8)) and torch.equal(s, rs)
    q, s = fast.quantize_int8(x)
    rq, rs = int8.quantize_activation(x)
    assert torch.equal(q, rq) and torch.equal(s, rs)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("rows", [1, 16, 33])
def test_fused_int8_linear_matches_the_format_layer(dtype, rows):
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 48).to(dtype)
    ref_layer = int8.Int8Linear(lin)
    x = _x(rows, 64, dtype).reshape(1, rows, 64)
    for impl in ("triton", "int_mm"):
        layer = fast.FusedInt8Linear(lin, mm_impl=impl)
        assert torch.equal(layer.qdata, ref_layer.qdata) and torch.equal(
            layer.scale, ref_layer.scale
        )
        if impl == "triton":  # on CPU the fused GEMM is the exact int32 reference
            assert torch.equal(layer(x), ref_layer(x))
    with pytest.raises(ValueError):
        fast.FusedInt8Linear(lin, mm_impl="nope")


def test_fused_fp8_linear_keeps_the_format_weights():
    lin = torch.nn.Linear(64, 32)
    layer = fast.FusedFp8Linear(lin)
    ref = fp8.Fp8Linear(lin)
    assert torch.equal(layer.qdata.view(torch.uint8), ref.qdata.view(torch.uint8))
    assert torch.equal(layer.scale, ref.scale)
    assert isinstance(layer, fp8.Fp8ScaledMmLinear)


def test_use_triton_false_while_compiling(monkeypatch):
    """Under torch.compile the quantization must stay visible to Inductor (no Triton call)."""
    monkeypatch.setattr(_dispatch, "HAVE_TRITON", True)
    x = _x(2, 16)
    monkeypatch.setattr(torch.Tensor, "device", property(lambda self: torch.device("cuda")))
    assert _dispatch.use_triton(x)  # eager on "CUDA" with Triton: the kernel
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not _dispatch.use_triton(x)  # compiling: the PyTorch ops Inductor fuses


def test_fused_layers_compile_without_graph_breaks():
    """The fused layers trace into one graph (CPU, eager backend): no lru_cache, no Triton."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    lin = torch.nn.Linear(32, 16)
    layer = fast.FusedInt8Linear(lin, mm_impl="triton")
    counter = CompileCounter()
    compiled = torch.compile(layer, backend=counter, fullgraph=True)
    x = _x(4, 32, torch.float32)
    assert torch.equal(compiled(x), layer(x))
    assert counter.frame_count == 1


def test_int8_scaled_mm_cpu_reference_matches_rescale():
    torch.manual_seed(1)
    lin = torch.nn.Linear(40, 24)
    layer = int8.Int8Linear(lin)
    xq, xs = int8.quantize_activation(_x(7, 40, torch.float32))
    out = _dispatch.int8_scaled_mm(xq, xs, layer.qdata, layer.scale, lin.bias, torch.float32)
    ref = int8.rescale(
        int8.qm.int8_matmul_exact(xq, layer.qdata), xs, layer.scale, lin.bias, torch.float32
    )
    assert torch.equal(out, ref)


# --- Triton kernels under the interpreter -----------------------------------------------------


def test_triton_kernels_in_a_child_process():
    """Runs the ``test_interp_*`` tests below in a child with ``TRITON_INTERPRET=1``.

    The interpreter must be chosen before anything imports Triton (its standard library is
    decorated at import), which a shared pytest process cannot promise.
    """
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-o", "addopts=", "-p", "no:cacheprovider", "-p", "no:warnings",
         __file__, "-k", "test_interp_"],
        env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert " passed" in last and "skipped" not in last, last


@pytest.fixture
def triton_interp(monkeypatch):
    """``tmpdiff_core.kernels._triton`` under the Triton interpreter (CPU numpy), child only."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("runs in the child process of test_triton_kernels_in_a_child_process")
    import triton.runtime.interpreter as interp

    # numpy >= 2 refuses int() of the interpreter's 1-element scalar arrays (loop bounds)
    original = interp._patch_lang_tensor

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    monkeypatch.setattr(interp, "_patch_lang_tensor", patched)
    module = importlib.import_module("tmpdiff_core.kernels._triton")
    assert module.INTERPRET
    return module


def _fp8_equal_up_to_interpreter_rounding(q: torch.Tensor, ref: torch.Tensor) -> bool:
    """The interpreter's own fp8 cast is not IEEE: it rounds ties away from zero and drops the
    carry into the exponent (127.04 -> 64 where PyTorch and the GPU give 128). So codes may differ
    by one e4m3 step, or by that carry; everything else must match. The GPU cast is checked
    bit-exact by ``benchmarks/flux_speed.py`` (``fp8_quant_triton_bitexact``)."""
    a, b = q.float(), ref.float()
    step = torch.exp2(torch.floor(torch.log2(b.abs().clamp_min(2**-6))) - 3)
    ok = (a == b) | ((a - b).abs() <= step) | ((a * 2 == b) & (torch.log2(b.abs()).frac() == 0))
    return bool(ok.all()) and (a != b).float().mean().item() < 0.05


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_interp_fp8_quant_matches_the_format(triton_interp, dtype):
    x = _x(6, 100, dtype)
    x[2] = 0  # an all-zero row takes scale 1
    q, s = triton_interp.fp8_rowwise_quant(x)
    rq, rs = fp8.quantize_activation(x)
    assert torch.equal(s, rs)
    assert _fp8_equal_up_to_interpreter_rounding(q, rq)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_interp_int8_quant_matches_the_format(triton_interp, dtype):
    x = _x(6, 100, dtype, seed=3)
    x[4] = 0
    x[1, :7] = torch.tensor([0.5, 1.5, 2.5, -0.5, -2.5, 127.49, -128.0]).to(dtype)  # ties, edges
    q, s = triton_interp.int8_rowwise_quant(x, int8.EPS)
    rq, rs = int8.quantize_activation(x)
    assert torch.equal(s, rs)
    assert torch.equal(q, rq)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize(
    ("m", "n", "k", "bias"), [(37, 40, 72, True), (1, 24, 48, False), (16, 8, 16, True)]
)
def test_interp_int8_mm_matches_rescale(triton_interp, dtype, m, n, k, bias):
    torch.manual_seed(m + n + k)
    lin = torch.nn.Linear(k, n, bias=bias).to(dtype)
    layer = int8.Int8Linear(lin)
    xq, xs = int8.quantize_activation(_x(m, k, dtype, seed=m))
    b = layer.bias_as(dtype)
    out = triton_interp.int8_scaled_mm(xq, xs, layer.qdata, layer.scale, b, dtype)
    ref = int8.rescale(int8.qm.int8_matmul_exact(xq, layer.qdata), xs, layer.scale, b, dtype)
    assert out.dtype == dtype and out.shape == (m, n)
    assert torch.equal(out, ref)


def test_interp_rows_longer_than_a_chunk(triton_interp):
    """Rows wider than the kernels' 4096-column chunk: two passes over several chunks."""
    x = _x(3, 5000, torch.bfloat16, seed=8) / 10
    q, s = triton_interp.int8_rowwise_quant(x, int8.EPS)
    rq, rs = int8.quantize_activation(x)
    assert torch.equal(q, rq) and torch.equal(s, rs)
    x[1, 4800] = 30.0  # the row's amax sits in the last chunk
    q, s = triton_interp.fp8_rowwise_quant(x)
    rq, rs = fp8.quantize_activation(x)
    assert torch.equal(s, rs) and _fp8_equal_up_to_interpreter_rounding(q, rq)


# --- on a CUDA GPU (run on the device: python -m pytest tests/test_kernels.py -k cuda) ---------

needs_cuda_triton = pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
    reason="needs a CUDA GPU and Triton",
)


@needs_cuda_triton
@pytest.mark.parametrize("cls", [fast.FusedInt8Linear, fast.FusedFp8Linear])
def test_cuda_fused_layers_compiled_match_eager(cls):
    """Under torch.compile (Inductor quantizes; the int8 GEMM is the triton_op Inductor launches):
    the eager layer's numbers, up to Inductor rounding some activation scales differently
    (measured 1.2% apart for fp8, inside the format's own error of ~3.7% vs fp32)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(1024, 512).cuda().bfloat16()
    layer = cls(lin)
    x = (_x(77, 1024, seed=4) / 10).cuda()
    torch._dynamo.reset()
    got, want = torch.compile(layer, fullgraph=True)(x), layer(x)
    assert ((got - want).float().norm() / want.float().norm()).item() < 3e-2


# --- the benchmark's logic on a tiny model ----------------------------------------------------


@pytest.fixture
def flux_speed():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("flux_speed")
    finally:
        sys.path.remove(str(BENCH))


def test_gemm_shapes_count_every_quantized_linear(flux_speed):
    cfg = dict(flux_speed.FLUX_DEV)
    shapes = flux_speed.flux_gemm_shapes(cfg, fused=True, l_img=4096, l_txt=512)
    # per double block: 4 linears x 2 streams; per single block: qkv, proj_mlp, proj_out
    assert sum(c for *_, c in shapes) == 19 * 8 + 38 * 3
    unfused = flux_speed.flux_gemm_shapes(cfg, fused=False, l_img=4096, l_txt=512)
    assert sum(c for *_, c in unfused) == 19 * 12 + 38 * 5
    flops = sum(2 * m * n * k * c for m, n, k, c in shapes)
    assert flops == sum(2 * m * n * k * c for m, n, k, c in unfused)


def test_fuse_qkv_keeps_the_function(flux_speed):
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    model = FluxTransformer2DModel(**flux_speed.TINY).eval()
    b = flux_speed.Bench(
        flux_speed.main.__globals__["argparse"].Namespace(
            device="cpu", tiny=True, depth=0, out="/tmp/tmpdiff_bench_test", int8_mm="auto",
            fuse_qkv=False, iters=1, steps=2, budget=60, compile="none", profile=False, eager=False,
            contiguous_blocks=True, sdpa="default",
        )
    )  # fmt: skip
    b.dtype = torch.float32
    inp = b.inputs()
    with torch.no_grad():
        before = model(**inp)[0]
        assert flux_speed.fuse_qkv(model) == 3
        after = model(**inp)[0]
    assert not any(n.endswith(("to_q", "add_k_proj")) for n, _ in model.named_modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_kernel_categories(flux_speed):
    cat = flux_speed.kernel_category
    assert cat("_int8_quant_kernel") == "act_quant (triton)"
    assert cat("_int8_mm_kernel") == "gemm int8 (triton)"
    assert cat("pytorch_flash::flash_fwd_kernel") == "attention"
    assert cat("sm90_xmma_gemm_bf16bf16_bf16f32") == "gemm"
    assert cat("triton_per_fused_add_mul_0") == "inductor fused"


def test_benchmark_runs_on_a_tiny_cpu_model(flux_speed, tmp_path):
    res = flux_speed.main(
        ["--device", "cpu", "--tiny", "--compile", "none", "--iters", "1", "--steps", "4",
         "--sections", "gemm,bf16,tmpdiff,comfy_fp8", "--out", str(tmp_path), "--no-profile"]
    )  # fmt: skip
    assert not res["errors"], res["errors"]
    td = res["sections"]["tmpdiff"]
    assert set(td["rel_err_vs_bf16_one_call"]) >= {"bf16", "fp8", "int8"}
    assert td["rel_err_vs_bf16_one_call"]["bf16"] == 0.0
    assert 0 < td["rel_err_vs_bf16_one_call"]["fp8"] < 0.1
    assert td["graphs_compiled_after_warmup"] == 0
    assert td["mixed_alternating"]["switches"] == 3
    assert "comfy_fp8" in res["sections"] and (tmp_path / "results.json").exists()
    assert "tmpdiff fp8" in res["table"]


def test_quality_script_uses_the_speed_benchmarks_schedule(flux_speed):
    quality = importlib.import_module("quality_per_precision")
    assert quality.mixed_schedule(28) == flux_speed.MIXED_SCHEDULES["realistic"]
    assert (
        quality.mixed_schedule(20)[:3] == ["bf16"] * 3 and quality.mixed_schedule(20)[-1] == "bf16"
    )


def test_comfy_fp8_format_is_the_unscaled_cast():
    sys.path.insert(0, str(BENCH))
    try:
        comfy = importlib.import_module("_comfy_fp8")
    finally:
        sys.path.remove(str(BENCH))
    comfy.register()  # idempotent; the registry is restored after every test here
    lin = torch.nn.Linear(32, 16)
    layer = select_backend(comfy.NAME, "cpu").build(lin)
    x = _x(5, 32, torch.float32)
    xq = x.clamp(-448, 448).to(torch.float8_e4m3fn).float()
    ref = xq @ lin.weight.detach().to(torch.float8_e4m3fn).float().T + lin.bias.detach()
    assert torch.equal(layer(x), ref)
