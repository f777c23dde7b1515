"""The exact autograd VJP through ComfyUI's Flux (tiny model, real ComfyUI, fresh process).

ComfyUI's Flux blocks update their residual streams in place (`img += …`) on tensors autograd saved;
the VJP makes those augmented assignments out of place (samplers/out_of_place.py).
"""

from __future__ import annotations

import textwrap

import pytest

from comfyui_inverse.tests.host.test_tiling_nodes import run_in_fresh_process

pytestmark = pytest.mark.host

FLUX_VJP = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    sys.argv = [sys.argv[0], "--cpu", "--use-pytorch-cross-attention"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.model_management, comfy.sd, torch
    from comfyui_inverse.nodes.checkpointing import CHECKPOINT_BLOCKS, autograd_forward
    from comfyui_inverse.nodes.comfy_bridge import make_differentiable
    from comfyui_inverse.samplers import AutogradVJP

    torch.set_num_threads(1)
    patcher = comfy.sd.load_diffusion_model(PATH)
    comfy.model_management.load_models_gpu([patcher])
    base, dm = patcher.model, patcher.model.diffusion_model
    make_differentiable(dm, patcher)
    g = torch.Generator().manual_seed(0)
    x, u, v = (torch.randn(1, 16, 8, 8, generator=g) for _ in range(3))  # 64² pixels
    cond = {"c_crossattn": torch.randn(1, 7, 4096, generator=g), "y": torch.randn(1, 2048, generator=g),
            "guidance": torch.tensor([3.5])}
    sigma = torch.tensor([0.7])

    def denoiser(xx, s):
        return base.apply_model(xx, s, **cond)

    def vjp(context):
        with context as report:
            x0, _, jtu = AutogradVJP()(denoiser, x, sigma, lambda x0_: u)
        return x0, jtu, report.blocks if report else 0

    # autograd_forward also turns on ComfyUI's differentiable paths (newer ComfyUI runs Flux's rotary
    # embedding through a kernel without a gradient otherwise); checkpoint=False: plain backprop

    def earlier_vjp():
        # what an earlier version computed: checkpointed blocks, no out-of-place mode (no error raised)
        blocks = [m for m in dm.modules() if type(m).__name__ in CHECKPOINT_BLOCKS]
        for m in blocks:
            m.forward = (lambda f: lambda *a, **k: torch.utils.checkpoint.checkpoint(f, *a, use_reentrant=False, **k))(m.forward)
        try:
            with torch.enable_grad(), autograd_forward(dm, checkpoint=False):
                xg = x.clone().requires_grad_(True)
                return torch.autograd.grad(denoiser(xg, sigma), xg, u)[0]
        except RuntimeError:  # newer torch/ComfyUI: the recomputation notices the changed input and raises
            return None
        finally:
            for m in blocks:
                del m.__dict__["forward"]

    with torch.no_grad(), autograd_forward(dm, checkpoint=False):  # the same rotary-embedding path
        inference = denoiser(x, sigma)
        eps = 1e-2  # central difference: truncation O(eps²), fp32 rounding O(1e-7/eps)
        jv = (denoiser(x + eps * v, sigma) - denoiser(x - eps * v, sigma)) / (2 * eps)
    x0_plain, plain, _ = vjp(autograd_forward(dm, checkpoint=False))
    x0_ckpt, ckpt, patched = vjp(autograd_forward(dm))
    old = earlier_vjp()
    dot = lambda a, b: float((a.double() * b.double()).sum())
    print(json.dumps({
        "fd": dot(u, jv), "plain": dot(plain, v), "ckpt": dot(ckpt, v), "old_ckpt": None if old is None else dot(old, v),
        "ckpt_equal_plain": torch.equal(plain, ckpt), "patched": patched,
        "forward_equal": torch.equal(x0_plain, inference) and torch.equal(x0_ckpt, inference),
        "restored": all("forward" not in m.__dict__ for m in dm.modules()),
    }))
""")

TOLERANCE = 2e-3  # measured 2e-4 (the finite difference's own error); a wrong gradient is far off


def test_flux_autograd_vjp_is_exact_plain_and_checkpointed(comfy, tiny_models):
    """⟨Jᵀu, v⟩ = ⟨u, Jv⟩ (Jv by central differences) for the tiny Flux; the checkpointed VJP (the
    solver's default) is plain backprop bit for bit, and the forward under the mode is the inference
    forward bit for bit. Control: the checkpointed VJP without the mode (what an earlier version
    computed, raising no error on ComfyUI 0.3.75) violates the identity, so the check can fail (on
    0.33 the recomputation raises instead)."""
    out = run_in_fresh_process(FLUX_VJP, comfy, tiny_models["flux_unet"], folder="diffusion_models")
    assert out["patched"] > 0 and out["restored"] and out["forward_equal"]
    assert abs(out["plain"] - out["fd"]) <= TOLERANCE * abs(out["fd"]), out
    assert out["ckpt_equal_plain"], out
    assert out["old_ckpt"] is None or abs(out["old_ckpt"] - out["fd"]) > 20 * TOLERANCE * abs(out["fd"]), out
