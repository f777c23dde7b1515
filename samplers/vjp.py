"""Vector–Jacobian products of a denoiser D(x, σ) = x̂0, w.r.t. its ComfyUI-convention input.

Every provider evaluates D once at (x, σ), builds a cotangent c = cotangent_fn(x̂0)
(treated as a constant, i.e. stop-gradient) and returns (x̂0, c, J_Dᵀ c):

* "autograd": exact VJP by backprop (a tiled denoiser, samplers/tiling.py, backpropagates
  one tile batch at a time). Runs with inference mode off and grad on locally,
  on cloned inputs, so it works when the host (ComfyUI) calls us under
  torch.inference_mode. The model's forward runs with augmented assignments made out of
  place (samplers/out_of_place.py), so models that update saved tensors with `+=` (Flux)
  backpropagate exactly (a block checkpointed by the caller must recompute under the same
  mode: torch.autograd.grad turns torch-function modes off). Failures (e.g. other
  in-place ops in the model, inference-tensor weights) raise `AutogradUnavailable` so the
  caller can fall back.
* "finite_difference": J c ≈ (D(x+hc) − D(x−hc)) / 2h, used as Jᵀc. The exact Tweedie
  denoiser has a symmetric Jacobian (J_D ∝ Cov[x0|x]), so JVP = VJP for a well-trained
  model. Central differences (two extra calls) have O(h²) truncation error instead of
  O(h) for one-sided, which lets h be large enough to swamp half-precision rounding
  noise in the model; `one_sided=True` trades accuracy for one extra call only.
* "none": J_D ≈ I (the Jacobian-free approximation; returns c itself). Since
  D = x − σ_ve·ε̂ (VP) or x − σ·v̂ (flow), this means J_ε = 0 / J_v = 0: in C-ΠGDM and
  C-ΠGFM the VJP term g vanishes and only the closed-form linear guidance (the P-terms
  and H⁺y in the conjugate map) remains; in ΠGDM/DPS the guidance becomes the plain
  residual (J_x̂0 ≈ I/μ), like a gradient step on the data term w.r.t. x̂0.
"""

from __future__ import annotations

import torch

from .out_of_place import augmented_assignments_out_of_place


class AutogradUnavailable(RuntimeError):
    """Backprop through the denoiser failed; use the finite-difference or Jacobian-free VJP."""


def _call(denoiser, x, sigma):
    return denoiser(x, sigma)


class NoJacobian:
    name = "none"

    def __call__(self, denoiser, x, sigma, cotangent_fn):
        with torch.no_grad():
            x0 = _call(denoiser, x, sigma)
            c = cotangent_fn(x0) if cotangent_fn is not None else None
        return x0, c, c


class AutogradVJP:
    name = "autograd"

    def __call__(self, denoiser, x, sigma, cotangent_fn):
        if cotangent_fn is None:
            with torch.no_grad():
                return _call(denoiser, x, sigma), None, None
        if hasattr(denoiser, "vjp_autograd") and denoiser.num_batches(*x.shape[-2:]) > 1:
            return self._tiled(denoiser, x, sigma, cotangent_fn)
        with torch.inference_mode(False), torch.enable_grad():
            xg = x.detach().clone().requires_grad_(True)
            sg = sigma.detach().clone()
            try:
                with augmented_assignments_out_of_place():  # e.g. Flux's `img += …` on saved tensors
                    out = _call(denoiser, xg, sg)
                if not out.requires_grad:
                    raise AutogradUnavailable(
                        "the denoiser output does not depend differentiably on x "
                        "(it ran under no_grad or detached its input)."
                    )
                x0 = out.detach()
                c = cotangent_fn(x0).detach().clone()
                (jtc,) = torch.autograd.grad(out, xg, grad_outputs=c.to(out.dtype))
            except AutogradUnavailable:
                raise
            except RuntimeError as err:  # in-place ops, inference tensors, missing grad_fn
                raise AutogradUnavailable(f"autograd VJP through the denoiser failed: {err}") from err
        return x0, c, jtc.detach()

    @staticmethod
    def _tiled(denoiser, x, sigma, cotangent_fn):
        """A TiledDenoiser's exact VJP, one backward per tile batch (samplers/tiling.py)."""
        with torch.inference_mode(False), torch.enable_grad():
            try:
                x0, c, jtc = denoiser.vjp_autograd(x.detach().clone(), sigma.detach().clone(), cotangent_fn)
            except AutogradUnavailable:
                raise
            except RuntimeError as err:
                raise AutogradUnavailable(f"autograd VJP through the tiled denoiser failed: {err}") from err
        return x0, c, jtc


class FiniteDifferenceVJP:
    """Central (default) or one-sided difference along the cotangent direction.

    Step h per sample = rel_step · rms(x)/rms(c), i.e. a perturbation of `rel_step` of the
    state's size. With rel_step = 1e-2 the central truncation error (∝ rel_step²) is ~1e-4
    for smooth denoisers, and model rounding (∝ u/rel_step) is ~1e-5 relative in fp32 and
    ~5e-2 in fp16 — large steps are the price of half-precision models.
    """

    name = "finite_difference"

    def __init__(self, rel_step: float = 1e-2, one_sided: bool = False):
        if not rel_step > 0:
            raise ValueError(f"finite-difference rel_step must be > 0, got {rel_step}.")
        self.rel_step = float(rel_step)
        self.one_sided = bool(one_sided)

    def __call__(self, denoiser, x, sigma, cotangent_fn):
        with torch.no_grad():
            x0 = _call(denoiser, x, sigma)
            if cotangent_fn is None:
                return x0, None, None
            c = cotangent_fn(x0)
            shape = (-1,) + (1,) * (x.ndim - 1)
            rms = lambda t: t.double().flatten(1).pow(2).mean(1).sqrt()  # noqa: E731
            cn = rms(c)
            h = (self.rel_step * rms(x).clamp_min(1e-3) / cn.clamp_min(1e-30)).to(x.dtype)
            dx = h.view(shape) * c.to(x.dtype)
            if self.one_sided:
                diff = (_call(denoiser, x + dx, sigma) - x0) / h.view(shape).to(x0.dtype)
            else:
                plus = _call(denoiser, x + dx, sigma)
                minus = _call(denoiser, x - dx, sigma)
                diff = (plus - minus) / (2 * h.view(shape).to(plus.dtype))
            zero = (cn == 0).view(shape)
            diff = torch.where(zero, torch.zeros_like(diff), diff)
        return x0, c, diff.to(c.dtype)


def get_vjp(vjp) -> object:
    """"autograd" | "finite_difference" | "none" | a provider instance."""
    if callable(vjp) and not isinstance(vjp, str):
        return vjp
    if vjp == "autograd":
        return AutogradVJP()
    if vjp in ("finite_difference", "fd"):
        return FiniteDifferenceVJP()
    if vjp in ("none", None):
        return NoJacobian()
    raise ValueError(f'vjp must be "autograd", "finite_difference" or "none", got {vjp!r}.')
