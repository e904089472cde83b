"""Issue 4: per-step latency and peak memory of a FLUX.1-dev-sized transformer, one process.

A diffusers ``FluxTransformer2DModel`` with the FLUX.1-dev config and random weights built directly
on the GPU in bf16, 1024x1024 (4096 image + 512 text tokens), batch 1. Sections, in this order:

* ``gemm``: every FLUX GEMM shape alone (bf16, fp8 ``_scaled_mm``, int8 ``_int_mm`` and the fused
  Triton int8 GEMM, activation quantization kernels) with correctness checks against the formats'
  reference functions, and the SDPA backends; picks the int8 GEMM and the SDPA backend for the rest.
* ``bf16``: the plain model, per-block ``torch.compile``.
* ``tmpdiff``: ``prepare(model, ["bf16", "fp8", "int8"], backend="fused")``, per-block compile;
  warm-up of all precisions together, ms/step per precision, a 28-step denoising loop under mixed
  schedules (switching included) against the sum of its steps, recompilations after warm-up, peak
  memory, and a kernel-time breakdown per precision (torch.profiler).
* ``torchao_fp8``: the peer, torchao ``Float8DynamicActivationFloat8WeightConfig(PerRow())`` on the
  same layers and in the same compile mode (``set_inductor_config=False``: torchao's recommended
  flags turn on coordinate-descent tuning, which is a different compile mode and multiplies the
  compile time); ``torchao_int8``: ``Int8DynamicActivationInt8WeightConfig`` likewise.
* ``comfy_fp8``: ComfyUI's unscaled fp8 cast (``_comfy_fp8.py``) on the same layers.
* ``bf16_cudagraphs``, ``tmpdiff_cudagraphs``: ``bf16`` and ``tmpdiff`` with per-block CUDA graphs
  (``mode="reduce-overhead"``; not in the default list).

Every number is written to ``<out>/results.json`` as soon as it exists, and a section is skipped
when the wall-clock budget (``--budget``) would not cover it.

    PYTHONUNBUFFERED=1 python benchmarks/flux_speed.py --out $OUT            # H100, full model
    DEPTH=1 python benchmarks/flux_speed.py --sections gemm,bf16,tmpdiff      # quick smoke test
    python benchmarks/flux_speed.py --device cpu --tiny --compile none        # CPU logic check
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _comfy_fp8  # noqa: E402  (the comparison format comfy_fp8)

import tmpdiff_core.kernels as fast  # noqa: E402
from tmpdiff_core import prepare  # noqa: E402
from tmpdiff_core.formats import fp8 as fp8_format  # noqa: E402
from tmpdiff_core.formats import int8 as int8_format  # noqa: E402
from tmpdiff_core.policy import DEFAULT_EXCLUDE, is_selected  # noqa: E402

FLUX_DEV = dict(
    patch_size=1, in_channels=64, out_channels=None, num_layers=19, num_single_layers=38,
    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
    pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)  # fmt: skip
TINY = dict(
    patch_size=1, in_channels=16, out_channels=None, num_layers=1, num_single_layers=2,
    attention_head_dim=32, num_attention_heads=2, joint_attention_dim=64,
    pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(8, 12, 12),
)  # fmt: skip
# Seconds each section needs at full size on an H100 (measured, with margin); used by the guard.
SECTION_COST = {
    "gemm": 40, "bf16": 45, "tmpdiff": 120, "torchao_fp8": 30, "comfy_fp8": 20, "torchao_int8": 30,
    "bf16_cudagraphs": 40, "tmpdiff_cudagraphs": 80,
}  # fmt: skip
MIXED_SCHEDULES = {
    # a plausible searched schedule: full precision at both ends, cheap formats in between
    "realistic": ["bf16"] * 3 + ["int8"] * 6 + ["fp8"] * 15 + ["bf16"] * 4,
    # worst case for switching: the precision changes at every step
    "alternating": (["fp8", "int8", "bf16"] * 10)[:28],
}


class Bench:
    """Shared state of one run: arguments, device, deadline, results (saved as they come)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dev = torch.device(args.device)
        self.cuda = self.dev.type == "cuda"
        self.t0 = time.perf_counter()
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.res: dict = {"sections": {}, "skipped": {}, "errors": {}}
        cfg = dict(TINY if args.tiny else FLUX_DEV)
        depth = args.depth or int(os.environ.get("DEPTH", "0") or 0)
        if depth:
            cfg["num_layers"], cfg["num_single_layers"] = depth, 2 * depth
        self.cfg = cfg
        self.l_img, self.l_txt = (64, 16) if args.tiny else (4096, 512)
        self.dtype = torch.bfloat16
        self.int8_mm = args.int8_mm
        self.sdpa = "default"
        self.bf16_out: torch.Tensor | None = None  # one bf16 call's output, for error checks
        self.cudagraphs = False  # set by the *_cudagraphs sections

    # -- bookkeeping -------------------------------------------------------------------------
    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.t0)

    def save(self) -> None:
        self.res["elapsed_s"] = round(time.perf_counter() - self.t0, 1)
        tmp = self.out / "results.json.tmp"
        tmp.write_text(json.dumps(self.res, indent=1, default=str))
        tmp.replace(self.out / "results.json")

    def put(self, section: str, key: str, value) -> None:
        self.res["sections"].setdefault(section, {})[key] = value
        self.save()
        print(
            f"[{time.perf_counter() - self.t0:6.1f}s] {section}.{key} = {_short(value)}", flush=True
        )

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    # -- model and inputs --------------------------------------------------------------------
    def inputs(self, seed: int = 1) -> dict:
        g = torch.Generator(device="cpu").manual_seed(seed)
        cfg, dt, dev = self.cfg, self.dtype, self.dev

        def rnd(*shape):
            return torch.randn(*shape, generator=g).to(device=dev, dtype=dt)

        return dict(
            hidden_states=rnd(1, self.l_img, cfg["in_channels"]),
            encoder_hidden_states=rnd(1, self.l_txt, cfg["joint_attention_dim"]),
            pooled_projections=rnd(1, cfg["pooled_projection_dim"]),
            timestep=torch.tensor([0.5], device=dev, dtype=dt),
            img_ids=_ids(self.l_img, dev),
            txt_ids=torch.zeros(self.l_txt, 3, device=dev),
            guidance=torch.tensor([3.5], device=dev, dtype=dt),
            return_dict=False,
        )

    def build(self):
        from diffusers import FluxTransformer2DModel

        torch.manual_seed(0)
        prev = torch.get_default_dtype()
        torch.set_default_dtype(self.dtype)
        try:
            with torch.device(self.dev):
                model = FluxTransformer2DModel(**self.cfg)
        finally:
            torch.set_default_dtype(prev)
        model = model.eval().requires_grad_(False)
        if self.args.fuse_qkv:
            fuse_qkv(model)
        return model

    def compile_blocks(self, model, cudagraphs: bool = False) -> None:
        """Per-block ``torch.compile`` (one graph per block class and precision).

        Single blocks get canonically strided inputs: after the first one they receive slices of
        the previous block's output whose batch stride differs, and Dynamo would compile a second
        graph per precision for them (``ContiguousInputs``: a free view at batch 1).
        """
        if self.args.compile != "regional":
            return
        kw = {"mode": "reduce-overhead"} if cudagraphs else {}
        for block in model.transformer_blocks:
            block.compile(**kw)
        for i, block in enumerate(model.single_transformer_blocks):
            block.compile(**kw)
            if self.args.contiguous_blocks:
                model.single_transformer_blocks[i] = ContiguousInputs(block)

    # -- timing ------------------------------------------------------------------------------
    def call(self, model, inp: dict):
        """One denoiser call; with CUDA graphs, first tell the graph trees a new step begins."""
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        return model(**inp)

    def step_ms(self, model, inp, iters: int | None = None) -> dict:
        """Median and spread of one denoiser call (synchronized), after one untimed call."""
        iters = iters or self.args.iters
        with torch.inference_mode():
            self.call(model, inp)
            self.sync()
            times = []
            for _ in range(iters):
                t = time.perf_counter()
                self.call(model, inp)
                self.sync()
                times.append((time.perf_counter() - t) * 1000)
        return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2),
                "max_ms": round(max(times), 2), "n": iters}  # fmt: skip

    def first_call_s(self, model, inp) -> float:
        """Seconds of the first call (compilation + autotuning + the step itself)."""
        with torch.inference_mode():
            t = time.perf_counter()
            self.call(model, inp)
            self.sync()
        return round(time.perf_counter() - t, 2)

    def peak(self, fn) -> float | None:
        """Peak allocated GiB while ``fn()`` runs (model weights included)."""
        if not self.cuda:
            fn()
            return None
        self.sync()
        torch.cuda.reset_peak_memory_stats()
        fn()
        self.sync()
        return round(torch.cuda.max_memory_allocated() / 2**30, 2)

    def allocated_gib(self) -> float | None:
        return round(torch.cuda.memory_allocated() / 2**30, 2) if self.cuda else None

    def denoise(self, model, schedule: list[str], handle=None, seed: int = 2) -> torch.Tensor:
        """A 28-step flow-matching Euler loop; ``handle.set_precision`` before every step."""
        inp = self.inputs(seed)
        x = inp.pop("hidden_states")
        n = len(schedule)
        sigmas = torch.linspace(1.0, 0.0, n + 1).tolist()
        with torch.inference_mode():
            for i, p in enumerate(schedule):
                if handle is not None:
                    handle.set_precision(p)
                t = torch.full((1,), sigmas[i], device=self.dev, dtype=self.dtype)
                v = self.call(model, {**inp, "hidden_states": x, "timestep": t})[0]
                x = x + (sigmas[i + 1] - sigmas[i]) * v
        return x

    def profile(self, model, inp) -> dict | None:
        """GPU kernel time of one call, by category, and the top kernels (torch.profiler)."""
        if not self.cuda or not self.args.profile:
            return None
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as tprofile

        with torch.inference_mode():
            self.call(model, inp)
            self.sync()
            with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
                self.call(model, inp)
                self.sync()
        cats: dict[str, float] = {}
        kernels = []
        for ev in prof.key_averages():
            us = getattr(ev, "self_device_time_total", None) or getattr(
                ev, "self_cuda_time_total", 0
            )
            if not us or getattr(ev, "device_type", None) not in (
                None,
                torch.autograd.DeviceType.CUDA,
            ):
                continue
            cat = kernel_category(ev.key)
            cats[cat] = cats.get(cat, 0.0) + us / 1000
            kernels.append((us / 1000, ev.count, ev.key[:120]))
        kernels.sort(reverse=True)
        return {
            "total_kernel_ms": round(sum(cats.values()), 2),
            "by_category_ms": {
                k: round(v, 2) for k, v in sorted(cats.items(), key=lambda kv: -kv[1])
            },
            "top_kernels": [(round(ms, 2), n, name) for ms, n, name in kernels[:12]],
        }

    def cleanup(self) -> None:
        """Drop compiled graphs and cached blocks once a section has deleted its model."""
        torch._dynamo.reset()
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


class ContiguousInputs(torch.nn.Module):
    """Calls ``block`` with canonically strided ``hidden_states`` / ``encoder_hidden_states``.

    A batch-1 slice of the previous block's output is already contiguous (``.contiguous()`` is a
    no-op) but its batch stride differs, and Dynamo guards on it; restriding is a free view.
    """

    def __init__(self, block: torch.nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, *args, **kwargs):
        args = [canonical_strides(a) for a in args]
        for key in ("hidden_states", "encoder_hidden_states"):
            if key in kwargs:
                kwargs[key] = canonical_strides(kwargs[key])
        return self.block(*args, **kwargs)


def canonical_strides(t):
    """``t`` with row-major strides: a view when only size-1 dims differ, else a copy."""
    if not isinstance(t, torch.Tensor):
        return t
    if not t.is_contiguous():
        return t.contiguous()
    strides, acc = [], 1
    for size in reversed(t.shape):
        strides.append(acc)
        acc *= max(size, 1)
    strides = tuple(reversed(strides))
    return t if t.stride() == strides else t.as_strided(t.shape, strides, t.storage_offset())


def _short(v) -> str:
    s = json.dumps(v, default=str)
    return s if len(s) < 300 else s[:297] + "..."


def _ids(n: int, dev) -> torch.Tensor:
    side = int(math.isqrt(n))
    ids = torch.zeros(side, side, 3)
    ids[..., 1] = torch.arange(side)[:, None]
    ids[..., 2] = torch.arange(side)[None, :]
    return ids.reshape(-1, 3).to(dev)


def kernel_category(name: str) -> str:
    n = name.lower()
    if "quant_kernel" in n:
        return "act_quant (triton)"
    if "int8_mm_kernel" in n:
        return "gemm int8 (triton)"
    if n.startswith("triton_"):  # Inductor's kernels (names list the fused ops, sdpa included)
        return "inductor fused"
    if any(s in n for s in ("flash", "fmha", "attention", "cudnn", "sdpa")):
        return "attention"
    if any(
        s in n for s in ("gemm", "xmma", "cutlass", "nvjet", "sm90", "f8f8", "gemv", "s8s8", "imma")
    ):
        return "gemm"
    if "elementwise" in n or "reduce" in n or "cat" in n or "copy" in n:
        return "aten elementwise"
    return "other"


def fuse_qkv(model) -> int:
    """Fuse every attention's q/k/v (and added q/k/v) linears into one, dropping the originals."""
    n = 0
    for module in model.modules():
        if hasattr(module, "fuse_projections") and hasattr(module, "to_q"):
            module.fuse_projections()
            if getattr(module, "fused_projections", False):
                for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj"):
                    if hasattr(module, name):
                        delattr(module, name)
                n += 1
    return n


def recompile_limit(n: int) -> None:
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), n))


def graphs_compiled() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.float(), b.float()
    return round(((a - b).norm() / b.norm().clamp_min(1e-12)).item(), 5)


# ---------------------------------------------------------------------------------------------
# sections


def section_env(b: Bench) -> None:
    import diffusers

    info = {
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": sys.version.split()[0],
        "device": torch.cuda.get_device_name() if b.cuda else "cpu",
        "config": b.cfg,
        "tokens": {"image": b.l_img, "text": b.l_txt},
        "fuse_qkv": b.args.fuse_qkv,
        "compile": b.args.compile,
        "contiguous_blocks": b.args.contiguous_blocks,
        "command": " ".join(sys.argv),
    }
    try:
        import torchao

        info["torchao"] = torchao.__version__
    except Exception as e:  # noqa: BLE001
        info["torchao"] = f"unavailable: {e}"
    try:
        import triton

        info["triton"] = triton.__version__
    except Exception:  # noqa: BLE001
        info["triton"] = None
    if b.cuda:
        info["capability"] = torch.cuda.get_device_capability()
        info["gpu_mem_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    b.res["env"] = info
    b.save()
    print(json.dumps(info, default=str), flush=True)


def flux_gemm_shapes(
    cfg: dict, fused: bool, l_img: int, l_txt: int
) -> list[tuple[int, int, int, int]]:
    """(M, N, K, count) of every quantized linear of one step (the default policy's selection)."""
    d = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    nd, ns = cfg["num_layers"], cfg["num_single_layers"]
    out = []
    for m in (l_img, l_txt):
        qkv = [(m, 3 * d, d, nd)] if fused else [(m, d, d, 3 * nd)]
        out += qkv + [(m, d, d, nd), (m, 4 * d, d, nd), (m, d, 4 * d, nd)]
    mt = l_img + l_txt
    out += [(mt, 3 * d, d, ns)] if fused else [(mt, d, d, 3 * ns)]
    out += [(mt, 4 * d, d, ns), (mt, d, 5 * d, ns)]
    return out


def _gemm_paths(b, x, lin, f8, i8, fp8_act, int8_act, have_triton) -> dict:
    """The callables timed for one GEMM shape."""
    (xq8, xs8), (xqi, xsi) = fp8_act, int8_act
    paths = {
        "bf16": lambda: torch.nn.functional.linear(x, lin.weight, lin.bias),
        "fp8_gemm": lambda: f8.matmul(xq8, xs8, f8.bias, b.dtype),
        "fp8_linear_eager": lambda: f8(x),
        "int8_int_mm_gemm": lambda: int8_format.int_mm(xqi, i8.qdata),
        "int8_int_mm_linear_eager": lambda: i8(x),
        "act_quant_fp8_torch": lambda: fp8_format.quantize_activation(x),
        "act_quant_int8_torch": lambda: int8_format.quantize_activation(x),
    }
    if have_triton:
        paths["int8_triton_gemm"] = lambda: fast._dispatch.int8_scaled_mm(
            xqi, xsi, i8.qdata, i8.scale, i8.bias, b.dtype
        )
        paths["act_quant_fp8_triton"] = lambda: fast.quantize_fp8(x)
        paths["act_quant_int8_triton"] = lambda: fast.quantize_int8(x)
    return paths


def section_gemm(b: Bench) -> None:
    """Each GEMM shape alone: speed of each path and its error against the formats' reference."""
    sec = "gemm"
    if not b.cuda:
        b.put(sec, "note", "GPU only")
        return
    import triton.testing

    def t_ms(fn):
        return triton.testing.do_bench(fn, warmup=10, rep=40, return_mode="median")

    torch.manual_seed(0)
    shapes = flux_gemm_shapes(b.cfg, b.args.fuse_qkv, b.l_img, b.l_txt)
    totals: dict[str, float] = {}
    rows = []
    have_triton = fast.triton_reason() is None
    for m, n, k, count in shapes:
        lin = torch.nn.Linear(k, n, device=b.dev, dtype=b.dtype)
        x = torch.randn(m, k, device=b.dev, dtype=b.dtype)
        f8 = fast.FusedFp8Linear(lin)
        i8 = fast.FusedInt8Linear(lin, mm_impl="int_mm")
        ref = torch.nn.functional.linear(x.float(), lin.weight.float(), lin.bias.float())
        xq8, xs8 = fp8_format.quantize_activation(x)
        xqi, xsi = int8_format.quantize_activation(x)
        row = {"M": m, "N": n, "K": k, "count": count}
        paths = _gemm_paths(b, x, lin, f8, i8, (xq8, xs8), (xqi, xsi), have_triton)
        for name, fn in paths.items():
            try:
                t = time.perf_counter()
                ms = t_ms(fn)
                row[name] = round(ms, 4)
                if name == "int8_triton_gemm":
                    row["int8_triton_first_s"] = round(time.perf_counter() - t, 1)
                totals[name] = totals.get(name, 0.0) + ms * count
            except Exception as e:  # noqa: BLE001
                row[name] = f"failed: {type(e).__name__}: {str(e)[:160]}"
        # correctness: against fp32 math, and fused vs the formats' own functions
        row["err_fp8_vs_fp32"] = rel_err(f8(x), ref)
        row["err_int8_int_mm_vs_fp32"] = rel_err(i8(x), ref)
        emu8 = fp8_format.emulated_mm(xq8, xs8, f8.qdata, f8.scale, lin.bias, b.dtype)
        row["err_fp8_scaled_mm_vs_emulated"] = rel_err(f8.matmul(xq8, xs8, lin.bias, b.dtype), emu8)
        if have_triton:
            try:
                q, s = fast.quantize_fp8(x)
                row["fp8_quant_triton_bitexact"] = bool(
                    torch.equal(s, xs8) and torch.equal(q.view(torch.uint8), xq8.view(torch.uint8))
                )
                q, s = fast.quantize_int8(x)
                row["int8_quant_triton_bitexact"] = bool(
                    torch.equal(s, xsi) and torch.equal(q, xqi)
                )
                y_tri = fast._dispatch.int8_scaled_mm(
                    xqi, xsi, i8.qdata, i8.scale, lin.bias, b.dtype
                )
                y_ref = int8_format.rescale(
                    int8_format.int_mm(xqi, i8.qdata), xsi, i8.scale, lin.bias, b.dtype
                )
                row["int8_triton_vs_int_mm_bitexact"] = bool(torch.equal(y_tri, y_ref))
                row["int8_triton_vs_int_mm_err"] = rel_err(y_tri, y_ref)
            except Exception as e:  # noqa: BLE001
                row["triton_check"] = f"failed: {type(e).__name__}: {str(e)[:200]}"
        rows.append(row)
        print(_short(row), flush=True)
    b.put(sec, "shapes", rows)
    b.put(sec, "per_step_totals_ms", {k: round(v, 2) for k, v in totals.items()})

    # attention: 57 calls of (1, 24, 4608, 128) per step at full size
    heads, hd = b.cfg["num_attention_heads"], b.cfg["attention_head_dim"]
    n_attn = b.cfg["num_layers"] + b.cfg["num_single_layers"]
    q = torch.randn(1, heads, b.l_img + b.l_txt, hd, device=b.dev, dtype=b.dtype)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    attn = {}
    for name, backends in (
        ("default", None),
        ("flash", [SDPBackend.FLASH_ATTENTION]),
        ("cudnn", [SDPBackend.CUDNN_ATTENTION]),
        ("efficient", [SDPBackend.EFFICIENT_ATTENTION]),
    ):
        try:
            ctx = sdpa_kernel(backends) if backends else contextlib.nullcontext()
            with ctx:
                out = torch.nn.functional.scaled_dot_product_attention(q, q, q)
                ms = t_ms(
                    functools.partial(torch.nn.functional.scaled_dot_product_attention, q, q, q)
                )
            attn[name] = {"per_call_ms": round(ms, 4), "per_step_ms": round(ms * n_attn, 2)}
            if name == "default":
                ref_out = out
            else:
                attn[name]["err_vs_default"] = rel_err(out, ref_out)
        except Exception as e:  # noqa: BLE001
            attn[name] = f"failed: {type(e).__name__}: {str(e)[:160]}"
    b.put(sec, "sdpa", attn)

    # choices for the model sections
    if b.args.int8_mm == "auto":
        tri, cub = totals.get("int8_triton_gemm"), totals.get("int8_int_mm_gemm")
        ok = all(r.get("int8_triton_vs_int_mm_bitexact") for r in rows)
        # the int_mm path also writes and re-reads a 4-byte int32 accumulator: allow Triton 8% more
        b.int8_mm = "triton" if (tri and cub and ok and tri <= 1.08 * cub) else "int_mm"
    if b.args.sdpa == "auto":
        timed = {k: v["per_call_ms"] for k, v in attn.items() if isinstance(v, dict)}
        best = min(timed, key=timed.get) if timed else "default"
        b.sdpa = best if best != "default" and timed[best] < 0.97 * timed["default"] else "default"
    else:
        b.sdpa = b.args.sdpa
    b.put(sec, "choices", {"int8_mm": b.int8_mm, "sdpa": b.sdpa})


def apply_sdpa_choice(b: Bench) -> None:
    """Make the chosen SDPA backend the only fused one (for every model section alike)."""
    if not b.cuda or b.sdpa == "default":
        return
    bk = torch.backends.cuda
    bk.enable_flash_sdp(b.sdpa == "flash")
    bk.enable_cudnn_sdp(b.sdpa == "cudnn")
    bk.enable_mem_efficient_sdp(b.sdpa == "efficient")
    bk.enable_math_sdp(True)


def section_bf16(b: Bench, sec: str = "bf16", cudagraphs: bool = False) -> None:
    model = b.build()
    b.put(sec, "weights_gib", b.allocated_gib())
    inp = b.inputs()
    if b.args.eager and not cudagraphs:
        b.put(sec, "eager", b.step_ms(model, inp, iters=3))
    b.compile_blocks(model, cudagraphs=cudagraphs)
    b.cudagraphs = cudagraphs
    b.put(sec, "warmup_s", b.first_call_s(model, inp))
    if cudagraphs:  # CUDA graphs are recorded on the call after the compiling one
        b.put(sec, "record_s", b.first_call_s(model, inp))
    stats = {}
    b.put(sec, "peak_gib", b.peak(lambda: stats.update(b.step_ms(model, inp))))
    b.put(sec, "step", stats)
    b.put(sec, "profile", b.profile(model, inp))
    loop = []
    for _ in range(2):
        t = time.perf_counter()
        b.denoise(model, ["bf16"] * b.args.steps)
        b.sync()
        loop.append(time.perf_counter() - t)
    b.put(sec, "loop_28_s", round(min(loop), 3))
    if not cudagraphs:
        with torch.inference_mode():
            b.bf16_out = model(**inp)[0].float().cpu()


def section_tmpdiff(b: Bench, sec: str = "tmpdiff", cudagraphs: bool = False) -> None:
    precisions = [p.strip() for p in b.args.precisions.split(",")]
    model = b.build()
    base = b.allocated_gib()
    backend = "fused" if b.cuda else "auto"
    if b.int8_mm == "auto":  # no gemm section ran to choose
        b.int8_mm = "triton" if fast.triton_reason() is None else "int_mm"
    fast.set_int8_mm_impl(b.int8_mm)
    t = time.perf_counter()
    handle = prepare(model, precisions, backend=backend)
    b.sync()
    b.put(sec, "prepare_s", round(time.perf_counter() - t, 2))
    b.put(sec, "summary", handle.summary())
    rep = handle.memory_report()
    b.put(sec, "memory_report_gib", {
        "bf16_model": round(rep.bf16_model_bytes / 2**30, 2),
        "variants": {p: round(v / 2**30, 2) for p, v in rep.variant_bytes.items()},
        "total_resident": round(rep.total_bytes / 2**30, 2),
        "total_over_bf16": round(rep.total_bytes / max(rep.bf16_model_bytes, 1), 3),
    })  # fmt: skip
    b.put(sec, "allocated_gib", {"bf16_model": base, "prepared": b.allocated_gib()})
    inp = b.inputs()
    # sanity of the kernels on the whole model: one call per precision against the reference
    outs = {}
    with torch.inference_mode():
        for p in handle.precisions:
            handle.set_precision(p)
            outs[p] = model(**inp)[0].float()
    errs = {p: rel_err(o, outs["bf16"]) for p, o in outs.items()}
    if b.bf16_out is not None:
        errs["bf16_vs_plain_model"] = rel_err(outs["bf16"].cpu(), b.bf16_out)
    b.put(sec, "rel_err_vs_bf16_one_call", errs)
    if b.args.eager:
        eager = {}
        for p in handle.precisions:
            handle.set_precision(p)
            eager[p] = b.step_ms(model, inp, iters=3)
        b.put(sec, "eager", eager)
    del outs

    recompile_limit(4 * len(handle.precisions))
    b.compile_blocks(model, cudagraphs=cudagraphs)
    b.cudagraphs = cudagraphs
    g0 = graphs_compiled()
    warm = {}
    t_all = time.perf_counter()
    for p in handle.precisions:
        handle.set_precision(p)
        warm[p] = b.first_call_s(model, inp)
        if cudagraphs:  # CUDA graphs are recorded on the calls after the compiling one
            warm[f"{p}_record"] = b.first_call_s(model, inp)
    warm["all_precisions_s"] = round(time.perf_counter() - t_all, 2)
    warm["graphs_compiled"] = graphs_compiled() - g0
    b.put(sec, "warmup", warm)

    g1 = graphs_compiled()
    steps, peaks, profiles = {}, {}, {}
    for p in handle.precisions:
        handle.set_precision(p)
        stats = {}
        peaks[p] = b.peak(lambda stats=stats: stats.update(b.step_ms(model, inp)))
        steps[p] = stats
        b.put(sec, f"step_{p}", stats)
    ref_ms = steps[handle.precisions[0]]["median_ms"]
    b.put(
        sec, "ratio_vs_own_bf16", {p: round(ref_ms / s["median_ms"], 3) for p, s in steps.items()}
    )
    plain_sec = "bf16_cudagraphs" if cudagraphs else "bf16"
    bf16_plain = b.res["sections"].get(plain_sec, {}).get("step", {}).get("median_ms")
    if bf16_plain:
        b.put(
            sec,
            "ratio_vs_plain_bf16",
            {p: round(bf16_plain / s["median_ms"], 3) for p, s in steps.items()},
        )
    b.put(sec, "peak_gib_per_precision", peaks)

    # switching: a denoising loop under a mixed schedule vs the sum of its steps' medians
    mixed = {}
    for name, sched in MIXED_SCHEDULES.items():
        sched = [p if p in handle.precisions else handle.precisions[0] for p in sched][
            : b.args.steps
        ]
        predicted = sum(steps[p]["median_ms"] for p in sched)
        runs = []
        peak_holder = {}

        def run(sched=sched, runs=runs):
            t = time.perf_counter()
            b.denoise(model, sched, handle)
            b.sync()
            runs.append((time.perf_counter() - t) * 1000)

        peak_holder["gib"] = b.peak(run)
        run()
        run()
        measured = statistics.median(runs)
        switches = sum(1 for a, c in zip(sched, sched[1:], strict=False) if a != c)
        mixed[name] = {
            "schedule": sched,
            "switches": switches,
            "measured_ms": round(measured, 1),
            "predicted_from_steps_ms": round(predicted, 1),
            "overhead_per_step_pct": round(100 * (measured - predicted) / predicted, 2),
            "runs_ms": [round(r, 1) for r in runs],
            "peak_gib": peak_holder["gib"],
        }
        b.put(sec, f"mixed_{name}", mixed[name])
    # the switch itself: one integer store
    t = time.perf_counter()
    for i in range(100_000):
        handle.state.index = i % len(handle.precisions)
    b.put(sec, "switch_call_ns", round((time.perf_counter() - t) * 1e4, 1))
    b.put(sec, "graphs_compiled_after_warmup", graphs_compiled() - g1)

    for p in handle.precisions:
        handle.set_precision(p)
        try:
            profiles[p] = b.profile(model, inp)
        except Exception as e:  # noqa: BLE001
            profiles[p] = f"failed: {type(e).__name__}: {str(e)[:200]}"
    b.put(sec, "profile", profiles)
    b.put(sec, "graphs_compiled_after_warmup_final", graphs_compiled() - g1)


def section_bf16_cudagraphs(b: Bench) -> None:
    """The plain bf16 model, per-block compiled with CUDA graphs (``reduce-overhead``)."""
    b.args.profile = False
    section_bf16(b, "bf16_cudagraphs", cudagraphs=True)


def section_tmpdiff_cudagraphs(b: Bench) -> None:
    """The same prepared model, per-block compiled with CUDA graphs (``reduce-overhead``)."""
    b.args.eager = False
    b.args.profile = False
    section_tmpdiff(b, "tmpdiff_cudagraphs", cudagraphs=True)


def section_comfy(b: Bench) -> None:
    sec = "comfy_fp8"
    _comfy_fp8.register()  # idempotent
    model = b.build()
    handle = prepare(model, ["bf16", _comfy_fp8.NAME], backend="auto")
    handle.set_precision(_comfy_fp8.NAME)
    inp = b.inputs()
    with torch.inference_mode():
        out = model(**inp)[0].float()
    if b.bf16_out is not None:
        b.put(sec, "rel_err_vs_bf16_one_call", rel_err(out.cpu(), b.bf16_out))
    b.compile_blocks(model)
    b.put(sec, "warmup_s", b.first_call_s(model, inp))
    stats = {}
    b.put(sec, "peak_gib", b.peak(lambda: stats.update(b.step_ms(model, inp))))
    b.put(sec, "step", stats)


def _torchao(b: Bench, sec: str, make_config) -> None:
    from torchao.quantization import quantize_

    model = b.build()
    inp = b.inputs()
    t = time.perf_counter()
    config = make_config()
    quantize_(
        model,
        config,
        filter_fn=lambda mod, fqn: (
            isinstance(mod, torch.nn.Linear) and is_selected(fqn, None, DEFAULT_EXCLUDE)
        ),
    )
    b.sync()
    b.put(sec, "quantize_s", round(time.perf_counter() - t, 2))
    b.put(sec, "allocated_gib", b.allocated_gib())
    with torch.inference_mode():
        out = model(**inp)[0].float()
    if b.bf16_out is not None:
        b.put(sec, "rel_err_vs_bf16_one_call", rel_err(out.cpu(), b.bf16_out))
    b.compile_blocks(model)
    b.put(sec, "warmup_s", b.first_call_s(model, inp))
    stats = {}
    b.put(sec, "peak_gib", b.peak(lambda: stats.update(b.step_ms(model, inp))))
    b.put(sec, "step", stats)
    ind = torch._inductor.config
    b.put(sec, "inductor_flags", {
        "coordinate_descent_tuning": ind.coordinate_descent_tuning,
        "force_fuse_int_mm_with_mul": getattr(ind, "force_fuse_int_mm_with_mul", None),
    })  # fmt: skip


def section_torchao_fp8(b: Bench) -> None:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    _torchao(
        b,
        "torchao_fp8",
        lambda: Float8DynamicActivationFloat8WeightConfig(
            granularity=PerRow(), set_inductor_config=False
        ),
    )


def section_torchao_int8(b: Bench) -> None:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    _torchao(
        b, "torchao_int8", lambda: Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    )


SECTIONS = {
    "gemm": section_gemm,
    "bf16": section_bf16,
    "tmpdiff": section_tmpdiff,
    "torchao_fp8": section_torchao_fp8,
    "comfy_fp8": section_comfy,
    "torchao_int8": section_torchao_int8,
    "bf16_cudagraphs": section_bf16_cudagraphs,
    "tmpdiff_cudagraphs": section_tmpdiff_cudagraphs,
}


def summary_table(b: Bench) -> str:
    s = b.res["sections"]
    base = s.get("bf16", {}).get("step", {}).get("median_ms")
    rows = [("config", "ms/step", "x bf16", "warm-up s", "peak GiB")]

    def add(name, ms, warm, peak):
        ratio = f"{base / ms:.2f}" if base and ms else "-"
        rows.append((name, f"{ms:.1f}" if ms else "-", ratio, str(warm), str(peak)))

    if "bf16" in s:
        add("bf16 (plain)", base, s["bf16"].get("warmup_s"), s["bf16"].get("peak_gib"))
    if "step" in s.get("bf16_cudagraphs", {}):
        v = s["bf16_cudagraphs"]
        add("bf16 (plain) cudagraphs", v["step"]["median_ms"], v.get("warmup_s"), v.get("peak_gib"))
    for sec_name in ("tmpdiff", "tmpdiff_cudagraphs"):
        sec = s.get(sec_name, {})
        for k, v in sec.items():
            if k.startswith("step_"):
                p = k[5:]
                add(f"{sec_name} {p}", v.get("median_ms"), sec.get("warmup", {}).get(p),
                    sec.get("peak_gib_per_precision", {}).get(p))  # fmt: skip
    td = s.get("tmpdiff", {})
    for name in ("comfy_fp8", "torchao_fp8", "torchao_int8"):
        if "step" in s.get(name, {}):
            add(
                name,
                s[name]["step"].get("median_ms"),
                s[name].get("warmup_s"),
                s[name].get("peak_gib"),
            )
    for k in ("mixed_realistic", "mixed_alternating"):
        if k in td:
            v = td[k]
            rows.append((f"{k} (28 steps)", f"{v['measured_ms'] / len(v['schedule']):.1f}",
                         f"overhead {v['overhead_per_step_pct']}%", "-", str(v["peak_gib"])))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tiny", action="store_true", help="a tiny config (CPU logic checks)")
    ap.add_argument("--depth", type=int, default=0, help="double blocks (single = 2x); env DEPTH")
    ap.add_argument("--sections", default=",".join(s for s in SECTIONS if "cudagraphs" not in s))
    ap.add_argument("--precisions", default="bf16,fp8,int8")
    ap.add_argument("--compile", choices=("regional", "none"), default="regional")
    ap.add_argument("--int8-mm", choices=("auto", "triton", "int_mm"), default="auto")
    ap.add_argument(
        "--sdpa", choices=("auto", "default", "flash", "cudnn", "efficient"), default="auto"
    )
    ap.add_argument("--fuse-qkv", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--contiguous-blocks", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--eager", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BUDGET", 540)))
    ap.add_argument("--out", default=os.environ.get("OUT") or "bench_out")
    args = ap.parse_args(argv)
    if args.sdpa == "auto" and "gemm" not in args.sections:
        args.sdpa = "default"
    b = Bench(args)
    fast.register()  # backend "fused" for fp8 and int8
    _comfy_fp8.register()  # the comparison format comfy_fp8
    torch.set_grad_enabled(False)
    with contextlib.suppress(Exception):
        torch._logging.set_logs(recompiles=True)
    section_env(b)
    scale = 1.0 if not args.tiny else 0.05
    for name in [s.strip() for s in args.sections.split(",") if s.strip()]:
        need = SECTION_COST.get(name, 60) * scale
        if b.left() < need:
            b.res["skipped"][name] = f"{b.left():.0f}s left < {need:.0f}s needed"
            b.save()
            print(f"skip {name}: {b.res['skipped'][name]}", flush=True)
            continue
        if name != "gemm":
            apply_sdpa_choice(b)
        t = time.perf_counter()
        print(f"=== {name} ({b.left():.0f}s left)", flush=True)
        try:
            SECTIONS[name](b)
        except Exception as e:  # noqa: BLE001
            b.res["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2500:]}"
            print(f"section {name} failed: {b.res['errors'][name]}", flush=True)
        b.cudagraphs = False
        b.cleanup()  # the section's model went with its frame; drop compiled graphs and cache
        b.res.setdefault("section_s", {})[name] = round(time.perf_counter() - t, 1)
        b.save()
    table = summary_table(b)
    b.res["table"] = table
    b.save()
    print(table, flush=True)
    return b.res


if __name__ == "__main__":
    main()
