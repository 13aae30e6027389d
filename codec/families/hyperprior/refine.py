"""Encode effort: refine a batch of tiles' latents at encode time; the decoder and the stream do not change.

The analysis transform's y is an amortised guess. For each tile, at its quality q, gradient steps on the
scaled latent y_s = g_a(x)·gain(q) and the hyper-latent z (Adam, weights frozen) lower

    bits(ŷ | ẑ) + bits(ẑ) + λ · 255² · MSE(g_s(ŷ·gain⁻¹(q)), x)        (per pixel: training's rd_loss)

with λ = the model's training trade-off λ(q) (``HyperpriorCodec.lmbda``) unless the caller passes its own
(target_bpp: its Lagrangian's). Rounding is relaxed by stochastic Gumbel annealing (SGA, Yang, Bamler &
Mandt 2020): each value is a Gumbel-softmax mix of its floor and ceiling whose temperature anneals from 0.5
to :data:`TAU_END` (annealing nearer hard rounding lowered the objective less: bench/effort_method.py). The
rate uses the float h_s (μ, σ) and the factorised prior; afterwards the refined y and round(z) go through
``HyperpriorCodec.compress`` like any other latents (integer h_s, same rounding), so the range coder and
decoder see ordinary symbols.

:func:`refine_batch` keeps, per tile, whichever of the refined and the unrefined latents has the lower
real objective (estimated code length + λ·measured 8-bit error): effort never makes a tile worse by the
objective it was asked to lower.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from codec.families.hyperprior.model.entropy import LIKELIHOOD_BOUND
from codec.families.hyperprior.model.layers import param_dtype
from codec.options import EFFORT_ITERATIONS
from codec.quality import q_tensor

if TYPE_CHECKING:
    from codec.families.hyperprior.engine import Batch, Engine, Quantised

LEARNING_RATE = 0.02  # Adam, on y_s and z (quantisation step 1): between the best of 0.01 (q=0.3) and 0.03 (q=0.8), bench/results/effort_method.log
TAU_START = 0.5  # SGA temperature at the first step (Yang et al.)
TAU_END = 0.2  # … and at the last, annealed geometrically in between: on 4 training crops the real objective fell
#               5.6% / 7.1% at q = 0.3 / 0.8 after 1000 steps (0.05: 4.8% / 6.9%; 0.01 and 0.4 less), and 2.7% /
#               5.5% after 50 (0.05: 1.5% / 4.8%); bench/results/effort_method_tau{,50}.log
ATANH_CLIP = 1 - 1e-6


@dataclass
class Refined:
    """Refined latents of a batch: ``y`` as ``compress`` takes it (unscaled) and the hyper-latent ẑ to code."""

    y: torch.Tensor  # float32 (B, M, h, w)
    z_hat: torch.Tensor  # float32, integer-valued (B, Nh, h/4, w/4)


def iterations_of(effort: int) -> int:
    """Adam steps per tile at an effort level (codec.options.EFFORT_ITERATIONS)."""
    return EFFORT_ITERATIONS[effort]


def sga_round(v: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """Soft rounding of ``v``: a Gumbel-softmax mix of floor and ceil, P(floor) rising as v nears it."""
    lo = torch.floor(v)
    d = v - lo  # in [0, 1): distance to the floor; 1 − d to the ceil
    logits = torch.stack([-torch.atanh(d.clamp(-ATANH_CLIP, ATANH_CLIP)),
                          -torch.atanh((1 - d).clamp(-ATANH_CLIP, ATANH_CLIP))], -1) / tau
    u = torch.rand(logits.shape, generator=generator, device=v.device, dtype=v.dtype)
    gumbel = -torch.log(-torch.log(u.clamp(1e-10, 1 - 1e-7)))
    w = torch.softmax((logits + gumbel) / tau, -1)
    return lo + w[..., 1]


def ste_round(v: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """Hard rounding with an identity gradient (straight-through): the simpler relaxation SGA is measured against."""
    return v + (torch.round(v) - v).detach()


RELAXATIONS = {"sga": sga_round, "ste": ste_round}
# the learning rate at a step, as a fraction of ``lr``: constant, or a cosine decay to 0 over the last half
# (measured no better at 1000 steps: bench/results/effort_method_1000.log; kept for the sweep)
LR_SCHEDULES = {
    "constant": lambda step, n: 1.0,
    "cosine": lambda step, n: 1.0 if step < n // 2 else 0.5 * (1 + math.cos(math.pi * (step - n // 2) / max(n - n // 2, 1))),
}
LR_SCHEDULE = "constant"


def rd_objective(model, y_s, z, x, weight, q, lmbda, tau, generator, relax=sga_round) -> torch.Tensor:
    """Per tile (B,): relaxed bits per pixel + λ·255²·weighted MSE over the tile's valid pixels."""
    z_tilde = relax(z, tau, generator)
    scale, mean = model.h_s(z_tilde).chunk(2, dim=1)
    y_tilde = relax(y_s - mean, tau, generator) + mean
    _, inv_gain = model.gains(q)
    x_hat = model.g_s((y_tilde * inv_gain).to(param_dtype(model.g_s))).float()
    bits = (-torch.log2(model.gaussian.likelihood(y_tilde, mean, scale))).flatten(1).sum(1)
    bits = bits + (-torch.log2(model.hyper.likelihood(z_tilde).clamp_min(LIKELIHOOD_BOUND))).flatten(1).sum(1)
    pixels = weight.flatten(1).sum(1) / 3
    sse = ((x_hat - x).pow(2) * weight).flatten(1).sum(1)
    return bits / pixels + lmbda * 255.0**2 * sse / (3 * pixels)


def refine(model, y: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, q: torch.Tensor, lmbda: torch.Tensor,
           iterations: int, seed: int = 0, relax: str = "sga", lr: float = LEARNING_RATE,
           refine_z: bool = True, lr_schedule: str = LR_SCHEDULE, tau_end: float = TAU_END) -> Refined:
    """``iterations`` Adam steps on a batch of tiles (all at once): ``y`` (B, M, h, w) from g_a, targets ``x``
    (B, 3, H, W) in [0, 1], ``weight`` (B, 3, H, W) 1 where a sample counts, per-tile ``q`` and ``lmbda`` (B,).
    ``relax``, ``lr``, ``refine_z``, ``lr_schedule``, ``tau_end``: the method's settings (the defaults are the measured
    choice)."""
    if iterations < 1:
        raise ValueError(f"refine: iterations must be positive, got {iterations}")
    if relax not in RELAXATIONS:
        raise ValueError(f"refine: unknown relaxation {relax!r} (one of {', '.join(RELAXATIONS)})")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"refine: unknown lr_schedule {lr_schedule!r} (one of {', '.join(LR_SCHEDULES)})")
    rounding = RELAXATIONS[relax]
    generator = torch.Generator(device=y.device).manual_seed(seed)
    with torch.no_grad():
        gain, _ = model.gains(q)
        y_s0 = y.float() * gain
        z0 = model.h_a(y_s0.to(param_dtype(model.h_a))).float()
    y_s = y_s0.clone().requires_grad_(True)
    z = z0.clone().requires_grad_(refine_z)
    opt = torch.optim.Adam([y_s, z] if refine_z else [y_s], lr=lr)
    decay = math.log(tau_end / TAU_START) / max(iterations - 1, 1)
    for step in range(iterations):
        tau = TAU_START * math.exp(decay * step)
        for group in opt.param_groups:
            group["lr"] = lr * LR_SCHEDULES[lr_schedule](step, iterations)
        loss = rd_objective(model, y_s, z, x, weight, q, lmbda, tau, generator, rounding).sum()
        leaves = [y_s, z] if refine_z else [y_s]
        for leaf, grad in zip(leaves, torch.autograd.grad(loss, leaves)):  # the latents' only: weights untouched
            leaf.grad = grad
        opt.step()
    with torch.no_grad():
        return Refined(y_s.detach() / gain, torch.round(z.detach()))


def targets(engine: "Engine", batch: "Batch") -> tuple[torch.Tensor, torch.Tensor]:
    """(x in [0, 1], sample weight) of a batch, float32 (B, 3, H, W): what the refined synthesis should match."""
    from codec.families.hyperprior.engine import sample_masks

    mask = sample_masks(batch.masks).float()
    if batch.raster is None:
        return batch.originals.float() / 255.0, mask.contiguous()
    r = batch.raster
    x = ((batch.originals.float() - r.lo[:, None, None]) / r.scale[:, None, None]).clamp(0, 1)
    return x, (mask * r.weight[None, :, None, None]).contiguous()


def refine_batch(engine: "Engine", batch: "Batch", codes, iterations: int, lmbda=None, seed: int = 0,
                 keep_plain: bool = True) -> "Quantised":
    """The batch quantised at ``codes`` from refined latents, measured. With ``keep_plain``, per tile the refined
    or the plain latents, whichever has the lower real objective (bits + λ·SSE in rd_loss units); without, the
    refined ones (the caller compares). ``lmbda`` (B,): λ per tile (None: the model's λ(q))."""
    codes = np.asarray(codes)
    model = engine.model
    q = q_tensor(codes).to(batch.y.device)
    lam = model.lmbda(q) if lmbda is None else torch.as_tensor(lmbda, dtype=torch.float32, device=q.device)
    x, weight = targets(engine, batch)
    size = len(batch.ids) if engine.device.type != "cpu" else max(1, engine_chunk(engine, x))
    parts = [refine(model, batch.y[s : s + size], x[s : s + size], weight[s : s + size], q[s : s + size],
                    lam[s : s + size], iterations, seed + s) for s in range(0, len(codes), size)]
    refined = Refined(torch.cat([p.y for p in parts]), torch.cat([p.z_hat for p in parts]))
    better = engine.measure(refined.y, codes, batch.originals, batch.masks, batch.raster, z_hat=refined.z_hat)
    if not keep_plain:
        return better
    plain = engine.measure(batch.y, codes, batch.originals, batch.masks, batch.raster)
    lam_np = lam.double().cpu().numpy()
    keep = objective(engine, better, batch, lam_np) < objective(engine, plain, batch, lam_np)
    return pick(plain, better, keep)


def subset(batch: "Batch", rows: list[int]) -> "Batch":
    """The tiles ``rows`` of a batch (repeats allowed) as a batch of their own."""
    from codec.families.hyperprior.engine import Batch

    idx = torch.tensor(rows, device=batch.y.device)
    return Batch([batch.ids[r] for r in rows], batch.y[idx], batch.originals[idx], batch.masks[idx],
                 batch.npix[rows], batch.raster)


def engine_chunk(engine: "Engine", x: torch.Tensor) -> int:
    """Tiles refined at once on a CPU: as many as the engine's transforms take in one chunk."""
    from codec.families.hyperprior.engine import TRANSFORM_PIXELS

    return TRANSFORM_PIXELS // (x.shape[-2] * x.shape[-1])


def objective(engine: "Engine", m: "Quantised", batch: "Batch", lmbda: np.ndarray) -> np.ndarray:
    """Real rd_loss per tile: estimated code length per valid pixel + λ·MSE (8-bit MSE / 255²·255²)."""
    return engine.estimate_bits(m.latents) / np.maximum(batch.npix, 1) + lmbda * m.mse


def pick(a: "Quantised", b: "Quantised", take_b: np.ndarray) -> "Quantised":
    """Per tile ``b`` where ``take_b``, else ``a``."""
    from codec.families.hyperprior.engine import Quantised
    from codec.families.hyperprior.model import Latents

    rows = [(b if t else a, k) for k, t in enumerate(take_b)]
    band = None if a.band_sse is None else np.where(take_b[:, None], b.band_sse, a.band_sse)
    return Quantised(Latents.gather([(m.latents, k) for m, k in rows]), a.codes,
                     np.where(take_b, b.mse, a.mse), band)
