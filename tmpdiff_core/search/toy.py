"""A tiny denoiser with real quantization: the search's test bench and CLI demo (``--model toy``).

``GaussianMixtureDenoiser`` is the exact (Bayes-optimal) rectified-flow denoiser of a known data
distribution: 8 "icons" (flat-coloured discs and squares on a light background, 3×24×24) whose
foreground colour varies along a 3-D subspace, plus a little isotropic noise. It is written with
four ``nn.Linear`` layers (prototype and subspace projections and their transposes), so
``tmpdiff_core.prepare`` quantizes it with the project's own (emulated) formats; everything else
(softmax over classes, time-dependent gains) stays in float32. Sampling is plain Euler on a uniform
time grid, so an error injected at one step is carried by every later step, partly damped by the
denoiser and partly amplified (a wrong class is never recovered), as in a real sampler.

Each prompt ``"toy-k"`` fixes nothing about the class (the model is unconditional); prompts only
index the calibration batch, one image per prompt and seed. A batch of 8 images × 8 Euler steps
takes ~10 ms on one CPU core: exhaustive enumeration of 3^6 or 3^7 schedules is a test, not a job.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..formats import canonical_name, get_format
from ..prepare import PreparedModel, prepare, unprepare
from .evaluator import Evaluator, Outputs

__all__ = ["CompoundingRun", "GaussianMixtureDenoiser", "ToyFlow", "toy_evaluator"]

LATENT = (3, 24, 24)
N_CLASSES = 8
RANK = 3


def _icons(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means ``(K, d)`` in [-1, 1] and orthonormal colour subspaces ``(K, d, RANK)``."""
    gen = torch.Generator().manual_seed(seed)
    c, h, w = LATENT
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    means, bases = [], []
    for _ in range(N_CLASSES):
        img = (0.8 + 0.15 * torch.rand(c, 1, 1, generator=gen)).expand(c, h, w).clone()
        fg = torch.zeros(h, w, dtype=torch.bool)
        for _ in range(2):
            colour = torch.rand(c, 1, 1, generator=gen)
            cx, cy = (torch.rand(2, generator=gen) * 12 + 6).tolist()
            r = float(torch.rand(1, generator=gen) * 4 + 3)
            if torch.rand(1, generator=gen) < 0.5:
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            else:
                mask = ((xx - cx).abs() < r) & ((yy - cy).abs() < r)
            img = torch.where(mask, colour.expand(c, h, w), img)
            fg |= mask
        means.append((img * 2 - 1).flatten())
        basis = torch.zeros(c, h, w, RANK)
        for ch in range(c):
            basis[ch, :, :, ch % RANK] = fg.float()
        basis = basis.reshape(-1, RANK)
        bases.append(basis / basis.norm(dim=0, keepdim=True))
    return torch.stack(means), torch.stack(bases)


class GaussianMixtureDenoiser(nn.Module):
    """Velocity ``v(x_t, t) = (x_t - E[x_0 | x_t]) / t`` of a mixture of low-rank Gaussians.

    Data: ``x_0 = mu_k + U_k a + delta·n`` with ``a ~ N(0, lam·I_r)``, ``n ~ N(0, I)``, k uniform;
    path ``x_t = (1 - t) x_0 + t ε``. The posterior mean is closed-form; the four linear layers
    hold ``mu`` and ``U`` (and their transposes), the only weights there are to quantize.
    """

    def __init__(
        self, means: torch.Tensor, bases: torch.Tensor, lam: float = 4.0, delta: float = 0.05
    ):
        super().__init__()
        k, d = means.shape
        r = bases.shape[-1]
        self.k, self.r, self.lam, self.d2 = k, r, lam, delta**2
        self.proj_mu = nn.Linear(d, k, bias=False)
        self.proj_u = nn.Linear(d, k * r, bias=False)
        self.lift_mu = nn.Linear(k, d, bias=False)
        self.lift_u = nn.Linear(k * r, d, bias=False)
        with torch.no_grad():
            self.proj_mu.weight.copy_(means)
            self.proj_u.weight.copy_(bases.permute(0, 2, 1).reshape(k * r, d))
            self.lift_mu.weight.copy_(means.T)
            self.lift_u.weight.copy_(bases.permute(1, 0, 2).reshape(d, k * r))
        self.register_buffer("mu_sq", (means**2).sum(1))
        self.register_buffer("u_mu", torch.einsum("kdr,kd->kr", bases, means))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shape, b = x.shape, x.shape[0]
        x = x.flatten(1)
        t = t.view(-1, 1).clamp(min=1e-3)
        m = 1 - t
        var_off = m * m * self.d2 + t * t  # variance of x_t off the class subspace
        var_on = m * m * (self.lam + self.d2) + t * t  # ... and along it
        mux = self.proj_mu(x)
        z = self.proj_u(x).view(b, self.k, self.r) - m[:, :, None] * self.u_mu
        r2 = (x * x).sum(1, keepdim=True) - 2 * m * mux + m * m * self.mu_sq
        z2 = (z * z).sum(-1)
        w = torch.softmax(-0.5 * ((r2 - z2) / var_off + z2 / var_on), dim=1)
        g_off, g_on = self.d2 * m / var_off, (self.lam + self.d2) * m / var_on
        x0 = (
            self.lift_mu(w) * (1 - g_off * m)
            + g_off * x
            + (g_on - g_off) * self.lift_u((w[:, :, None] * z).flatten(1))
        )
        return ((x - x0) / t).view(shape)


class ToyFlow:
    """The toy model: ``velocity`` (an ``nn.Module``), ``prompts`` and an Euler ``sample``."""

    def __init__(self, seed: int = 1) -> None:
        self.velocity = GaussianMixtureDenoiser(*_icons(seed)).eval().requires_grad_(False)
        self.prompts = [f"toy-{i}" for i in range(8)]
        self.prepared: PreparedModel | None = None

    def prepare(self, precisions: Sequence[str]) -> PreparedModel:
        """Give the four linear layers their low-precision variants (emulated kernels).

        Preparing again with a precision not prepared yet re-prepares with the union.
        """
        names = [canonical_name(p) for p in precisions]
        if self.prepared is not None:
            have = set(self.prepared.precisions)
            if all(n in have or get_format(n).reference for n in names):
                return self.prepared
            names = list(dict.fromkeys([*self.prepared.precisions, *names]))
            unprepare(self.velocity)
        self.prepared = prepare(self.velocity, names, backend="emulated")
        return self.prepared

    @staticmethod
    def noise(n: int, seed: int) -> torch.Tensor:
        return torch.randn(n, *LATENT, generator=torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def sample(self, n: int, per_step: Sequence[str], *, seed: int = 0) -> Outputs:
        """Euler-sample ``n`` images with step ``i`` at ``per_step[i]`` (needs ``prepare`` first
        unless every step is the reference)."""
        x = self.noise(n, seed)
        ts = torch.linspace(1.0, 0.0, len(per_step) + 1)
        state = self.prepared.state if self.prepared is not None else None
        try:
            for i, p in enumerate(per_step):
                if state is not None:
                    state.set(p)
                x = x + (ts[i + 1] - ts[i]) * self.velocity(x, ts[i].expand(n))
        finally:
            if state is not None:
                state.index = 0
        return Outputs(((x.clamp(-1, 1) + 1) / 2), x)


def toy_evaluator(
    toy: ToyFlow | None = None,
    *,
    steps: int,
    precisions: Sequence[str],
    prompts: Sequence[str] | None = None,
    seeds: Sequence[int] = (0,),
    cache_dir=None,
    progress: bool = False,
) -> Evaluator:
    """An ``Evaluator`` for the toy: one image per prompt and seed, fixed noise per seed."""
    toy = toy or ToyFlow()
    prompts = list(prompts or toy.prompts)
    toy.prepare(precisions)

    def run(per_step: list[str]) -> Outputs:
        outs = [toy.sample(len(prompts), per_step, seed=s) for s in seeds]
        return Outputs(torch.cat([o.images for o in outs]), torch.cat([o.latents for o in outs]))

    settings = {"model": "toy-gmm-v1", "prompts": prompts, "seeds": list(seeds), "sampler": "euler"}
    return Evaluator(
        run,
        steps=steps,
        precisions=precisions,
        settings=settings,
        cache_dir=cache_dir,
        progress=progress,
    )


class CompoundingRun:
    """A model-free run function whose errors compound along runs of low-precision steps.

    Images are a fixed two-tone picture plus one fixed random perturbation per (step, low
    precision) used; the perturbation of a low-precision step is scaled by
    ``1 + compound · (low-precision steps right before it)``, and a reference step resets the
    run. ``compound = 0`` is (nearly) additive in 1 - SSIM; ``compound > 0`` reproduces "adjacent
    low-precision steps compound, a full-precision step in between corrects it", the case where
    ranking steps by single-step sensitivity fails. Milliseconds per call.
    """

    def __init__(
        self,
        steps: int,
        precisions: Sequence[str] = ("bf16", "int8wo", "int4wo"),
        *,
        compound: float = 0.0,
        seed: int = 0,
    ) -> None:
        gen = torch.Generator().manual_seed(seed)
        base = torch.full((2, 3, 16, 16), 0.7)
        base[..., 4:12, 4:12] = 0.3
        self.base = base
        self.reference = precisions[0]
        self.noise = {
            (t, p): torch.randn(2, 3, 16, 16, generator=gen) * (0.004 * (i + 1)) * (1 + t / steps)
            for t in range(steps)
            for i, p in enumerate(precisions[1:])
        }
        self.compound = compound
        self.calls = 0

    def __call__(self, per_step: list[str]) -> Outputs:
        self.calls += 1
        img = self.base.clone()
        run = 0
        for t, p in enumerate(per_step):
            if get_format(p).reference:
                run = 0
                continue
            img += self.noise[(t, canonical_name(p))] * (1 + self.compound * run)
            run += 1
        return Outputs(img.clamp(0, 1), img.flatten(1))
