"""Restoration quality on the small learned prior, through a real ComfyUI server (issue #12 §3).

Starts ComfyUI (`main.py --cpu`, the pack's runner) on a fresh base directory holding the prior of
prior/ (the eps UNet + VAE assembled into one CheckpointLoaderSimple file by
`scripts/train_prior.py --assemble-checkpoint`, the flow LoRA in models/loras), uploads N held-out
images of prior/split.json (128² centre crops, a fixed seeded choice) and, per task, builds every
measurement with the pack's own operator nodes + Degrade Image, so the operator and y are identical
across methods. Each (task, method) is one API prompt; the metrics are the pack's metric nodes
(PSNR, SSIM, Measurement Consistency ‖Hx−y‖/‖y‖ = operators/metrics.py) on the decoded float output.
The images run as one batch per prompt; seconds per image = the prompt's execution time on the server
(its start → success messages) / batch size.

Methods (all on the same prior; every row of a task sees the same y):
  classical   bicubic / Lanczos resize of y (stock ImageScale; SR only), H⁺y (Pseudo-Inverse node)
  img2img     VAEEncode(bicubic for SR, else H⁺y) → KSampler euler, denoise 0.3 / 0.5, 5 steps
              (what ComfyUI users do today)
  inpaint     stock inpainting: SetLatentNoiseMask(VAEEncode(H⁺y), mask) → KSampler denoise 1.0, 10 steps
  sanity      the VAE round trip of the true image (the bound of every latent method) and the prior's
              own unconditional sample, on the first task
  preset auto Inverse Solve as a user gets it (C-ΠGDM; C-ΠGFM on the flow model: eps UNet + flow LoRA +
              ModelSamplingSD3 shift 1), enforce_measurement off so the row is the solver alone
  DDNM, ΠGDM, DPS   Inverse Solve, sampler = ddnm / pigdm (w 1) / dps (ζ 1), 10 steps each
  TReg        TReg Solve, data consistency only (an_steps 0), cfg 1, 10 steps (the prior ignores conditioning)
  grid        C-ΠGDM / C-ΠGFM × vjp × bridge × steps (preset custom with the analytic preset's values,
              no restart) on --grid-tasks: the default column's step sweep and each other vjp and bridge
              mode at the middle step count (--full-grid: every cell)
  + Enforce Measurement   the Enforce Measurement node on each pack row's output (cached solve)
Stages, so that an interrupted run (--max-minutes) still has every task's core rows: 1 = classical,
stock, sanity, preset auto, DDNM on every task (σ_y = 0.05 tasks: classical, img2img 0.3, stock inpainting,
C-ΠGDM preset auto; --all-noisy-rows adds the rest); 2 = ΠGDM, DPS, TReg on the noiseless tasks and denoising
(--baselines-noisy: also σ_y = 0.05); 3 = the grid. A prompt running longer than --timeout is
interrupted and recorded as timed out; the run goes on.

Budget on this shared 2-core CPU (other jobs running): 2 held-out images at 128² (one batch per prompt;
the cost is linear in the image count), 15 tasks, grid on inpaint_box, one server thread: ~45 min
(`--max-minutes 45` stops starting prompts after that; the run's footer says how long it took).

    python benchmarks/quality.py --max-minutes 45       # the full run (writes results/quality.md)
    python benchmarks/quality.py --tasks sr4 --quick    # smoke run: one image, stage 1 and 2
    python benchmarks/quality.py --check-demo           # the headless demo beats bicubic on PSNR?

Without prior/inverse_prior_sd15_eps.safetensors (still training), the eps UNet is a stand-in taken
from the training state's partial checkpoint (~/.cache/comfyui-inverse/prior_train/eps.pt); the
output says so. Writes benchmarks/results/quality.md and docs/images/quality_<task>.jpg.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PRIOR = REPO / "prior"
VAE_FILE = "inverse_prior_vae.safetensors"
EPS_FILE = "inverse_prior_sd15_eps.safetensors"
LORA_FILE = "inverse_prior_sd15_flow_lora.safetensors"
CKPT_NAME = "inverse_prior_sd15.safetensors"
STATE = Path(os.environ.get("INVERSE_PRIOR_STATE", os.path.expanduser("~/.cache/comfyui-inverse/prior_train")))
CACHE = Path(os.environ.get("INVERSE_HOME", os.path.expanduser("~/.cache/comfyui-inverse"))) / "quality"
CROP = 128
STEPS = (5, 10, 20)
GRID_TASKS = ("inpaint_box",)  # where the prior fills what y leaves open; SR/deblur latents are pinned by y
TIMEOUT = 400.0
# KSampler steps: img2img runs `steps` steps of the tail of the schedule at denoise < 1 (5 = the paper's C-ΠGDM
# step count); stock inpainting (denoise 1.0) runs 10 = the NFE of the C-ΠGDM preset (5 + 5 restart)
STOCK_STEPS, INPAINT_STEPS = 5, 10
DPS_STEPS, DPS_ZETA = 10, 1.0  # the NFE of the C-ΠGDM preset
VJPS = ("autograd", "finite_difference", "none")
BRIDGES = ("latent_surrogate", "consistent_target", "pixel_bridge")
TREG_STEPS = 10
UNCOND_STEPS = 10
# The demo workflow's small photo → the photo it was downscaled from (workflows/inputs/README.md)
DEMO_REFERENCE = {"inverse_astronaut_128.png": "inverse_astronaut_512.jpg"}
LABEL = "small prior trained here on {n} images, not Stable Diffusion"


# ------------------------------------------------------------------------------------ tasks

def node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


class Task:
    """One degradation: the operator node(s) and σ_y. `mask` names a mask PNG to upload (inpainting)."""

    def __init__(self, key, title, operator_nodes, sigma_y, sr_factor=0, mask=None):
        self.key, self.title, self.operator_nodes, self.sigma_y = key, title, operator_nodes, sigma_y
        self.sr_factor, self.mask = sr_factor, mask

    @property
    def base(self) -> str:
        return self.key.split("@")[0]

    @property
    def noisy(self) -> bool:
        return self.sigma_y > 0 and self.base != "denoise"

    def operator(self):
        """The same operator, built in-process from the pack's operators (for the preset choice)."""
        import torch

        from comfyui_inverse import operators as ops

        if self.sr_factor:
            return ops.SuperResolution(self.sr_factor, kernel="bicubic")
        if self.base == "gdeblur":
            return ops.GaussianBlur(3.0, threshold=0.03, mode="svd")
        if self.base == "motion":
            return ops.MotionBlur(9.0, 45.0, seed=None, threshold=0.03)
        if self.base == "denoise":
            return ops.Denoise()
        if self.base == "colorize":
            return ops.Colorization()
        return ops.Inpainting(torch.from_numpy(make_mask(self.mask)[None].astype(np.float32)))


def make_mask(kind: str) -> np.ndarray:
    """1 = missing pixel. box: the centre 64×64 (a quarter of the image); random: 70 % of the
    pixels, seeded."""
    m = np.zeros((CROP, CROP), np.float32)
    if kind == "box":
        m[32:96, 32:96] = 1.0
    else:
        m[np.random.default_rng(12).random((CROP, CROP)) < 0.7] = 1.0
    return m


def all_tasks() -> list[Task]:
    def sr(f):
        return {"op": node("InverseSuperResolution", factor=f, kernel="bicubic")}

    def inpaint(name):
        return {"mask": node("LoadImageMask", image=f"quality_mask_{name}.png", channel="red"),
                "op": node("InverseInpainting", mask=["mask", 0], threshold=0.5, dilate=0,
                           resize_mask_to_image=False)}

    base = [
        ("sr4", "SR ×4 (bicubic)", sr(4), {"sr_factor": 4}),
        ("sr8", "SR ×8 (bicubic)", sr(8), {"sr_factor": 8}),
        ("gdeblur", "Gaussian deblur (σ 3 px)", {"op": node("InverseGaussianBlur", sigma=3.0, kernel_size=0,
                                                             threshold=0.03, boundary="zero")}, {}),
        ("motion", "motion deblur (line 9 px, 45°)", {"op": node("InverseMotionBlur", length=9.0, angle=45.0,
                                                                  trajectory_seed=-1, threshold=0.03)}, {}),
        ("inpaint_box", "inpainting, centre box (25 %)", inpaint("box"), {"mask": "box"}),
        ("inpaint_random", "inpainting, random 70 % of pixels", inpaint("random"), {"mask": "random"}),
        ("colorize", "colorization", {"op": node("InverseColorization")}, {}),
    ]
    tasks = []
    for key, title, nodes, extra in base:
        tasks.append(Task(key, title, nodes, 0.0, **extra))
    tasks.append(Task("denoise", "denoising σ_y = 0.1", {"op": node("InverseDenoise")}, 0.1))
    for key, title, nodes, extra in base:
        tasks.append(Task(f"{key}@0.05", f"{title}, σ_y = 0.05", nodes, 0.05, **extra))
    return tasks


# ------------------------------------------------------------------------------------ data

def heldout_crops(n: int, seed: int, size: int = CROP) -> tuple[list[np.ndarray], list[str], int]:
    """n centre crops (size², short side resized to size) of held-out images, a seeded choice among
    the test side of prior/split.json (the pack's own sample photos excluded: skimage's astronaut is
    the same image). Returns (crops, names, train count)."""
    from comfyui_inverse.scripts import prior_data

    split = prior_data.read_split()
    entries = [e for e in split["test"] if e["package"] != "comfyui-inverse"]
    chosen = sorted(random.Random(seed).sample(range(len(entries)), min(n, len(entries))))
    crops, names = [], []
    for i in chosen:
        crops.append(prior_data.load_centre_crop(entries[i], size))
        names.append(Path(entries[i]["file"]).name)
    return crops, names, split["counts"]["train"]


# ------------------------------------------------------------------------------------ models

def _safetensors_metadata(path: Path) -> dict:
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(size)).get("__metadata__", {})


def _eps_source(stand_in: str | None) -> tuple[Path, str, str]:
    """(eps UNet file, description, short description). The committed file when it exists, else a stand-in from the
    training state's partial checkpoint (converted to fp16 safetensors in CACHE)."""
    committed = PRIOR / EPS_FILE
    if committed.exists() and stand_in is None:
        meta = _safetensors_metadata(committed)
        steps = json.loads(meta.get("config", "{}")).get("steps", "?")
        return committed, f"committed eps UNet ({committed.relative_to(REPO)}, {steps} training steps)", \
            f"eps UNet: {steps} training steps"
    state = Path(stand_in) if stand_in else STATE / "eps.pt"
    if not state.exists():
        raise SystemExit(f"No eps UNet: {committed} is not committed yet and there is no training checkpoint "
                         f"at {state}. Run scripts/train_prior.py (or pass --stand-in PATH to an eps.pt).")
    import torch
    from safetensors.torch import save_file

    ckpt = torch.load(state, map_location="cpu", weights_only=False)
    step = ckpt["step"]
    out = CACHE / f"standin_eps_step{step}" / EPS_FILE
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().to(torch.float16).contiguous() for k, v in ckpt["model"].items()}
        save_file(sd, str(out), metadata={"stage": "eps", "stand_in": f"partial checkpoint step {step}"})
    total = 400  # scripts/train_prior.py CONFIG["eps"]["steps"]
    what = ("the finished training state (step 400 of 400; the same weights as the file it commits, "
            "which had not landed on main yet)" if step >= total else
            f"STAND-IN: a partial training checkpoint at step {step} of {total} (the eps UNet had not finished)")
    return out, f"eps UNet from {what}", f"eps UNet: {step} of {total} training steps" + (
        "" if step >= total else " (STAND-IN, unfinished)")


def prepare_models(models_dir: Path, stand_in: str | None, python: str, comfy_root: Path) -> dict:
    """Put the prior where the stock loaders look: the assembled checkpoint (eps UNet + VAE + a seeded
    random CLIP-L) in checkpoints/, the flow LoRA in loras/. Returns a description."""
    eps, eps_desc, eps_short = _eps_source(stand_in)
    import hashlib

    key = hashlib.sha1(eps.read_bytes() + (PRIOR / VAE_FILE).read_bytes()).hexdigest()[:12]
    assembled = CACHE / f"ckpt_{key}" / CKPT_NAME
    if not assembled.exists():
        src = assembled.parent / "prior_files"
        src.mkdir(parents=True, exist_ok=True)
        for name, path in ((EPS_FILE, eps), (VAE_FILE, PRIOR / VAE_FILE)):
            if not (src / name).exists():
                os.symlink(path.resolve(), src / name)
        print(f"[quality] assembling {assembled} (scripts/train_prior.py --assemble-checkpoint)", flush=True)
        partial = assembled.with_name(f"partial_{os.getpid()}.safetensors")  # another run may read `assembled`
        subprocess.run([python, str(REPO / "scripts" / "train_prior.py"), "--assemble-checkpoint", str(partial),
                        "--out", str(src), "--threads", "1", "--comfy", str(comfy_root)], check=True,
                       stdout=subprocess.DEVNULL)
        partial.replace(assembled)
    (models_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    target = models_dir / "checkpoints" / CKPT_NAME
    if not target.exists():
        os.symlink(assembled, target)
    flow = (PRIOR / LORA_FILE).exists()
    if flow:
        (models_dir / "loras").mkdir(parents=True, exist_ok=True)
        if not (models_dir / "loras" / LORA_FILE).exists():
            os.symlink(PRIOR / LORA_FILE, models_dir / "loras" / LORA_FILE)
    vae_meta = _safetensors_metadata(PRIOR / VAE_FILE)
    return {"eps": eps_desc, "eps_short": eps_short, "flow": flow, "vae": f"TAESD-layout VAE, held-out PSNR {vae_meta.get('heldout_psnr_db', '?')} dB",
            "flow_desc": "flow LoRA on the eps UNet (prior/)" if flow else "flow LoRA not committed yet: no C-ΠGFM rows"}


# ------------------------------------------------------------------------------------ graphs

LOADERS = {
    "ckpt": node("CheckpointLoaderSimple", ckpt_name=CKPT_NAME),
    "pos": node("CLIPTextEncode", text="", clip=["ckpt", 1]),
    "neg": node("CLIPTextEncode", text="", clip=["ckpt", 1]),
}
FLOW_MODEL = {
    "lora": node("LoraLoaderModelOnly", model=["ckpt", 0], lora_name=LORA_FILE, strength_model=1.0),
    "flow": node("ModelSamplingSD3", model=["lora", 0], shift=1.0),
}


def ksampler(model, latent, steps, denoise, seed, scheduler="normal"):
    return node("KSampler", model=model, seed=seed, steps=steps, cfg=1.0, sampler_name="euler", scheduler=scheduler,
                positive=["pos", 0], negative=["neg", 0], latent_image=latent, denoise=denoise)


class Method:
    """A table row: name, group (classical / stock / sanity / pack / grid), steps shown, graph builder
    (task, seed, preset) -> (nodes, output ref). `stage`: 1 = the core set on every task, 2 = TReg,
    3 = the step sweep (noiseless tasks), 4 = the vjp × bridge grid; the run goes stage by stage, so an
    interrupted run still has every task's core rows."""

    def __init__(self, name, group, build, steps="", applies=lambda task: True, stage=1, in_figure=False,
                 adds_time_of=None):
        self.name, self.group, self.build, self.steps = name, group, build, steps
        self.applies, self.stage, self.in_figure, self.adds_time_of = applies, stage, in_figure, adds_time_of


def _start_image(task):
    return ["bicubic", 0] if task.sr_factor else ["pinv", 0]


def _start_nodes(task):
    if task.sr_factor:
        return {"bicubic": node("ImageScale", image=["meas", 1], upscale_method="bicubic", width=CROP, height=CROP,
                                crop="disabled")}
    return {"pinv": node("InversePseudoInverse", measurement=["meas", 0])}


def classical(kind):
    def build(task, seed, p, n):
        if kind == "pinv":
            return {"pinv": node("InversePseudoInverse", measurement=["meas", 0])}, ["pinv", 0]
        return {"cls": node("ImageScale", image=["meas", 1], upscale_method=kind, width=CROP, height=CROP,
                            crop="disabled")}, ["cls", 0]
    return build


def img2img(denoise):
    def build(task, seed, p, n):
        nodes = _start_nodes(task)
        nodes["enc"] = node("VAEEncode", pixels=_start_image(task), vae=["ckpt", 2])
        nodes["ks"] = ksampler(["ckpt", 0], ["enc", 0], STOCK_STEPS, denoise, seed)
        nodes["dec"] = node("VAEDecode", samples=["ks", 0], vae=["ckpt", 2])
        return nodes, ["dec", 0]
    return build


def stock_inpaint(task, seed, p, n):
    nodes = {"pinv": node("InversePseudoInverse", measurement=["meas", 0]),
             "enc": node("VAEEncode", pixels=["pinv", 0], vae=["ckpt", 2]),
             "nm": node("SetLatentNoiseMask", samples=["enc", 0], mask=["mask", 0])}
    nodes["ks"] = ksampler(["ckpt", 0], ["nm", 0], INPAINT_STEPS, 1.0, seed)
    nodes["dec"] = node("VAEDecode", samples=["ks", 0], vae=["ckpt", 2])
    return nodes, ["dec", 0]


def stock_inpaint_composited(task, seed, p, n):
    """Stock inpainting, then the known pixels pasted back (stock InvertMask + ImageCompositeMasked)."""
    nodes, out = stock_inpaint(task, seed, p, n)
    nodes["known"] = node("InvertMask", mask=["mask", 0])
    nodes["paste"] = node("ImageCompositeMasked", destination=out, source=["pinv", 0], x=0, y=0,
                          resize_source=False, mask=["known", 0])
    return nodes, ["paste", 0]


def unconditional(task, seed, p, n):
    nodes = {"empty": node("EmptyLatentImage", width=CROP, height=CROP, batch_size=n)}
    nodes["ks"] = ksampler(["ckpt", 0], ["empty", 0], UNCOND_STEPS, 1.0, seed)
    nodes["dec"] = node("VAEDecode", samples=["ks", 0], vae=["ckpt", 2])
    return nodes, ["dec", 0]


def vae_round_trip(task, seed, p, n):
    nodes = {"enc": node("VAEEncode", pixels=["gt", 0], vae=["ckpt", 2]),
             "dec": node("VAEDecode", samples=["enc", 0], vae=["ckpt", 2])}
    return nodes, ["dec", 0]


def solve(family, steps=None, vjp="autograd", bridge="latent_surrogate", sampler="conjugate", preset="custom",
          w=None, restarts=0):
    """Inverse Solve with preset `preset`; for "custom" the analytic preset's w, λ, k, start, noisy map
    (samplers/presets.py) at `steps` (None: the preset's) with `restarts` (None: the preset's) and
    weight `w` (None: the preset's; ΠGDM's w, DPS's step size ζ)."""
    def build(task, seed, p, n):
        q = p[family]
        nodes = dict(FLOW_MODEL) if family == "flow" else {}
        model = ["flow", 0] if family == "flow" else ["ckpt", 0]
        nodes["solve"] = node("InverseSolveConjugate", model=model, vae=["ckpt", 2], positive=["pos", 0],
                              negative=["neg", 0], measurement=["meas", 0], preset=preset,
                              steps=steps or q["steps"], cfg=1.0, w=q["w"] if w is None else w, lam=q["lam"],
                              start=q["start"], seed=seed, vjp=vjp, bridge_mode=bridge, sampler=sampler, k=q["k"],
                              enforce_measurement="off", noisy=q["noisy"],
                              restarts=q["restarts"] if restarts is None else restarts)
        return nodes, ["solve", 0]
    return build


def enforced(build_solve):
    def build(task, seed, p, n):
        nodes, out = build_solve(task, seed, p, n)
        nodes["enforce"] = node("InverseEnforceMeasurement", image=out, measurement=["meas", 0])
        return nodes, ["enforce", 0]
    return build


def treg(steps):
    def build(task, seed, p, n):
        return {"treg": node("InverseTRegSolve", model=["ckpt", 0], measurement=["meas", 0], vae=["ckpt", 2],
                             positive=["pos", 0], negative=["neg", 0], steps=steps, scheduler="ddim_uniform",
                             cfg=1.0, an_steps=0, an_lr=0.0, an_method="adam", dc_every=3, dc_until=0.85,
                             cg_iters=5, cg_lambda=1e-4, use_dps=False, seed=seed)}, ["treg", 0]
    return build


def methods(flow: bool, args) -> list[Method]:
    """Every row. Stage 1 = the core rows on every task; 2 = the baselines ΠGDM, DPS, TReg (on the noisy
    tasks only with --baselines-noisy); 3 = the grid (steps × vjp × bridge) on --grid-tasks. Each pack
    method is followed by its `+ Enforce Measurement` row, which reuses the cached solve node (only the
    Enforce Measurement node runs; its s/image adds the solve's)."""
    sr = lambda t: bool(t.sr_factor)  # noqa: E731
    inp = lambda t: t.mask is not None  # noqa: E731
    first = lambda t: t.key == args.first_task  # noqa: E731
    baseline = lambda t: args.baselines_noisy or not t.noisy  # noqa: E731
    clean_first = lambda t: args.all_noisy_rows or not t.noisy  # noqa: E731
    out = [
        Method("bicubic (ImageScale)", "classical", classical("bicubic"), applies=sr, in_figure=True),
        Method("Lanczos (ImageScale)", "classical", classical("lanczos"), applies=sr),
        Method("H⁺y (Pseudo-Inverse)", "classical", classical("pinv"), in_figure=True),
        Method("img2img denoise 0.3", "img2img", img2img(0.3), STOCK_STEPS, in_figure=True),
        Method("img2img denoise 0.5", "img2img", img2img(0.5), STOCK_STEPS, applies=clean_first),
        Method("SetLatentNoiseMask + KSampler", "img2img", stock_inpaint, INPAINT_STEPS, applies=inp),
        # cached KSampler: only the two paste nodes run; s/image adds the row above's
        Method("SetLatentNoiseMask + KSampler + paste known pixels", "img2img", stock_inpaint_composited,
               INPAINT_STEPS, applies=inp, in_figure=True, adds_time_of="SetLatentNoiseMask + KSampler"),
        Method("VAE round trip of the true image (bound)", "sanity", vae_round_trip, applies=first),
        Method("unconditional sample", "sanity", unconditional, UNCOND_STEPS, applies=first),
    ]

    def pack(name, build, steps, stage=1, applies=lambda t: True, figure=False, group="pack"):
        out.append(Method(name, group, build, steps, applies=applies, stage=stage, in_figure=figure))
        out.append(Method(f"{name} + Enforce Measurement", group, enforced(build), steps, applies=applies,
                          stage=stage, in_figure=figure, adds_time_of=name))

    pack("Inverse Solve, preset auto (C-ΠGDM)", solve("vp", preset="auto"), "auto", figure=True)
    pack("DDNM", solve("vp", 10, vjp="none", sampler="ddnm"), 10, applies=clean_first)
    if flow:
        pack("Inverse Solve, preset auto (C-ΠGFM)", solve("flow", preset="auto"), "auto", figure=True,
             applies=clean_first)
    pack("ΠGDM (w 1)", solve("vp", 10, sampler="pigdm", w=1.0), 10, stage=2, applies=baseline)
    pack(f"DPS (ζ {DPS_ZETA:g})", solve("vp", DPS_STEPS, sampler="dps", w=DPS_ZETA), DPS_STEPS, stage=2,
         applies=baseline)
    pack("TReg (data consistency, cfg 1, no AN)", treg(args.treg_steps), args.treg_steps, stage=2, applies=baseline)
    grid = lambda t: t.key in args.grid_tasks  # noqa: E731
    for family in (("vp", "flow") if flow else ("vp",)):
        name = "C-ΠGDM" if family == "vp" else "C-ΠGFM"
        for vjp, bridge, steps in grid_cells(args):
            label = f"{name} vjp={vjp} bridge={bridge}"
            pack(label, solve(family, steps, vjp, bridge), steps, stage=3, applies=grid, group="grid")
    return out


def grid_cells(args) -> list[tuple[str, str, int]]:
    """(vjp, bridge, steps) of the grid. --full-grid: every combination; default: the step sweep of the
    default column (autograd, latent_surrogate) plus every other vjp and bridge mode at the middle step count."""
    if args.full_grid:
        return [(v, b, s) for v in VJPS for b in BRIDGES for s in args.grid_steps]
    mid = sorted(args.grid_steps)[len(args.grid_steps) // 2] if args.grid_steps else 10
    cells = [("autograd", "latent_surrogate", s) for s in args.grid_steps]
    cells += [(v, "latent_surrogate", mid) for v in VJPS if v != "autograd"]
    cells += [("autograd", b, mid) for b in BRIDGES if b != "latent_surrogate"]
    return cells


def presets_for(task: Task) -> dict:
    """vp / flow: the analytic presets (samplers/presets.py) whose w, λ, k, start the custom rows use;
    auto_vp / auto_flow: what the all-in-one node's preset auto runs on a latent model
    (samplers/latent_presets.py), for the `auto` rows' step counts."""
    from comfyui_inverse.samplers.latent_presets import latent_preset
    from comfyui_inverse.samplers.presets import preset

    op = task.operator()
    shape = (1, 3, CROP, CROP)
    return {"vp": preset("auto", "vp", op, task.sigma_y, shape), "flow": preset("auto", "flow", op, task.sigma_y, shape),
            "auto_vp": latent_preset("auto", "vp", op, task.sigma_y, shape),
            "auto_flow": latent_preset("auto", "flow", op, task.sigma_y, shape)}


def image_batch(names: list[str]) -> dict:
    """Node "gt": the images as one batch (LoadImage each, stock ImageBatch chain)."""
    nodes = {f"gt{i}": node("LoadImage", image=name) for i, name in enumerate(names)}
    if len(names) == 1:
        return {"gt": nodes["gt0"]}
    prev = "gt0"
    for i in range(1, len(names)):
        nid = "gt" if i == len(names) - 1 else f"gtb{i}"
        nodes[nid] = node("ImageBatch", image1=[prev, 0], image2=[f"gt{i}", 0])
        prev = nid
    return nodes


def prompt_for(task: Task, image_names: list[str], method: Method, p: dict, flow: bool, save: bool) -> dict:
    prompt = dict(LOADERS)
    if flow:
        prompt.update(FLOW_MODEL)
    prompt.update(image_batch(image_names))
    prompt.update(task.operator_nodes)
    prompt["meas"] = node("InverseDegradeImage", image=["gt", 0], operator=["op", 0], sigma_y=task.sigma_y, seed=1000)
    nodes, out = method.build(task, 100, p, len(image_names))
    prompt.update(nodes)
    prompt["psnr"] = node("InversePSNR", image=out, reference=["gt", 0])
    prompt["ssim"] = node("InverseSSIM", image=out, reference=["gt", 0])
    prompt["cons"] = node("InverseMeasurementConsistency", image=out, measurement=["meas", 0])
    if save:
        prompt["save"] = node("SaveImage", images=out, filename_prefix=f"quality/{task.key}")
        prompt["save_y"] = node("SaveImage", images=["meas", 1], filename_prefix=f"quality/{task.key}_y")
    return prompt


# ------------------------------------------------------------------------------------ running

_NUMBER = re.compile(r":\s*(-?[0-9.eE+-]+|inf|nan)")


def metric(history: dict, node_id: str) -> float:
    """The batch mean a metric node showed ("PSNR: 23.4 dB (per image: ...)")."""
    text = ((history.get("outputs") or {}).get(node_id) or {}).get("text") or [""]
    m = _NUMBER.search(text[0])
    return float(m.group(1)) if m else float("nan")


def execution_seconds(history: dict) -> float:
    stamps = {name: data.get("timestamp") for name, data in (history.get("status") or {}).get("messages", [])}
    if stamps.get("execution_start") and stamps.get("execution_success"):
        return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0
    return float("nan")


def run_prompt(comfy, prompt: dict, timeout: float) -> dict:
    """Queue and wait, riding out HTTP timeouts: on a loaded CPU the server can take longer than the
    client's per-request timeout to answer /history while a long node runs."""
    from comfyui_inverse.runner.client import PromptExecutionError

    prompt_id = comfy.queue(prompt)
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            comfy.interrupt()
            _wait_idle(comfy, prompt_id)
            raise TimeoutError(f"prompt did not finish within {timeout:.0f} s (interrupted)")
        try:
            return comfy.wait(prompt_id, timeout=left)
        except PromptExecutionError:
            raise
        except (TimeoutError, OSError):  # a request timed out (socket), not the prompt
            time.sleep(2.0)


def _wait_idle(comfy, prompt_id: str, limit: float = 300.0) -> None:
    """After an interrupt: wait until the server has left the prompt (a node that never checks the
    interrupt flag keeps running), so the next prompt's clock does not start behind it."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            queue = comfy.http.queue()
            if not queue.get("queue_running") and not queue.get("queue_pending"):
                return
            comfy.interrupt()
        except OSError:
            pass
        time.sleep(2.0)


def run_one(comfy, task, method, p, image_names, args, log, done=()) -> dict:
    """One prompt: the method on the batch of images. s/image = execution time / batch size."""
    save = method.in_figure and not task.noisy and args.figures
    prompt = prompt_for(task, image_names, method, p, args.flow, bool(save))
    n = len(image_names)
    steps = method.steps
    if steps == "auto":  # what the node's preset auto ran: steps (+ restarts × steps)
        q = p["auto_flow" if "ΠGFM" in method.name else "auto_vp"]
        steps = f"{q['steps']}" + (f"+{q['restarts']}×{q['steps']}" if q["restarts"] else "") + " (auto)"
    row = {"task": task.key, "title": task.title, "method": method.name, "group": method.group, "steps": steps,
           "stage": method.stage, "n": n}
    try:
        h = run_prompt(comfy, prompt, args.timeout)
    except TimeoutError:  # recorded, and the run goes on (the prompt was interrupted)
        row["failed"] = f"timed out after {args.timeout:.0f} s"
        log(f"{task.key} | {method.name} {steps} | TIMED OUT after {args.timeout:.0f} s")
        return row
    except Exception as err:  # report the failure in the table and go on
        row["failed"] = f"{type(err).__name__}: {' '.join(str(err).split())[:240]}"
        log(f"{task.key} | {method.name} {steps} | FAILED {row['failed']}")
        return row
    row.update(psnr=metric(h, "psnr"), ssim=metric(h, "ssim"), cons=metric(h, "cons"),
               sec=execution_seconds(h) / n)
    if method.adds_time_of:
        before = [r for r in done if r["method"] == method.adds_time_of and r["steps"] == steps and "sec" in r]
        row["sec"] += before[-1]["sec"] if before else float("nan")
    if save:
        row["images"] = comfy.images(h, "save")
        row["measured"] = comfy.images(h, "save_y")
    log(f"{task.key} | {method.name} {steps} | n={n} PSNR {row['psnr']:.2f} SSIM {row['ssim']:.3f} "
        f"‖Hx−y‖/‖y‖ {row['cons']:.4f} {row['sec']:.2f} s/image")
    return row


# ------------------------------------------------------------------------------------ output

def _describe(q: dict, flow: bool) -> str:
    restart = f" + {q['restarts']} restart" if q["restarts"] else ""
    text = (f"{q['steps']} steps{restart}, w {q['w']:g}, {'B' if flow else 'λ'} {q['lam']:g}, k {q['k']:g}, "
            f"start {q['start']:.3g}")
    if "enforce" in q:
        text += f", sampler {q['sampler']}, bridge {q.get('bridge', 'auto')}, enforce {'on' if q['enforce'] else 'off'}"
    return text


def table(rows: list[dict], task_title: str, p: dict) -> list[str]:
    lines = [f"### {task_title}", "",
             f"Custom rows use the analytic preset (samplers/presets.py): C-ΠGDM {_describe(p['vp'], False)}; "
             f"C-ΠGFM {_describe(p['flow'], True)}. Preset auto on a latent model (samplers/latent_presets.py) "
             f"when this ran: C-ΠGDM {_describe(p['auto_vp'], False)}; C-ΠGFM {_describe(p['auto_flow'], True)}.", "",
             "| method | steps | PSNR dB | SSIM | ‖Hx−y‖/‖y‖ | s/image | images |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['method']} | {r['steps']} | failed: {r['failed'][:200]} | | | | 0 |")
            continue
        lines.append(f"| {r['method']} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['cons']:.4f} | "
                     f"{r['sec']:.2f} | {r['n']} |")
    return lines + [""]


def best_rows(rows: list[dict]) -> dict:
    """The best row (PSNR) of each group: pack (every pack row, grid included), classical, stock
    (img2img and stock inpainting)."""
    ok = [r for r in rows if "failed" not in r and r["psnr"] == r["psnr"]]
    groups = {"pack": ("pack", "grid"), "classical": ("classical",), "stock": ("img2img",)}
    return {k: max((r for r in ok if r["group"] in g), key=lambda r: r["psnr"], default=None)
            for k, g in groups.items()}


def headline(rows: list[dict]) -> str:
    """Best pack method vs the best classical vs the best img2img/stock, on PSNR and ‖Hx−y‖/‖y‖, and whether
    the pack's best beats both on both."""
    best = best_rows(rows)
    parts = []
    for key, label in (("pack", "best pack method"), ("classical", "best classical"), ("stock", "best stock")):
        r = best[key]
        if r:
            at = f" @ {r['steps']}" if r["steps"] != "" else ""
            parts.append(f"{label}: {r['method']}{at} = {r['psnr']:.2f} dB, ‖Hx−y‖/‖y‖ {r['cons']:.4f}")
    p, c, st = best["pack"], best["classical"], best["stock"]
    if p and c and st:
        wins = [p["psnr"] > o["psnr"] and p["cons"] <= o["cons"] for o in (c, st)]
        parts.append("**beats both on PSNR, ‖Hx−y‖ no higher**" if all(wins) else
                     "**does not beat " + " and ".join(n for n, w in zip(("classical", "stock"), wins) if not w)
                     + " on both**")
    return "; ".join(parts)


PRESET_TASK = {"sr4": "sr4", "sr8": "sr8", "gdeblur": "gaussian_deblur", "motion": "motion_deblur",
               "inpaint_box": "inpaint", "inpaint_random": "inpaint", "colorize": "colorize", "denoise": "denoise"}
TIE_DB = 0.05  # PSNR differences below this count as a tie, broken by time


def preset_settings(row: dict) -> dict | None:
    """What samplers/latent_presets.py would have to say for the Inverse Solve node to run this row
    (None: not expressible by the node's preset, e.g. TReg or a vjp other than the default)."""
    name = row["method"]
    enforce = name.endswith("+ Enforce Measurement")
    base = name.removesuffix(" + Enforce Measurement")
    steps = row["steps"]
    if base.startswith("Inverse Solve, preset auto"):
        out = {}
    elif base == "DDNM":
        out = {"sampler": "ddnm", "steps": steps, "restarts": 0}
    elif base.startswith("ΠGDM"):
        out = {"sampler": "pigdm", "steps": steps, "w": 1.0, "restarts": 0}
    elif base.startswith("DPS"):
        out = {"sampler": "dps", "steps": steps, "w": DPS_ZETA, "restarts": 0}
    elif base.startswith(("C-ΠGDM vjp=autograd", "C-ΠGFM vjp=autograd")):
        out = {"steps": steps, "restarts": 0, "bridge": base.split("bridge=")[1]}
    else:
        return None
    return {**out, "enforce": enforce}


def recommendations(tasks, rows_by_task: dict) -> list[str]:
    """Per task and family: the best row the node's preset can express (PSNR; ties within TIE_DB dB go to
    the faster row). The evidence for samplers/latent_presets.py."""
    lines = ["## What preset auto should run on a latent model (from this run)", "",
             f"Best row per task that the Inverse Solve node's preset can express (PSNR; within {TIE_DB} dB the faster "
             "row wins). Diffusion = the eps UNet rows, flow = the C-ΠGFM rows.", "",
             "| task | family | row | steps | PSNR dB | ‖Hx−y‖/‖y‖ | s/image | preset settings |", "|---|---|---|---|---|---|---|---|"]
    for t in tasks:
        rows = [r for r in rows_by_task.get(t.key, []) if "failed" not in r and r["group"] in ("pack", "grid")
                and r["psnr"] == r["psnr"] and preset_settings(r) is not None]
        for family, pick in (("diffusion", lambda r: "ΠGFM" not in r["method"]), ("flow", lambda r: "ΠGFM" in r["method"])):
            cands = [r for r in rows if pick(r)]
            if not cands:
                continue
            top = max(r["psnr"] for r in cands)
            best = min((r for r in cands if r["psnr"] >= top - TIE_DB), key=lambda r: r["sec"])
            lines.append(f"| {t.key} | {family} | {best['method']} | {best['steps']} | {best['psnr']:.2f} | "
                         f"{best['cons']:.4f} | {best['sec']:.2f} | `{preset_settings(best)}` |")
    return lines + [""]


def summary_table(tasks, rows_by_task: dict) -> list[str]:
    """One line per task: the best of the pack / classical / stock (PSNR dB, ‖Hx−y‖/‖y‖) and whether the pack's
    best beats both (README)."""
    lines = ["Cells: the best row of each group by PSNR: PSNR, ‖Hx−y‖/‖y‖. 'Beats both' = higher PSNR and a residual no "
             "higher (noiseless); with σ_y > 0 PSNR only (a residual below the noise level, ≈ 0.1 here, is fitted noise).",
             "",
             "| task | best of the pack | best classical | best stock (img2img / inpainting) | pack beats both? |",
             "|---|---|---|---|---|"]
    for t in tasks:
        best = best_rows(rows_by_task.get(t.key, []))
        cell = lambda r: f"{short_name(r)}: {r['psnr']:.2f} dB, {r['cons']:.4f}" if r else "—"  # noqa: E731
        p, c, st = best["pack"], best["classical"], best["stock"]
        verdict = "—"
        if p and c and st:  # with σ_y > 0 a residual below the noise level means fitting the noise: PSNR only
            lost = [n for n, o in (("classical", c), ("stock", st))
                    if not (p["psnr"] > o["psnr"] and (t.sigma_y > 0 or p["cons"] <= o["cons"]))]
            verdict = ("yes" if not lost else "no (" + ", ".join(lost) + ")") + (" (PSNR)" if t.sigma_y > 0 else "")
        lines.append(f"| {t.title} | {cell(p)} | {cell(c)} | {cell(st)} | {verdict} |")
    return lines


def write_report(path: Path, header: list[str], tasks, rows_by_task: dict, presets: dict, note: str):
    lines = list(header)
    done = [t for t in tasks if rows_by_task.get(t.key)]
    lines += ["## Headline per task (mean over the images; the same images and y for every row)", ""]
    lines += [f"- **{t.title}** — {headline(rows_by_task[t.key])}" for t in done] + [""]
    lines += summary_table(done, rows_by_task) + [""]
    lines += recommendations(done, rows_by_task)
    for t in done:
        lines += table(rows_by_task[t.key], t.title, presets[t.key])
    if note:
        lines += ["", note]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    # the rows without pixels, to re-render the report (--rerender) after a change of its format
    keep = {k: [{f: v for f, v in r.items() if f not in ("images", "measured")} for r in rows]
            for k, rows in rows_by_task.items()}
    Path(str(path) + ".json").write_text(json.dumps({"header": header, "rows": keep, "note": note, "presets": presets},
                                                    ensure_ascii=False))


def _font(size: int):
    """A font with Π, ⁺, × (DejaVu Sans where installed; else Pillow's default)."""
    from PIL import ImageFont

    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default()


def short_name(row: dict) -> str:
    """A figure label: 'C-ΠGDM auto + enforce', 'img2img denoise 0.3', 'H⁺y', ..."""
    name = row["method"].replace("Inverse Solve, preset auto (C-ΠGDM)", "C-ΠGDM auto").replace(
        "Inverse Solve, preset auto (C-ΠGFM)", "C-ΠGFM auto").replace("+ Enforce Measurement", "+ enforce")
    name = name.replace(" (ImageScale)", "").replace(" (Pseudo-Inverse)", "")
    name = name.replace("SetLatentNoiseMask + KSampler", "stock inpaint").replace("paste known pixels", "paste")
    return re.sub(r" \([^)]*\)", "", name)


def _psnr_u8(image, truth) -> float:
    def unit(x):
        x = np.asarray(x)
        return x.astype(np.float64) / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)

    mse = float(np.mean((unit(image) - unit(truth)) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def _cell_image(tile, cell: int):
    """A float [0, 1] or uint8 image as a cell x cell RGB picture (nearest: no smoothing added)."""
    from PIL import Image

    arr = np.asarray(tile)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    img = Image.fromarray(arr.squeeze()).convert("RGB")
    return img if img.size == (cell, cell) else img.resize((cell, cell), Image.NEAREST)


def save_before_after(path: Path, tasks, rows_by_task: dict, crops, n_train: int, image_index: int = 0):
    """The README picture: one held-out image per noiseless task; columns = measured y, best classical,
    best stock (img2img / inpainting), best pack method, ground truth (best = PSNR among rows that saved
    images, i.e. the figure rows)."""
    from PIL import Image, ImageDraw

    lines = []
    for t in tasks:
        rows = [r for r in rows_by_task.get(t.key, []) if r.get("images")]
        if t.noisy or not rows:
            continue
        pick = {}
        for key, groups in (("classical", ("classical",)), ("stock", ("img2img",)), ("pack", ("pack", "grid"))):
            cands = [r for r in rows if r["group"] in groups]
            pick[key] = max(cands, key=lambda r: r["psnr"], default=None)
        if all(pick.values()):
            lines.append((t, pick, rows[0]))
    if not lines:
        return
    cell, pad, left, top, foot = CROP, 4, 150, 30, 18
    heads = ["measured y", "best classical", "best stock\n(img2img / inpaint)", "best of the pack\n(figure rows)",
             "ground truth"]
    canvas = Image.new("RGB", (left + len(heads) * (cell + pad), top + len(lines) * (cell + 30 + pad) + foot), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    for c, h in enumerate(heads):
        draw.multiline_text((left + c * (cell + pad), 2), h, fill="black", font=font, spacing=1)
    for i, (t, pick, any_row) in enumerate(lines):
        y = top + i * (cell + 30 + pad)
        words, title_lines = t.title.split(), [""]
        for word in words:  # wrap the task title into the left margin
            if len(title_lines[-1]) + len(word) > 22:
                title_lines.append("")
            title_lines[-1] = (title_lines[-1] + " " + word).strip()
        draw.multiline_text((2, y + cell // 2 - 7 * len(title_lines)), "\n".join(title_lines), fill="black",
                            font=font, spacing=2)
        tiles = [(any_row["measured"][image_index], "")] + [
            (pick[k]["images"][image_index],
             f"{short_name(pick[k])[:22]}\n{_psnr_u8(pick[k]['images'][image_index], crops[image_index]):.1f} dB")
            for k in ("classical", "stock", "pack")] + [(crops[image_index], "")]
        for c, (tile, caption) in enumerate(tiles):
            canvas.paste(_cell_image(tile, cell), (left + c * (cell + pad), y))
            draw.multiline_text((left + c * (cell + pad), y + cell + 1), caption, fill="black", font=font, spacing=1)
    draw.text((2, canvas.height - foot + 3), f"Held-out images; PSNR = this image. {LABEL.format(n=n_train)}.",
              fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=88, optimize=True)


def save_figure(path: Path, task_title: str, gts, rows: list[dict], n_train: int, prior_desc: str):
    """Rows = images, columns = ground truth, measured y, then the methods that saved images."""
    from PIL import Image, ImageDraw

    cols = [r for r in rows if r.get("images")]
    if not cols:
        return
    n = min(len(gts), len(cols[0]["images"]))
    labels = ["ground truth", "measured y"] + [short_name(r) for r in cols]
    cell, pad, top, foot = CROP, 4, 30, 30
    width = len(labels) * (cell + pad) + pad
    height = top + n * (cell + pad) + foot
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(11)
    for c, label in enumerate(labels):
        x = pad + c * (cell + pad)
        first, second = label, ""
        if len(label) > 20:
            cut = label.rfind(" ", 0, 20)
            first, second = label[:cut], label[cut + 1:]
        draw.text((x, 2), first, fill="black", font=font)
        draw.text((x, 15), second, fill="black", font=font)
    for i in range(n):
        y = top + i * (cell + pad)
        tiles = [gts[i], cols[0]["measured"][i]] + [r["images"][i] for r in cols]
        for c, tile in enumerate(tiles):
            canvas.paste(_cell_image(tile, cell), (pad + c * (cell + pad), y))
    draw.text((pad, height - foot + 3), f"{task_title}. {LABEL.format(n=n_train)}.", fill="black", font=font)
    draw.text((pad, height - foot + 16), prior_desc[:width // 6], fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, quality=85, optimize=True)


# ------------------------------------------------------------------------------------ demo check

def check_demo(args, log) -> dict:
    """The headless demo from a clean machine: a fresh base directory holding only the prior's assembled
    checkpoint, the default workflow run by `python -m comfyui_inverse run` (as scripts/serve.sh does),
    then PSNR of its restored image and of a bicubic upscale of its measured image against the ground
    truth. Returns {"restored_psnr", "bicubic_psnr", "beats_bicubic", ...}."""
    import torch
    from PIL import Image

    from comfyui_inverse.operators.metrics import psnr

    workflow = Path(args.demo_workflow or sorted(p for p in (REPO / "workflows").glob("*.json")
                                                  if not p.name.endswith(".api.json"))[0])
    with tempfile.TemporaryDirectory(prefix="quality-demo-") as tmp:
        base = Path(tmp) / "base"
        for sub in ("custom_nodes", "input", "output", "models/checkpoints"):
            (base / sub).mkdir(parents=True, exist_ok=True)
        for f in (REPO / "workflows" / "inputs").iterdir():
            if f.suffix in (".png", ".jpg", ".webp"):
                (base / "input" / f.name).write_bytes(f.read_bytes())
        info = prepare_models(base / "models", args.stand_in, args.python, args.comfy_root)
        out = Path(tmp) / "out"
        cmd = [args.python, "-m", "comfyui_inverse", "run", str(workflow), "--base-dir", str(base),
               "--ckpt", CKPT_NAME, "--out", str(out), "--quiet"]
        log("[demo] " + " ".join(cmd))
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env=dict(os.environ, PYTHONPATH=os.environ.get("PYTHONPATH", "")))
        seconds = time.perf_counter() - t0
        files = sorted(out.rglob("*.png"))
        restored = [f for f in files if "measured" not in f.name and "_y" not in f.stem]
        measured = [f for f in files if "measured" in f.name]
        api = json.loads((REPO / "workflows" / "api" / workflow.name).read_text())
        input_name = next(v["inputs"]["image"] for v in api.values() if v["class_type"] == "LoadImage")
        if not restored:
            raise RuntimeError(f"the demo wrote {[f.name for f in files]}: expected a restored image")
        rest = Image.open(restored[0]).convert("RGB")
        if input_name in DEMO_REFERENCE:  # the user's small photo: the truth is the photo it was made from
            gt = Image.open(base / "input" / DEMO_REFERENCE[input_name]).convert("RGB")
            small = Image.open(base / "input" / input_name).convert("RGB")
        elif measured:  # a synthetic workflow: the input is the truth, y was saved
            gt = Image.open(base / "input" / input_name).convert("RGB")
            small = Image.open(measured[0]).convert("RGB")
        else:
            raise RuntimeError(f"the demo wrote {[f.name for f in files]} and its input {input_name} has no known "
                               "ground truth: expected a *_measured image")
        bic = small.resize(gt.size, Image.BICUBIC)

        def t(img):
            return torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)[None]

        result = {"workflow": workflow.name, "prior": info["eps"], "seconds": round(seconds, 1),
                  "restored_psnr": float(psnr(t(rest), t(gt))[0]), "bicubic_psnr": float(psnr(t(bic), t(gt))[0]),
                  "restored_file": restored[0].name}
        result["beats_bicubic"] = result["restored_psnr"] > result["bicubic_psnr"]
        if args.demo_image:
            rest.save(args.demo_image)
    log(f"[demo] {json.dumps(result)}")
    return result


# ------------------------------------------------------------------------------------ main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2,
                        help="held-out images (seeded choice); the cost is linear in it (one batch per prompt)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the image choice")
    parser.add_argument("--tasks", nargs="+", help="task keys (e.g. sr4 gdeblur inpaint_box@0.05); default: all")
    parser.add_argument("--noiseless-only", action="store_true")
    parser.add_argument("--grid-tasks", nargs="*", default=list(GRID_TASKS),
                        help="tasks of the steps × vjp × bridge grid (stage 3)")
    parser.add_argument("--grid-steps", type=int, nargs="*", default=list(STEPS))
    parser.add_argument("--full-grid", action="store_true",
                        help="every vjp × bridge × steps cell (default: the step sweep of the default column, the "
                             "other vjp and bridge modes at the middle step count)")
    parser.add_argument("--all-noisy-rows", action="store_true",
                        help="also img2img 0.5, DDNM and C-ΠGFM on the σ_y = 0.05 tasks (stage 1)")
    parser.add_argument("--baselines-noisy", action="store_true",
                        help="also run ΠGDM, DPS and TReg on the σ_y = 0.05 tasks (stage 2)")
    parser.add_argument("--treg-steps", type=int, default=TREG_STEPS)
    parser.add_argument("--max-minutes", type=float, default=0, help="start no prompt after this (0 = no limit)")
    parser.add_argument("--quick", action="store_true", help="one image, core methods only: a smoke run")
    parser.add_argument("--methods", nargs="+", help="only methods whose name starts with one of these")
    parser.add_argument("--stand-in", metavar="EPS_PT", help="use this training checkpoint (eps.pt) as the eps UNet "
                        "even if the committed file exists")
    parser.add_argument("--comfy-root", type=Path, default=None)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--timeout", type=float, default=TIMEOUT,
                        help="seconds per prompt; a prompt that runs longer is interrupted and recorded as timed out")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quality.md")
    parser.add_argument("--figures", default=str(REPO / "docs" / "images"), help="'' = no figures")
    parser.add_argument("--check-demo", action="store_true", help="only the demo check; exit 1 if it loses")
    parser.add_argument("--demo-workflow", help="default: the first workflows/*.json, as scripts/serve.sh")
    parser.add_argument("--demo-image", type=Path, help="also save the demo's restored image here")
    parser.add_argument("--rerender", metavar="JSON", nargs="+",
                        help="write --out again from runs' saved rows (<out>.json; several: merged, first wins)")
    parser.add_argument("--extra-header", nargs="*", default=[], help="paragraphs added to the header (--rerender)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of the ComfyUI server (OMP/MKL_NUM_THREADS; 0 = its default). On a "
                             "shared, overloaded CPU 1 wastes less time in thread synchronisation")
    args = parser.parse_args(argv)
    if args.threads:  # the server inherits the environment
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    # kill -TERM: unwind through `finally`, so the ComfyUI server we started stops too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from comfyui_inverse.runner import ComfyServer, find_comfy_root
    from comfyui_inverse.tests.host.comfy_client import HostComfy

    args.comfy_root = find_comfy_root(args.comfy_root)

    def log(msg):
        print(msg, flush=True)

    if args.check_demo:
        return 0 if check_demo(args, log)["beats_bicubic"] else 1
    if args.rerender:
        saved = [json.loads(Path(f).read_text()) for f in args.rerender]
        rows, presets = {}, {}
        for part in saved:  # later files add the rows (task, method, steps) the earlier ones lack
            presets.update(part["presets"])
            for key, part_rows in part["rows"].items():
                have = {(r["method"], str(r["steps"])) for r in rows.get(key, [])}
                rows.setdefault(key, []).extend(r for r in part_rows if (r["method"], str(r["steps"])) not in have)
        tasks = [t for t in all_tasks() if rows.get(t.key)]
        note = " ".join(part["note"] for part in saved if part["note"])
        write_report(args.out, saved[0]["header"] + args.extra_header, tasks, rows, presets, note)
        print("\n".join(summary_table(tasks, rows)))
        log(f"wrote {args.out}")
        return 0

    if args.quick:
        args.images, args.grid_tasks = 1, []
    crops, names, n_train = heldout_crops(args.images, args.seed)
    tasks = all_tasks()
    if args.noiseless_only:
        tasks = [t for t in tasks if not t.noisy]
    if args.tasks:
        unknown = set(args.tasks) - {t.key for t in tasks}
        if unknown:
            parser.error(f"--tasks: unknown {sorted(unknown)}; choose from {[t.key for t in all_tasks()]}")
        tasks = [t for t in tasks if t.key in args.tasks]
    args.first_task = tasks[0].key
    t_start = time.monotonic()
    deadline = t_start + 60 * args.max_minutes if args.max_minutes else None

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "?"
    with tempfile.TemporaryDirectory(prefix="quality-") as tmp:
        base = Path(tmp)
        info = prepare_models(base / "models", args.stand_in, args.python, args.comfy_root)
        args.flow = info["flow"]
        mlist = methods(args.flow, args)
        if args.methods:
            mlist = [m for m in mlist if any(m.name.startswith(p) for p in args.methods)]
        server = ComfyServer(comfy_root=args.comfy_root, base_dir=base, cpu=True, quiet=True,
                             extra_args=["--fp32-text-enc"], log_path=base / "comfyui.log")
        server.start()
        comfy = HostComfy(server)
        try:
            image_names = [comfy.upload_image(c, name=f"quality_{i:02d}.png") for i, c in enumerate(crops)]
            from PIL import Image

            for kind in ("box", "random"):
                mask = np.zeros((CROP, CROP, 3), np.uint8)
                mask[..., 0] = (make_mask(kind) * 255).astype(np.uint8)
                comfy.upload_image(Image.fromarray(mask), name=f"quality_mask_{kind}.png")
            cmdline = " ".join(argv if argv is not None else sys.argv[1:])
            header = [
                "# Restoration quality on the small learned prior (benchmarks/quality.py)", "",
                f"Run {started}, commit {commit}: `python benchmarks/quality.py {cmdline}`. ComfyUI server on the CPU "
                f"of a shared 2-core machine (load average {os.getloadavg()[1]:.0f} at the start; other jobs ran "
                "alongside): compare rows of one run, not absolute times.", "",
                f"**The prior: {LABEL.format(n=n_train)}.** {info['eps']}; {info['vae']}; {info['flow_desc']}. "
                "Every latent method is bounded by this VAE: a decoded latent is no better than the VAE's "
                "reconstruction of the true image (see the `VAE round trip` row).", "",
                f"Images: {len(crops)} held-out images of prior/split.json (never trained on), {CROP}² centre crops "
                f"(short side resized to {CROP}), seeded choice (seed {args.seed}): {', '.join(names)}. They run as "
                "one batch per prompt; y comes from the pack's operator node + Degrade Image (seed 1000), identical for "
                "every row of a task. Metrics: the pack's PSNR / SSIM / Measurement Consistency nodes on the decoded "
                "float output, mean over the images; s/image = the prompt's execution time on the server / batch size "
                "(loaders cached; the first model row of the run also pays one-time loading).", "",
                "Methods: classical = stock ImageScale of y (SR) and the Pseudo-Inverse node H⁺y. What users do today: "
                f"img2img = VAEEncode of the bicubic upscale (SR) or of H⁺y → KSampler euler/normal, cfg 1, {STOCK_STEPS} "
                f"steps, denoise 0.3 / 0.5; stock inpainting = SetLatentNoiseMask(VAEEncode(H⁺y), mask) → KSampler "
                f"denoise 1.0, {INPAINT_STEPS} steps, also with the known pixels pasted back (stock InvertMask + "
                "ImageCompositeMasked, as many inpainting workflows do). The pack (Inverse Solve node unless said otherwise): `preset auto` "
                "= the node as a user gets it (preset auto, vjp autograd, bridge auto; enforce_measurement off, so the "
                "row shows the solver alone); DDNM = sampler ddnm, 10 steps; ΠGDM = sampler pigdm, 10 steps, w 1 (its "
                f"standard weight r_t²); DPS = sampler dps, {DPS_STEPS} steps, step size ζ {DPS_ZETA:g}; C-ΠGFM = the flow "
                "model (eps UNet + flow LoRA + stock ModelSamplingSD3 shift 1); TReg = TReg Solve with data consistency "
                f"only, cfg 1, {args.treg_steps} ddim_uniform steps. Grid rows (`vjp=… bridge=…`) use preset custom "
                "with the analytic preset's w, λ, k, start and noisy map, no restart. `+ Enforce Measurement` = the "
                "pack's Enforce Measurement node on the row above's output (x ← x + H⁺(y − Hx) after decoding; with "
                "σ_y > 0 only down to the noise level); the solve node is cached, so its s/image is the solve's plus "
                "the node's. The VAE round trip (the bound) and the unconditional sample (sanity) run on the first "
                f"task only. A prompt running longer than {args.timeout:.0f} s is interrupted and shown as timed out.", "",
                "Grid (a representative subset of C-ΠGDM/C-ΠGFM × vjp × bridge × steps): on "
                f"{', '.join(args.grid_tasks) or 'no task'}: " + ("every cell at " + ", ".join(map(str, args.grid_steps))
                 + " steps" if args.full_grid else "the default column (autograd, latent_surrogate) at "
                 + ", ".join(map(str, args.grid_steps)) + " steps and each other vjp and bridge mode at the middle step "
                 "count") + ". ΠGDM, DPS and TReg run on the noiseless tasks and denoising"
                + (" and on the σ_y = 0.05 tasks." if args.baselines_noisy else " (not on the σ_y = 0.05 tasks: time).")
                + ("" if args.all_noisy_rows else " The σ_y = 0.05 tasks run classical, img2img 0.3, stock inpainting "
                   "and C-ΠGDM preset auto only (img2img 0.5, DDNM and C-ΠGFM on the noiseless tasks: time).")
                + "", "",
                "TReg's adaptive negation is not measured: the prior's cross-attention is inert (attn2.to_out = 0, "
                "prior/README.md), so the prompt, CFG and adaptive negation (which adapts the null-prompt embedding, "
                "seen only through cross-attention) cannot change its output at all, whatever CLIP vision model is "
                "connected.", "",
            ]
            presets = {t.key: presets_for(t) for t in tasks}
            rows_by_task = {t.key: [] for t in tasks}
            vae_rows = {}
            stopped = ""
            for stage in (1, 2, 3):
                for task in tasks:
                    for m in mlist:
                        if m.stage != stage or not m.applies(task):
                            continue
                        if deadline and time.monotonic() > deadline:
                            stopped = (f"_Stopped at the --max-minutes limit ({args.max_minutes} min): rows not shown "
                                       "did not run._")
                            break
                        rows_by_task[task.key].append(run_one(comfy, task, m, presets[task.key], image_names, args,
                                                                   log, rows_by_task[task.key]))
                        write_report(args.out, header, tasks, rows_by_task, presets, "_(run in progress)_")
                    if stage == 1 and args.figures and not task.noisy:
                        save_figure(Path(args.figures) / f"quality_{task.key}.jpg", task.title, crops,
                                    rows_by_task[task.key], n_train, info["eps_short"])
            minutes = (time.monotonic() - t_start) / 60
            stopped = (stopped + " " if stopped else "") + (
                f"_Run time {minutes:.0f} min; load average {os.getloadavg()[1]:.0f} at the end._")
            write_report(args.out, header, tasks, rows_by_task, presets, stopped)
            if args.figures:
                save_before_after(Path(args.figures) / "quality_before_after.jpg", tasks, rows_by_task, crops,
                                  n_train)
        finally:
            server.stop()
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
