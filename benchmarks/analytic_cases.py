"""Cases of the analytic-posterior benchmark: priors, operators, measurements, exact posteriors.

"tuned" cases are the three the defaults were swept on (3-component structured mixture,
seed 0); "held-out" cases were not looked at while choosing defaults: another mixture prior
with rotated (non-diagonal, non-separable) covariances, other SR factors and kernels, motion
blur directions, random masks and colorization. Shared by analytic_posterior.py and weight_sweep.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from comfyui_inverse.operators import (Colorization, GaussianBlur, Inpainting, MotionBlur, SuperResolution)
from comfyui_inverse.samplers import GaussianMixturePrior, OperatorProblem, dense_matrix, mixture_prior

SHAPE = (3, 8, 8)


def rotated_mixture_prior(shape=SHAPE, n_components: int = 4, seed: int = 3) -> GaussianMixturePrior:
    """K Gaussians whose covariances are random rotations of a decaying spectrum plus a low-rank part."""
    g = torch.Generator().manual_seed(seed)
    d = math.prod(shape)
    means, covs = [], []
    for k in range(n_components):
        q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
        spec = 0.3 * torch.arange(1, d + 1, dtype=torch.float64) ** (-0.8 - 0.2 * k)
        low = torch.randn(d, 2, generator=g, dtype=torch.float64) * 0.15
        covs.append((q * spec) @ q.T + low @ low.T + 1e-3 * torch.eye(d, dtype=torch.float64))
        means.append(torch.randn(d, generator=g, dtype=torch.float64) * 0.4)
    weights = torch.rand(n_components, generator=g, dtype=torch.float64) + 0.5
    return GaussianMixturePrior(torch.stack(means), torch.stack(covs), weights, shape)


def _block_mask():
    m = torch.zeros(8, 8)
    m[2:6, 1:5] = 1.0  # 25% missing block (1 = missing)
    return m


def _random_mask(frac: float, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(8, 8, generator=g) < frac).float()


TUNED_OPS = {
    "SR×4 (bicubic)": lambda: SuperResolution(4, "bicubic"),
    "inpainting (25% block)": lambda: Inpainting(_block_mask()),
    "Gaussian deblur (σ=1 px)": lambda: GaussianBlur(1.0),
}
HELD_OUT_OPS = {
    "SR×2 (bicubic)": lambda: SuperResolution(2, "bicubic"),
    "SR×4 (box)": lambda: SuperResolution(4, "box"),
    "motion blur (3 px, 45°)": lambda: MotionBlur(3.0, angle=45.0),
    "motion blur (4 px, 120°)": lambda: MotionBlur(4.0, angle=120.0),
    "inpainting (50% random)": lambda: Inpainting(_random_mask(0.5, 11)),
    "inpainting (75% random)": lambda: Inpainting(_random_mask(0.75, 12)),
    "colorization": lambda: Colorization(3),
}


@dataclass
class Case:
    name: str
    prior_name: str
    prior: GaussianMixturePrior
    op: object
    sigma_y: float
    problem: OperatorProblem
    y: torch.Tensor
    post_mean: torch.Tensor  # (d,)
    post_samples: torch.Tensor  # (n, C, H, W) exact posterior draws (for the exact start)
    floor: float  # Monte-Carlo floor of the sample-mean error for n samples

    def error(self, out: torch.Tensor) -> float:
        n = out.shape[0]
        return float((out.reshape(n, -1).mean(0) - self.post_mean).norm() / self.post_mean.norm())

    def residual(self, out: torch.Tensor) -> float:
        return float(self.problem.measurement_error(out).mean())


def posterior_samples(prior, hmat, y, sigma_y, n, generator):
    """Exact draws from the Gaussian-mixture posterior p(x0 | y)."""
    _, wts, cmeans, covs = prior.posterior(hmat, y.reshape(1, -1), sigma_y)
    comp = torch.multinomial(wts[0], n, replacement=True, generator=generator)
    ev, q = torch.linalg.eigh(covs)
    z = torch.randn(n, prior.d, generator=generator, dtype=torch.float64)
    x = cmeans[0, comp] + torch.einsum("nij,nj->ni", q[comp], ev[comp].clamp_min(0).sqrt() * z)
    return x.reshape(n, *prior.shape)


def make_case(name, prior_name, prior, op, sigma_y, n, truth_seed=1, noise_seed=2) -> Case:
    truth = prior.sample(1, torch.Generator().manual_seed(truth_seed))
    y = op.forward(truth)
    if sigma_y:
        y = y + sigma_y * torch.randn(y.shape, generator=torch.Generator().manual_seed(noise_seed), dtype=y.dtype)
    prob = OperatorProblem(op, y.expand(n, *y.shape[1:]).clone(), sigma_y)
    hmat = dense_matrix(op, prior.shape)
    post_mean, wts, _, covs = prior.posterior(hmat, y.reshape(1, -1), sigma_y)
    post_mean = post_mean[0]
    # within-component spread only: a lower bound on the Monte-Carlo error of an n-sample mean
    post_cov = (wts[0][:, None, None] * covs).sum(0)
    floor = math.sqrt(float(post_cov.trace()) / n) / float(post_mean.norm())
    samples = posterior_samples(prior, hmat, y, sigma_y, n, torch.Generator().manual_seed(9))
    return Case(name, prior_name, prior, op, sigma_y, prob, y, post_mean, samples, floor)


def priors():
    return {"A": mixture_prior(SHAPE, n_components=3, seed=0), "B": rotated_mixture_prior(SHAPE)}


def cases_of(prior_name: str, prior, ops: dict, sigma_y: float, n: int):
    """Yield one Case per operator in `ops` (name → constructor) on one prior."""
    for name, op in ops.items():
        yield make_case(name, prior_name, prior, op(), sigma_y, n)


def cases(n: int, sigma_y: float = 0.0, which: str = "all"):
    """Yield Case objects: tuned (prior A × TUNED_OPS) then held-out (prior B × all, prior A × HELD_OUT_OPS)."""
    pa, pb = priors().values()
    if which in ("all", "tuned"):
        yield from cases_of("A", pa, TUNED_OPS, sigma_y, n)
    if which in ("all", "held_out"):
        yield from cases_of("A", pa, HELD_OUT_OPS, sigma_y, n)
        yield from cases_of("B", pb, {**TUNED_OPS, **HELD_OUT_OPS}, sigma_y, n)
