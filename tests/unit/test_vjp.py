"""VJP providers against the analytic Jacobian of the exact mixture denoiser."""

import pytest
import torch

from comfyui_inverse.samplers import (AutogradUnavailable, AutogradVJP, FiniteDifferenceVJP, NoJacobian,
                                      mixture_prior)

pytestmark = pytest.mark.usefixtures("one_thread")

SHAPE = (3, 4, 4)




@pytest.fixture(scope="module")
def prior():
    return mixture_prior(SHAPE, n_components=3, seed=1)


def _point(prior, kind, sigma):
    """Points between two component means, where responsibilities are genuinely mixed."""
    g = torch.Generator().manual_seed(3)
    theta = torch.tensor([0.35, 0.45, 0.55, 0.65], dtype=torch.float64)[:, None]
    x0 = (theta * prior.means[0] + (1 - theta) * prior.means[1]).reshape(4, *SHAPE)
    s = torch.full((4,), sigma, dtype=torch.float64)
    a = 1.0 if kind == "vp" else 1.0 - sigma
    x = a * x0 + 0.1 * sigma * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    v = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    return x, s, v


@pytest.mark.parametrize("kind,sigma", [("vp", 0.3), ("vp", 1.5), ("flow", 0.4)])
def test_autograd_vjp_equals_analytic_jacobian(prior, kind, sigma):
    x, s, v = _point(prior, kind, sigma)
    den = prior.denoiser(kind)
    jac = prior.jacobian(x, s, kind)  # closed form, no autograd
    exact = torch.einsum("bij,bi->bj", jac, v.reshape(4, -1)).reshape(v.shape)
    # the responsibilities must actually vary, or the mixture coupling term is not exercised
    _, _, resp, _ = prior._parts(x, s, kind)
    assert (1 - resp.max(dim=1).values).max() > 0.05
    x0, c, jtc = AutogradVJP()(den, x, s, lambda x0_: v)
    torch.testing.assert_close(x0, prior.denoise(x, s, kind))
    torch.testing.assert_close(jtc, exact, rtol=1e-10, atol=1e-12)  # float64 end to end
    # exact Tweedie Jacobian is symmetric, which is what justifies the finite-difference JVP
    torch.testing.assert_close(jac, jac.transpose(1, 2), rtol=1e-9, atol=1e-11)
    _, _, fd = FiniteDifferenceVJP(rel_step=1e-3)(den, x, s, lambda x0_: v)
    err = (fd - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
    assert err.max() < 1e-4  # central differences: O(h²) with h ~ 1e-3·‖x‖
    _, _, fd1 = FiniteDifferenceVJP(rel_step=1e-4, one_sided=True)(den, x, s, lambda x0_: v)
    err1 = (fd1 - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
    assert err1.max() < 1e-2


def test_autograd_under_inference_mode_and_no_graph_leak(prior):
    x, s, v = _point(prior, "vp", 0.5)
    with torch.inference_mode():
        xi, si = x.clone(), s.clone()  # inference tensors, as ComfyUI hands them over
        x0, c, jtc = AutogradVJP()(prior.denoiser("vp"), xi, si, lambda x0_: v)
    assert not jtc.requires_grad and not x0.requires_grad and jtc.grad_fn is None
    torch.testing.assert_close(jtc, prior.vjp(x, s, v), rtol=1e-10, atol=1e-12)


def test_autograd_failure_is_typed(prior):
    def inplace_model(x, sigma):
        h = x * 2.0
        h.mul_(torch.sigmoid(h))  # in-place on a tensor needed for backward
        out = torch.sigmoid(h)
        out.add_(1.0)  # explicit in-place calls stay in place (`out += 1.0` would be made out of place)
        h.add_(1.0)
        return out

    x, s, v = _point(prior, "vp", 0.5)
    with pytest.raises(AutogradUnavailable):
        AutogradVJP()(inplace_model, x, s, lambda x0_: v)

    def detached_model(x, sigma):
        return x.detach() * 0.5

    with pytest.raises(AutogradUnavailable):
        AutogradVJP()(detached_model, x, s, lambda x0_: v)


def test_none_is_identity_jacobian(prior):
    x, s, v = _point(prior, "vp", 0.5)
    x0, c, jtc = NoJacobian()(prior.denoiser("vp"), x, s, lambda x0_: v)
    assert jtc is c and torch.equal(c, v)
