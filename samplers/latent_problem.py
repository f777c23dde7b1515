"""Guidance problems for latent models: the pixel operator H seen from the VAE's latent space.

C-ΠGDM / C-ΠGFM need a *linear* projector P and a target H⁺y in the space they integrate
(spec pitfall 11). A latent model's decoder D is nonlinear, so no exact latent P exists.
Two approximations, both with D (latent → pixels in [-1, 1]) and E (pixels → latent)
injected as callables (no ComfyUI import here):

latent-surrogate (`LatentSurrogateProblem`)
    P = P_lat, the latent-grid analogue of H (operators.to_latent_grid: inpainting mask →
    latent mask, SR×s → latent box SR×s/8, blur σ → σ/8, ...), target = P_lat·E(H⁺y).
    residual u = target − P_lat x̂0. No VAE call inside the loop.

pixel-bridge (`PixelBridgeProblem`)
    same P_lat and target (the conjugate map needs a linear P and a fixed H⁺y), but the
    residual is measured in pixel space and carried back through the encoder:
        u = E(D(x̂0) + H⁺y − P D(x̂0)) − E(D(x̂0))          (cancel_bias=True, default)
        u = E(D(x̂0) + H⁺y − P D(x̂0)) − x̂0                (cancel_bias=False)
    The difference of two encodes is ≈ J_E·(H⁺y − P D(x̂0)): the encoder's linearization
    at the current estimate, without the autoencoder round-trip error E(D(x)) − x.
    Cost per step: one decode + two encodes (one with cancel_bias=False).

Which terms of the update each mode changes (see samplers/cpgdm.py, cpgfm.py). The
guidance is G = wμ²J_{x̂0}ᵀu = wμ·u − wμσ·J_εᵀu. Its first part, wμ(H⁺y − P x̂0), is linear
in x and is absorbed *exactly* into the conjugate map: it only ever sees P and the target,
never `residual`. The residual enters only through the VJP term g = J_εᵀu (flow: J_vᵀu).
Hence:
  * both modes share the closed-form part (P_lat, P_lat·E(H⁺y)): data consistency is
    enforced on the latent grid, in both modes, to the accuracy of the latent analogue;
  * the pixel bridge changes only g — the denoiser-Jacobian correction — so it can only
    refine, not replace, the latent constraint; with vjp="none" (g ≡ 0) the two modes are
    identical;
  * a bridge that also corrected the closed-form part would need an extra frozen forcing
    term wμ(u_bridge − u_lat) in the samplers (not implemented; see the report).

consistent target (`consistent_target`, mode "consistent_target")
    the latent surrogate with a better target: E(H⁺y) is moved, once per run, to the latent
    nearest it whose decode agrees with y to first order (CG through the decoder's Jacobian).
    E(H⁺y) itself is not consistent: E is not D⁺ restricted to what H sees. On the exact
    linear-VAE benchmark this target equals the oracle's wherever y determines the latent.

start point (`start_latent`, every mode)
    the latent the sampler noises at its first σ: the target, or with start_point="policy" the
    encoded pixel point of the start policy (samplers/start_policy.py: E(W y), the Wiener
    estimate, for a noisy measurement whose pixel operator has a spectral form; else the target).

Scales: pixel tensors are on the models' [-1, 1] scale (y_signed = 2y − H·1, σ_y doubled),
latents are the model's *processed* latents (latent_format.process_in applied).
"""

from __future__ import annotations

import torch

from ..operators.latent import to_latent_grid
from .cg import conjugate_gradient
from . import start_policy
from .problem import OperatorProblem, ProjectorProblem

BRIDGE_MODES = ("latent_surrogate", "consistent_target", "pixel_bridge")
TARGET_CG_ITERS = 10  # CG steps of `consistent_target` in mode "consistent_target"


def _check_latent(latent: torch.Tensor, what: str) -> None:
    if not isinstance(latent, torch.Tensor) or latent.ndim != 4 or not latent.is_floating_point():
        raise ValueError(f"{what} must be a floating-point B×C×h×w latent tensor, got {getattr(latent, 'shape', type(latent))}.")


class LatentSurrogateProblem(ProjectorProblem):
    """y_lat ≈ H_lat z with a latent-grid operator H_lat and target P_lat·z_target.

    `target_latent` is the encoded pseudo-inverse E(H⁺y) (processed latent), B×C×h×w.
    `sigma_y` is the measurement noise in latent units (see `latent_noise_level`).
    """

    def __init__(self, latent_operator, target_latent: torch.Tensor, sigma_y: float = 0.0):
        _check_latent(target_latent, "target_latent")
        if sigma_y < 0:
            raise ValueError(f"sigma_y must be >= 0, got {sigma_y}.")
        latent_operator.check_input(tuple(target_latent.shape), "latent")
        self.operator = latent_operator
        self.sigma_y = float(sigma_y)
        self.target = target_latent
        self.start_latent = target_latent  # make_latent_problem may set the start policy's point
        self.pinv_y = latent_operator.project(target_latent)

    def fidelity(self, x0_hat: torch.Tensor):
        """(P_lat(target − x̂0), ‖P_lat(target − x̂0)‖): the latent-grid data term (for DPS)."""
        r = self.residual(x0_hat)
        return r, r.flatten(1).norm(dim=1)


class PixelBridgeProblem(LatentSurrogateProblem):
    """Latent surrogate whose residual is computed in pixel space through D and E.

    operator: the pixel-space LinearOperator H; y: the measurement on the [-1, 1] scale;
    decode(z) → pixels in [-1, 1]; encode(pixels) → processed latent (deterministic).
    """

    def __init__(self, operator, y: torch.Tensor, latent_operator, decode, encode, target_latent=None,
                 sigma_y: float = 0.0, cancel_bias: bool = True):
        if not callable(decode) or not callable(encode):
            raise ValueError("decode and encode must be callables (latent → pixels, pixels → latent).")
        self.pixel_operator = operator
        self.y = y
        self.decode, self.encode = decode, encode
        self.cancel_bias = bool(cancel_bias)
        self.pixel_pinv_y = operator.pinv(y)
        if target_latent is None:
            with torch.no_grad():
                target_latent = encode(self.pixel_pinv_y)
        super().__init__(latent_operator, target_latent, sigma_y)

    def residual(self, x0_hat: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # u is a constant cotangent (stop-gradient) in every sampler
            pix = self.decode(x0_hat)
            hy = self.pixel_pinv_y.to(device=pix.device, dtype=pix.dtype)
            corrected = pix + hy - self.pixel_operator.project(pix)
            base = self.encode(pix) if self.cancel_bias else x0_hat
            return (self.encode(corrected) - base.to(x0_hat.dtype)).to(x0_hat.dtype)


def consistent_target(operator, y: torch.Tensor, decode, start: torch.Tensor, iters: int = TARGET_CG_ITERS, *,
                      fd_rel_step: float = 1e-3, should_stop=None) -> torch.Tensor:
    """start + δ, δ = the minimum-norm solution of H J δ = y − H D(start), J = ∂D/∂z at `start`.

    CG on the normal equations JᵀHᵀH J δ = JᵀHᵀ r from δ = 0 (so directions the measurement
    does not see keep `start`'s values). Jᵀ· is autograd through one retained decode graph;
    J· is a forward difference with step fd_rel_step·rms(start)/rms(v) (use ~3e-2 for
    half-precision decoders). For a nonlinear decoder the step is then scaled back (α = 1, ½, ¼
    or 0, per item) to the one with the smallest true pixel residual. Cost: one decode with graph,
    one decode and one backward per iteration, four decodes for the step. Needs gradients
    enabled (the ComfyUI layer wraps the call).
    """
    if iters <= 0:
        return start
    rms = lambda t: t.double().flatten(1).pow(2).mean(1).sqrt()  # noqa: E731
    shape = (-1,) + (1,) * (start.ndim - 1)
    z = start.detach().float().clone().requires_grad_(True)
    pixels = decode(z)
    base = pixels.detach()
    y = y.to(device=base.device, dtype=base.dtype)
    scale = rms(start).clamp_min(1e-3)

    def jvp(v):
        h = (fd_rel_step * scale / rms(v).clamp_min(1e-30)).to(v.dtype).view(shape)
        with torch.no_grad():
            return (decode(z.detach() + h * v) - base) / h

    def vjp(u):
        return torch.autograd.grad(pixels, z, grad_outputs=u.to(pixels.dtype), retain_graph=True)[0]

    def normal(v):
        return vjp(operator.adjoint(operator.forward(jvp(v))))

    b = vjp(operator.adjoint(y - operator.forward(base)))
    # Stop an item once ‖residual‖ < 1e-4‖b‖: past that the forward difference's rounding dominates.
    tol = 1e-4 * float(b.flatten(1).norm(dim=1).min())
    delta = conjugate_gradient(normal, b, torch.zeros_like(b), iters, tol=tol, should_stop=should_stop).detach()
    del pixels
    # The step is exact only for a linear decoder: per item keep the best of start + α·δ,
    # α ∈ {0, 1, ½, ¼}, by the true pixel residual, so the target never gets less consistent.
    best = start.detach().float()
    best_err = pixel_measurement_error(operator, y, decode, best)
    for alpha in (1.0, 0.5, 0.25):
        candidate = start.detach().float() + alpha * delta
        err = pixel_measurement_error(operator, y, decode, candidate)
        better = err < best_err
        best = torch.where(better.view(shape), candidate, best)
        best_err = torch.where(better, err, best_err)
    return best.to(start.dtype)


def latent_noise_level(encode, pixels: torch.Tensor, sigma_pixels: float, generator=None) -> float:
    """Latent std of the encoder's response to white pixel noise of std `sigma_pixels`.

    Used as σ_y of a latent problem: rms(E(x + σn) − E(x)) over the batch, one probe.
    """
    if sigma_pixels <= 0:
        return 0.0
    n = torch.randn(pixels.shape, generator=generator, device="cpu", dtype=torch.float32)
    n = n.to(device=pixels.device, dtype=pixels.dtype)
    with torch.no_grad():
        d = encode(pixels + sigma_pixels * n) - encode(pixels)
    return float(d.double().pow(2).mean().sqrt())


def make_latent_problem(mode: str, operator, y_signed: torch.Tensor, decode, encode, *, sigma_y_signed: float = 0.0,
                        downscale: int = 8, latent_operator=None, cancel_bias: bool = True, generator=None,
                        fd_rel_step: float = 1e-3, should_stop=None, start_point: str = "pinv"):
    """Build the latent problem for `mode` ("latent_surrogate" | "consistent_target" | "pixel_bridge").

    y_signed and sigma_y_signed are on the [-1, 1] image scale. The target E(H⁺y) is encoded
    once; σ_y is converted to latent units by `latent_noise_level` (seeded by `generator`).
    start_point "pinv": `start_latent` is the target (the old start); "policy": the start policy's
    pixel point, encoded (one more encode when that is W y ≠ H⁺y).
    """
    if mode not in BRIDGE_MODES:
        raise ValueError(f"bridge mode must be one of {BRIDGE_MODES}, got {mode!r}.")
    if start_point not in ("pinv", "policy"):
        raise ValueError(f'start_point must be "pinv" or "policy", got {start_point!r}.')
    lat_op = latent_operator if latent_operator is not None else to_latent_grid(operator, downscale)
    hy = operator.pinv(y_signed)
    with torch.no_grad():
        target = encode(hy)
    sigma_lat = latent_noise_level(encode, hy, sigma_y_signed, generator)
    if mode == "consistent_target":
        target = consistent_target(operator, y_signed, decode, target, fd_rel_step=fd_rel_step,
                                   should_stop=should_stop)
    if mode in ("latent_surrogate", "consistent_target"):
        problem = LatentSurrogateProblem(lat_op, target, sigma_lat)
    else:
        problem = PixelBridgeProblem(operator, y_signed, lat_op, decode, encode, target_latent=target,
                                     sigma_y=sigma_lat, cancel_bias=cancel_bias)
    pixel = OperatorProblem(operator, y_signed, sigma_y_signed)
    if start_point == "policy" and start_policy.choose_start_point(pixel) == "wiener":
        with torch.no_grad():  # H⁺y keeps the target (corrected or not) as the start
            problem.start_latent = encode(start_policy.start_point(pixel).to(hy.dtype))
    return problem


def pixel_measurement_error(operator, y_signed: torch.Tensor, decode, latent: torch.Tensor) -> torch.Tensor:
    """‖H D(z) − y‖ / ‖y‖ per sample, on the [-1, 1] scale (the honest, pixel-space metric)."""
    with torch.no_grad():
        hx = operator.forward(decode(latent).to(y_signed.dtype))
    return (hx - y_signed).flatten(1).norm(dim=1) / y_signed.flatten(1).norm(dim=1).clamp_min(1e-30)


def latent_measurement_error(problem, latent: torch.Tensor) -> torch.Tensor:
    """‖P_lat z − target‖ / ‖target‖ per sample (what the latent constraint enforces)."""
    t = problem.pinv_y.to(latent.dtype)
    return (problem.project(latent) - t).flatten(1).norm(dim=1) / t.flatten(1).norm(dim=1).clamp_min(1e-30)


__all__ = [
    "BRIDGE_MODES", "LatentSurrogateProblem", "consistent_target", "PixelBridgeProblem", "latent_measurement_error",
    "latent_noise_level", "make_latent_problem", "pixel_measurement_error",
]
