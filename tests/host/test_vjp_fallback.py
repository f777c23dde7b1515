"""When the autograd VJP fails inside the sampler, the run continues with finite differences.

Tiny SD1.5, real ComfyUI, fresh process; the failure is injected into torch.autograd.grad: an
out-of-memory error (a GPU that is too small for this size: only this run falls back) or another
RuntimeError (a model autograd cannot go through: remembered, later runs skip the attempt).
"""

from __future__ import annotations

import textwrap

import pytest

from comfyui_inverse.tests.host.test_tiling_nodes import run_in_fresh_process

pytestmark = pytest.mark.host

FALLBACK = textwrap.dedent("""
    import json, sys
    sys.path.insert(0, sys.argv[1])
    sys.argv = [sys.argv[0], "--cpu"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.samplers, comfy.sd, torch
    from comfyui_inverse import operators as ops
    from comfyui_inverse.nodes import conjugate_nodes as cn
    from comfyui_inverse.nodes.types import Measurement

    model, _, vae = comfy.sd.load_checkpoint_guess_config(PATH, output_clip=False)[:3]
    dm = model.model.diffusion_model
    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 64, 64, generator=g)
    op = ops.SuperResolution(4, kernel="bicubic")
    meas = Measurement(y=op.forward(img), operator=op, sigma_y=0.0, image_shape=(1, 3, 64, 64))
    cond = [[torch.zeros(1, 77, 768), {}]]
    real_grad = torch.autograd.grad

    def run(vjp, failure=None):
        def failing_grad(*a, **k):
            raise failure
        torch.autograd.grad = failing_grad if failure is not None else real_grad
        try:
            with torch.inference_mode():
                guider = comfy.samplers.CFGGuider(model)
                guider.set_conds(cond, cond)
                guider.set_cfg(1.0)
                sampler = cn.make_sampler("vp", meas, vae, 15.0, 0.0, vjp, "latent_surrogate")
                sigmas = cn.inverse_sigmas(model.get_model_object("model_sampling"), 3, 0.4)
                latent = torch.zeros(1, 4, 8, 8)
                return guider.sample(latent, latent, sampler, sigmas, disable_pbar=True, seed=0)
        finally:
            torch.autograd.grad = real_grad

    fd = run("finite_difference")
    autograd = run("autograd")
    oom = run("autograd", RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    remembered_after_oom = dm in cn._NO_AUTOGRAD
    other = run("autograd", RuntimeError("one of the variables needed for gradient computation has been modified"))
    print(json.dumps({
        "oom_equals_fd": torch.equal(oom, fd), "other_equals_fd": torch.equal(other, fd),
        "autograd_differs_from_fd": not torch.equal(autograd, fd),
        "remembered_after_oom": remembered_after_oom, "remembered_after_other": dm in cn._NO_AUTOGRAD,
    }))
""")


def test_autograd_failure_falls_back_to_finite_differences(comfy, tiny_models):
    out = run_in_fresh_process(FALLBACK, comfy, tiny_models["sd15_ckpt"])
    assert out["autograd_differs_from_fd"], out  # else the comparisons below could not tell
    assert out["oom_equals_fd"] and out["other_equals_fd"], out
    assert not out["remembered_after_oom"], out
    assert out["remembered_after_other"], out
