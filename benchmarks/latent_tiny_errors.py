"""Measurement errors of latent_surrogate vs consistent_target vs pixel_bridge on the tiny random-weight checkpoints.

Random weights mean the "prior" is meaningless, so this only shows how far each mode pulls the
result towards the measurement through a real (random) VAE: pixel ‖H D(x) − y‖/‖y‖ ([-1, 1]
scale) and latent ‖P_lat x − P_lat t‖/‖P_lat t‖ for the mode's latent target t (E(H⁺y), or the
consistent target), SR×4 bicubic at 64², paper settings (VP 5 steps w=15; flow 10 steps w=20
B=0.2), autograd VJP (Flux falls back to finite differences). The last column is the pixel error
of the target itself: how far D(t) is from agreeing with y before any sampling.

    python benchmarks/latent_tiny_errors.py --models /path/to/models
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfy", default=os.environ.get("COMFYUI_PATH", os.path.expanduser("~/.cache/comfyui-inverse/ComfyUI")))
    parser.add_argument("--models", required=True)
    parser.add_argument("--families", nargs="+", default=["sd15", "sdxl", "sd3", "flux"])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", default=str(HERE / "results" / "latent_tiny_errors.md"))
    args = parser.parse_args(argv)
    import comfy_overhead as co

    co.import_comfy(args.comfy)
    import torch
    import comfy.samplers
    from comfyui_inverse import operators as ops
    from comfyui_inverse.nodes import conjugate_nodes as cn
    from comfyui_inverse.nodes.comfy_bridge import VaeBridge, grad_enabled, model_kind, model_sampling_of
    from comfyui_inverse.nodes.types import Measurement
    from comfyui_inverse.samplers.latent_problem import make_latent_problem, pixel_measurement_error

    lines = ["| model | mode | vjp | pixel ‖HD(x)−y‖/‖y‖ | latent ‖P x − P t‖/‖P t‖ | pixel error of the target D(t) |",
             "|---|---|---|---|---|---|"]
    size = args.size
    with torch.inference_mode():
        for family in args.families:
            model, vae = co.load(Path(args.models), family)
            kind = model_kind(model_sampling_of(model))
            base = model.model
            img = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
            op = ops.SuperResolution(4, kernel="bicubic")
            meas = Measurement(y=op.forward(img), operator=op, sigma_y=0.0, image_shape=(1, 3, size, size))
            bridge = VaeBridge(vae, base.latent_format)
            bridge.load()
            y = meas.to_signed()
            problems = {"latent_surrogate": make_latent_problem("latent_surrogate", op, y, bridge.decode, bridge.encode)}
            with grad_enabled():
                problems["consistent_target"] = make_latent_problem("consistent_target", op, y, bridge.decode,
                                                                    bridge.encode)
            problems["pixel_bridge"] = problems["latent_surrogate"]  # same target
            target_err = {m: float(pixel_measurement_error(op, y, bridge.decode, pb.target).mean())
                          for m, pb in problems.items()}
            steps, w, lam = (5, 15.0, 0.0) if kind == "vp" else (10, 20.0, 0.2)
            sig = cn.inverse_sigmas(model_sampling_of(model), steps, 0.4)
            latent = torch.zeros(1, base.latent_format.latent_channels, size // 8, size // 8)
            for vjp in ("autograd", "none"):
                for mode in ("latent_surrogate", "consistent_target", "pixel_bridge"):
                    if vjp == "none" and mode != "latent_surrogate":
                        continue
                    guider = comfy.samplers.CFGGuider(model)
                    c = co.conds(family, torch)
                    guider.set_conds(c, c)
                    guider.set_cfg(1.0)
                    sampler = cn.make_sampler(kind, meas, vae, w, lam, vjp, mode)
                    raw = guider.sample(torch.zeros_like(latent), latent, sampler, sig, disable_pbar=True, seed=0)
                    x = base.latent_format.process_in(raw.float())
                    pe = float(pixel_measurement_error(op, y, bridge.decode, x).mean())
                    problem = problems[mode]
                    t = problem.pinv_y
                    le = float((problem.project(x) - t).flatten(1).norm(dim=1).mean() / t.flatten(1).norm(dim=1).mean())
                    lines.append(f"| {family} | {mode} | {vjp} | {pe:.4f} | {le:.4f} | {target_err[mode]:.4f} |")
                    print(lines[-1], flush=True)
            del model, vae
    text = "# Latent modes on tiny random-weight checkpoints\n\n" + __doc__.split("\n\n")[1] + "\n\n" + "\n".join(lines) + "\n"
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
