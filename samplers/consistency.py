"""Final measurement consistency: move an output onto (or toward) the measurement.

Noiseless:  x ← x + H⁺(y − Hx), after which Hx = y exactly (H H⁺ y = y for y in range(H)).
Noisy:      x ← x + (HᵀH + αI)⁻¹Hᵀ(y − Hx) with α ≥ 0 chosen per sample so that the residual
            ‖Hx − y‖ ends at the noise level σ_y·√m (Morozov's discrepancy principle): fitting
            y more closely than its noise only copies the noise into x, and an output that is
            already within the noise level is left untouched. Among all changes δ that bring the
            residual to that level, this Tikhonov step is the one of least norm: well-measured
            modes (large s_i) are corrected almost fully, weak ones (where H⁺ amplifies the noise
            by 1/s_i) hardly at all. α is found by bisection in the operator's SVD basis
            (operators/spectral.py); an operator without a spectral form gets the uniform step
            x ← x + β·H⁺(y − Hx), β ∈ [0, 1] (same residual target, not of least norm).
Operators are linear, so this works on any pixel range; the node layer applies it to the
decoded image of latent models, whose result must also stay in [0, 1]: enforce_measurement_in_range.
"""

from __future__ import annotations

import torch

BISECTIONS = 60  # on ln α over 24 decades: α to ~1e-16 relative
# In-range enforcement: at most this many alternating projections, stopping once the projected image leaves
# [low, high] by no more than RANGE_TOLERANCE (then the final clip barely moves it off the measurement).
# Measured on decoded SR ×4 / blur outputs of tiny random models: ‖Hx − y‖/‖y‖ ~5e-3 after one projection + clip,
# 1e-4…4e-7 after 10 more (motion blur slowest). Each costs one H and one H⁺ (at 1024², up to ~0.7 s on a CPU).
RANGE_ITERATIONS = 10
RANGE_TOLERANCE = 1e-5


def _batch_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    return t.view(-1, *([1] * (ndim - 1)))


def morozov_alpha(spectrum, resid: torch.Tensor, c: torch.Tensor, level: float) -> torch.Tensor:
    """Per-sample α ≥ 0 (inf = no change) with ‖r − Hδ_α‖ = level, δ_α = V diag(s²/(s² + α)) c.

    c = Vᵀ H⁺r, the residual's pseudo-inverse in modes (the caller reuses it for the step). The range
    part of r has energy q_i = s_i²|c_i|²; after the step mode i keeps the fraction α/(s_i² + α) of
    its residual, the part of r outside range(H) stays.
    """
    s2 = spectrum.like(c) ** 2
    q = (s2 * c.abs() ** 2).expand(c.shape).flatten(1)  # B × modes
    s2 = s2.expand(c.shape).flatten(1)
    total = resid.flatten(1).pow(2).sum(1)
    outside = (total - q.sum(1)).clamp_min(0.0)

    def excess(alpha):  # residual² after the step − level², increasing in α
        keep = alpha[:, None] / (s2 + alpha[:, None])
        return outside + (keep**2 * q).sum(1) - level**2

    top = float(s2.max()) if s2.numel() else 1.0
    lo = torch.full_like(total, top * 1e-16).log()
    hi = torch.full_like(total, top * 1e8).log()
    full = excess(lo.exp()) >= 0  # even the (almost) full projection leaves the residual above the level
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        above = excess(mid.exp()) > 0
        hi = torch.where(above, mid, hi)
        lo = torch.where(above, lo, mid)
    alpha = (0.5 * (lo + hi)).exp()
    alpha = torch.where(full, torch.zeros_like(alpha), alpha)
    return torch.where(total <= level**2, torch.full_like(alpha, float("inf")), alpha)


def enforce_measurement(operator, x: torch.Tensor, y: torch.Tensor, sigma_y: float = 0.0) -> torch.Tensor:
    """x moved onto the measurement (σ_y = 0) or to the noise level (σ_y > 0); dtype of x kept."""
    if not sigma_y >= 0:
        raise ValueError(f"sigma_y must be >= 0, got {sigma_y}.")
    work = torch.float64 if x.device.type != "mps" else torch.float32
    xw, yw = x.to(work), y.to(device=x.device, dtype=work)
    if yw.shape[0] != xw.shape[0] and yw.shape[0] == 1:
        yw = yw.expand(xw.shape[0], *yw.shape[1:])
    resid = yw - operator.forward(xw)
    step = operator.pinv(resid)
    if sigma_y == 0:
        return (xw + step).to(x.dtype)
    level = sigma_y * resid[0].numel() ** 0.5
    spectrum = operator.spectral(tuple(xw.shape))
    if spectrum is not None:
        c = spectrum.to_modes(step)
        alpha = morozov_alpha(spectrum, resid, c, level)
        s2 = spectrum.like(c) ** 2
        a = _batch_view(alpha, c.ndim)
        gain = torch.where(s2 > 0, s2 / (s2 + a), torch.zeros_like(s2 + a))  # α = inf: gain 0, no change
        return (xw + spectrum.from_modes(gain * c)).to(x.dtype)
    norm = resid.flatten(1).norm(dim=1)
    beta = (1.0 - level / norm.clamp_min(1e-300)).clamp(0.0, 1.0)
    return (xw + _batch_view(beta, x.ndim) * step).to(x.dtype)


def enforce_measurement_in_range(operator, x: torch.Tensor, y: torch.Tensor, sigma_y: float = 0.0, low: float = 0.0,
                                 high: float = 1.0, iterations: int = RANGE_ITERATIONS,
                                 tolerance: float = RANGE_TOLERANCE) -> torch.Tensor:
    """enforce_measurement for an image that must stay in [low, high] (a ComfyUI IMAGE is clipped to [0, 1]).

    One projection and a clip leaves the residual at whatever the clip undid: ~1% of ‖y‖ when the projected
    image overshoots [0, 1] on a few % of its pixels (seen on decoded SR and blur outputs). Alternating the
    projection and the clip (POCS) converges to an image in both sets; for a noiseless measurement of an
    image in range both contain that image, so no step moves farther from it. An image already in range
    after the first projection gets exactly enforce_measurement's result."""
    out = enforce_measurement(operator, x, y, sigma_y)
    for _ in range(iterations):
        if float((out - out.clamp(low, high)).abs().max()) <= tolerance:
            break
        out = enforce_measurement(operator, out.clamp(low, high), y, sigma_y)
    return out.clamp(low, high)
