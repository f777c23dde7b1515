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
  img2img     VAEEncode(bicubic for SR, else H⁺y) → KSampler euler, denoise 0.3 / 0.5, the C-ΠGDM
              preset's step count (what ComfyUI users do today)
  inpaint     stock inpainting: SetLatentNoiseMask(VAEEncode(H⁺y), mask) → KSampler denoise 1.0
  sanity      the VAE round trip of the true image (the bound of every latent method) and the prior's
              own unconditional sample, on the first task
  C-ΠGDM      Inverse Solve (C-ΠGDM), preset custom with the auto preset's w/λ/k/start/steps (vjp
              autograd, bridge latent_surrogate = the node's defaults); then the Enforce Measurement
              node on its output
  DDNM        Inverse Solve, sampler = ddnm, 10 steps
  C-ΠGFM      the flow model (eps UNet + flow LoRA + ModelSamplingSD3 shift 1), flow preset (only
              when prior/ holds the flow LoRA)
  TReg        TReg Solve, data consistency only (an_steps 0), cfg 1 (the prior ignores conditioning)
The run goes in stages so that an interrupted run (--max-minutes) still has every task's core rows:
1 = the rows above except TReg on every task, 2 = TReg, 3 = 5/10/20-step sweeps (+ consistent_target)
on the noiseless tasks, 4 = the vjp × bridge grid on --grid-tasks (default sr4) at --grid-steps (default 5).
ΠGDM and DPS are in samplers/ but not exposed as nodes, so they cannot run through the server.

    python benchmarks/quality.py                       # 4 images, all tasks, noiseless + σ_y 0.05
    python benchmarks/quality.py --images 8 --grid-tasks sr4 gdeblur --grid-steps 5 10 20
    python benchmarks/quality.py --tasks sr4 --quick   # smoke run: one image, core rows
    python benchmarks/quality.py --check-demo          # the headless demo beats bicubic on PSNR?

Without prior/inverse_prior_sd15_eps.safetensors (still training), the eps UNet is a stand-in taken
from the training state's partial checkpoint (~/.cache/comfyui-inverse/prior_train/eps.pt); the
output says so. Writes benchmarks/results/quality.md and docs/images/quality_<task>.png.
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
VJPS = ("autograd", "finite_difference", "none")
BRIDGES = ("latent_surrogate", "consistent_target", "pixel_bridge")
TREG_STEPS = 20
UNCOND_STEPS = 10
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

def _prior_data():
    import importlib.util

    spec = importlib.util.spec_from_file_location("prior_data", REPO / "scripts" / "prior_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def heldout_crops(n: int, seed: int) -> tuple[list[np.ndarray], list[str], int]:
    """n centre crops (CROP², short side resized to CROP) of held-out images, a seeded choice among
    the test side of prior/split.json (the pack's own sample photos excluded: skimage's astronaut is
    the same image). Returns (crops, names, train count)."""
    data = _prior_data()
    split = data.read_split()
    entries = [e for e in split["test"] if e["package"] != "comfyui-inverse"]
    chosen = sorted(random.Random(seed).sample(range(len(entries)), min(n, len(entries))))
    crops, names = [], []
    for i in chosen:
        img = data.load_rgb(entries[i], CROP)
        y, x = (img.shape[0] - CROP) // 2, (img.shape[1] - CROP) // 2
        crops.append(img[y:y + CROP, x:x + CROP])
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
        nodes["ks"] = ksampler(["ckpt", 0], ["enc", 0], p["vp"]["steps"], denoise, seed)
        nodes["dec"] = node("VAEDecode", samples=["ks", 0], vae=["ckpt", 2])
        return nodes, ["dec", 0]
    return build


def stock_inpaint(task, seed, p, n):
    nodes = {"pinv": node("InversePseudoInverse", measurement=["meas", 0]),
             "enc": node("VAEEncode", pixels=["pinv", 0], vae=["ckpt", 2]),
             "nm": node("SetLatentNoiseMask", samples=["enc", 0], mask=["mask", 0])}
    nodes["ks"] = ksampler(["ckpt", 0], ["nm", 0], p["vp"]["steps"], 1.0, seed)
    nodes["dec"] = node("VAEDecode", samples=["ks", 0], vae=["ckpt", 2])
    return nodes, ["dec", 0]


def unconditional(task, seed, p, n):
    nodes = {"empty": node("EmptyLatentImage", width=CROP, height=CROP, batch_size=n)}
    nodes["ks"] = ksampler(["ckpt", 0], ["empty", 0], UNCOND_STEPS, 1.0, seed)
    nodes["dec"] = node("VAEDecode", samples=["ks", 0], vae=["ckpt", 2])
    return nodes, ["dec", 0]


def vae_round_trip(task, seed, p, n):
    nodes = {"enc": node("VAEEncode", pixels=["gt", 0], vae=["ckpt", 2]),
             "dec": node("VAEDecode", samples=["enc", 0], vae=["ckpt", 2])}
    return nodes, ["dec", 0]


def solve(family, steps=None, vjp="autograd", bridge="latent_surrogate", sampler="conjugate", enforce="off"):
    """Inverse Solve (C-ΠGDM) with preset custom = the auto preset's values, at `steps` (None: the preset's)."""
    def build(task, seed, p, n):
        q = p[family]
        nodes = dict(FLOW_MODEL) if family == "flow" else {}
        model = ["flow", 0] if family == "flow" else ["ckpt", 0]
        nodes["solve"] = node("InverseSolveConjugate", model=model, vae=["ckpt", 2], positive=["pos", 0],
                              negative=["neg", 0], measurement=["meas", 0], preset="custom",
                              steps=steps or q["steps"], cfg=1.0, w=q["w"], lam=q["lam"], start=q["start"], seed=seed,
                              vjp=vjp, bridge_mode=bridge, sampler=sampler, k=q["k"], enforce_measurement=enforce)
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
    sr = lambda t: bool(t.sr_factor)  # noqa: E731
    inp = lambda t: t.mask is not None  # noqa: E731
    clean = lambda t: not t.noisy  # noqa: E731
    first = lambda t: t.key == args.first_task  # noqa: E731
    out = [
        Method("bicubic (ImageScale)", "classical", classical("bicubic"), applies=sr, in_figure=True),
        Method("Lanczos (ImageScale)", "classical", classical("lanczos"), applies=sr),
        Method("H⁺y (Pseudo-Inverse)", "classical", classical("pinv"), in_figure=True),
        Method("img2img denoise 0.3", "stock", img2img(0.3), "preset's"),
        Method("img2img denoise 0.5", "stock", img2img(0.5), "preset's", in_figure=True),
        Method("SetLatentNoiseMask + KSampler", "stock", stock_inpaint, "preset's", applies=inp, in_figure=True),
        Method("VAE round trip of the true image (bound)", "sanity", vae_round_trip, applies=first),
        Method("unconditional sample", "sanity", unconditional, UNCOND_STEPS, applies=first),
        Method("C-ΠGDM", "pack", solve("vp"), "preset's", in_figure=True),
        # right after the C-ΠGDM row: its solve node is cached, so this prompt only runs the Enforce Measurement
        # node; its s/image adds the C-ΠGDM row's (same result as the solve node's enforce_measurement = on)
        Method("C-ΠGDM + Enforce Measurement", "pack", enforced(solve("vp")), "preset's", in_figure=True,
               adds_time_of="C-ΠGDM"),
        Method("DDNM", "pack", solve("vp", 10, vjp="none", sampler="ddnm"), 10, in_figure=True),
    ]
    if flow:
        out.append(Method("C-ΠGFM", "pack", solve("flow"), "preset's", in_figure=True))
    # TReg costs ~3 C-ΠGDM runs here: its own stage, after every task's core rows
    out.append(Method("TReg (data consistency, cfg 1, no AN)", "pack", treg(args.treg_steps), args.treg_steps, stage=2))
    for s in args.steps:  # stage 2: step sweep of the default column
        out.append(Method("C-ΠGDM", "pack", solve("vp", s), s, applies=clean, stage=3))
        if s == 5:
            out.append(Method("C-ΠGDM bridge=consistent_target", "pack", solve("vp", bridge="consistent_target"),
                              "preset's", applies=clean, stage=3))
        if s != 10:
            out.append(Method("DDNM", "pack", solve("vp", s, vjp="none", sampler="ddnm"), s, applies=clean, stage=3))
        if flow:
            out.append(Method("C-ΠGFM", "pack", solve("flow", s), s, applies=clean, stage=3))
    grid_task = lambda t: t.key in args.grid_tasks  # noqa: E731
    for family in (("vp", "flow") if flow else ("vp",)):
        name = "C-ΠGDM" if family == "vp" else "C-ΠGFM"
        for vjp in VJPS:
            for bridge in BRIDGES:
                if vjp == "autograd" and bridge == "latent_surrogate":
                    continue  # the default column
                for s in args.grid_steps:
                    out.append(Method(f"{name} vjp={vjp} bridge={bridge}", "grid", solve(family, s, vjp, bridge),
                                      s, applies=grid_task, stage=4))
    return out


def presets_for(task: Task) -> dict:
    """The all-in-one node's auto preset for this task (samplers/presets.py, same operator)."""
    from comfyui_inverse.samplers.presets import preset

    op = task.operator()
    shape = (1, 3, CROP, CROP)
    return {"vp": preset("auto", "vp", op, task.sigma_y, shape), "flow": preset("auto", "flow", op, task.sigma_y, shape)}


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
            raise TimeoutError(f"prompt did not finish within {timeout:.0f} s (interrupted)")
        try:
            return comfy.wait(prompt_id, timeout=left)
        except PromptExecutionError:
            raise
        except (TimeoutError, OSError):  # a request timed out (socket), not the prompt
            time.sleep(2.0)


def run_one(comfy, task, method, p, image_names, args, log, done=()) -> dict:
    """One prompt: the method on the batch of images. s/image = execution time / batch size."""
    save = method.in_figure and not task.noisy and args.figures
    prompt = prompt_for(task, image_names, method, p, args.flow, bool(save))
    n = len(image_names)
    steps = method.steps if method.steps != "preset's" else f"{p['vp']['steps'] if 'ΠGFM' not in method.name else p['flow']['steps']} (preset)"
    row = {"task": task.key, "title": task.title, "method": method.name, "group": method.group, "steps": steps,
           "stage": method.stage, "n": n}
    try:
        h = run_prompt(comfy, prompt, args.timeout)
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

def table(rows: list[dict], task_title: str, p: dict) -> list[str]:
    q, f = p["vp"], p["flow"]
    lines = [f"### {task_title}", "",
             f"Auto preset: C-ΠGDM {q['steps']} steps, w {q['w']:g}, λ {q['lam']:g}, k {q['k']:g}, start {q['start']:.3g}; "
             f"C-ΠGFM {f['steps']} steps, w {f['w']:g}, B {f['lam']:g}, k {f['k']:g}, σ0 {f['start']:g}.", "",
             "| method | steps | PSNR dB | SSIM | ‖Hx−y‖/‖y‖ | s/image | images |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "failed" in r:
            lines.append(f"| {r['method']} | {r['steps']} | failed: {r['failed'][:200]} | | | | 0 |")
            continue
        lines.append(f"| {r['method']} | {r['steps']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['cons']:.4f} | "
                     f"{r['sec']:.2f} | {r['n']} |")
    return lines + [""]


def headline(rows: list[dict]) -> str:
    """Best pack method vs the best classical vs the best img2img, on PSNR and ‖Hx−y‖/‖y‖ (same images)."""
    ok = [r for r in rows if "failed" not in r]
    picks = (("best pack method", [r for r in ok if r["group"] in ("pack", "grid")]),
             ("best classical", [r for r in ok if r["group"] == "classical"]),
             ("best img2img", [r for r in ok if r["method"].startswith("img2img")]))
    parts = []
    for label, group in picks:
        r = max(group, key=lambda r: r["psnr"], default=None)
        if r:
            at = f" @ {r['steps']}" if r["steps"] != "" else ""
            parts.append(f"{label}: {r['method']}{at} = {r['psnr']:.2f} dB, ‖Hx−y‖/‖y‖ {r['cons']:.4f}")
    return "; ".join(parts)


def write_report(path: Path, header: list[str], tasks, rows_by_task: dict, presets: dict, note: str):
    lines = list(header)
    done = [t for t in tasks if rows_by_task.get(t.key)]
    lines += ["## Headline per task (mean over the images; the same images and y for every row)", ""]
    lines += [f"- **{t.title}** — {headline(rows_by_task[t.key])}" for t in done] + [""]
    for t in done:
        lines += table(rows_by_task[t.key], t.title, presets[t.key])
    if note:
        lines += ["", note]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _font(size: int):
    """A font with Π, ⁺, × (DejaVu Sans where installed; else Pillow's default)."""
    from PIL import ImageFont

    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(path, size)
        except OSError:
            continue
    return ImageFont.load_default()


def save_figure(path: Path, task_title: str, gts, rows: list[dict], n_train: int, prior_desc: str):
    """Rows = images, columns = ground truth, measured y, then the methods that saved images."""
    from PIL import Image, ImageDraw

    cols = [r for r in rows if r.get("images")]
    if not cols:
        return
    n = min(len(gts), len(cols[0]["images"]))
    def label(r):
        steps = str(r["steps"]).replace(" (preset)", "")
        return r["method"].split(" (")[0] + (f", {steps} steps" if steps else "")

    labels = ["ground truth", "measured y"] + [label(r) for r in cols]
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
            arr = np.asarray(tile)
            if arr.dtype != np.uint8:
                arr = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
            img = Image.fromarray(arr.squeeze()).convert("RGB")
            if img.size != (cell, cell):
                img = img.resize((cell, cell), Image.NEAREST)
            canvas.paste(img, (pad + c * (cell + pad), y))
    draw.text((pad, height - foot + 3), f"{task_title}. {LABEL.format(n=n_train)}.", fill="black", font=font)
    draw.text((pad, height - foot + 16), prior_desc[:width // 6], fill="black", font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


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
        if not restored or not measured:
            raise RuntimeError(f"the demo wrote {[f.name for f in files]}: expected a restored and a measured image")
        api = json.loads((REPO / "workflows" / "api" / workflow.name).read_text())
        gt_name = next(v["inputs"]["image"] for v in api.values() if v["class_type"] == "LoadImage")
        gt = Image.open(base / "input" / gt_name).convert("RGB")
        rest = Image.open(restored[0]).convert("RGB")
        bic = Image.open(measured[0]).convert("RGB").resize(gt.size, Image.BICUBIC)

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
    parser.add_argument("--images", type=int, default=4, help="held-out images (seeded choice)")
    parser.add_argument("--seed", type=int, default=12, help="seed of the image choice")
    parser.add_argument("--tasks", nargs="+", help="task keys (e.g. sr4 gdeblur inpaint_box@0.05); default: all")
    parser.add_argument("--noiseless-only", action="store_true")
    parser.add_argument("--steps", type=int, nargs="*", default=list(STEPS),
                        help="step sweep of C-ΠGDM / DDNM / C-ΠGFM on the noiseless tasks (stage 2)")
    parser.add_argument("--grid-tasks", nargs="*", default=["sr4"], help="tasks of the vjp × bridge grid (stage 3)")
    parser.add_argument("--grid-steps", type=int, nargs="*", default=[5])
    parser.add_argument("--treg-steps", type=int, default=TREG_STEPS)
    parser.add_argument("--max-minutes", type=float, default=0, help="start no prompt after this (0 = no limit)")
    parser.add_argument("--quick", action="store_true", help="one image, core methods only: a smoke run")
    parser.add_argument("--methods", nargs="+", help="only methods whose name starts with one of these")
    parser.add_argument("--stand-in", metavar="EPS_PT", help="use this training checkpoint (eps.pt) as the eps UNet "
                        "even if the committed file exists")
    parser.add_argument("--comfy-root", type=Path, default=None)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--timeout", type=float, default=1800.0, help="per prompt")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "quality.md")
    parser.add_argument("--figures", type=Path, default=REPO / "docs" / "images", help="'' = no figures")
    parser.add_argument("--check-demo", action="store_true", help="only the demo check; exit 1 if it loses")
    parser.add_argument("--demo-workflow", help="default: the first workflows/*.json, as scripts/serve.sh")
    parser.add_argument("--demo-image", type=Path, help="also save the demo's restored image here")
    args = parser.parse_args(argv)
    # kill -TERM: unwind through `finally`, so the ComfyUI server we started stops too
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from comfyui_inverse.runner import ComfyServer, find_comfy_root
    from comfyui_inverse.tests.host.comfy_client import HostComfy

    args.comfy_root = find_comfy_root(args.comfy_root)

    def log(msg):
        print(msg, flush=True)

    if args.check_demo:
        return 0 if check_demo(args, log)["beats_bicubic"] else 1

    if args.quick:
        args.images, args.steps, args.grid_tasks = 1, [], []
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
    deadline = time.monotonic() + 60 * args.max_minutes if args.max_minutes else None

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
                "of a shared 2-core machine (load average ~18 during the run): compare rows of one run, not absolute "
                "times.", "",
                f"**The prior: {LABEL.format(n=n_train)}.** {info['eps']}; {info['vae']}; {info['flow_desc']}. "
                "Every latent method is bounded by this VAE: a decoded latent is no better than the VAE's "
                "reconstruction of the true image (see the `VAE round trip` row).", "",
                f"Images: {len(crops)} held-out images of prior/split.json (never trained on), {CROP}² centre crops "
                f"(short side resized to {CROP}), seeded choice (seed {args.seed}): {', '.join(names)}. They run as "
                "one batch per prompt; y comes from the pack's operator node + Degrade Image (seed 1000), identical for "
                "every row of a task. Metrics: the pack's PSNR / SSIM / Measurement Consistency nodes on the decoded "
                "float output, mean over the images; s/image = the prompt's execution time on the server / batch size "
                "(loaders cached; the first model row of the run also pays one-time loading).", "",
                "Methods: classical = stock ImageScale of y (SR) and the Pseudo-Inverse node; img2img = VAEEncode of "
                "the bicubic upscale (SR) or H⁺y → KSampler euler/normal, cfg 1, the C-ΠGDM preset's step count; stock "
                "inpainting = SetLatentNoiseMask(VAEEncode(H⁺y), mask) → KSampler denoise 1.0; C-ΠGDM / C-ΠGFM / DDNM = "
                "Inverse Solve (preset custom with the auto preset's w, λ, k, start; vjp autograd, bridge "
                "latent_surrogate unless the row says otherwise); `+ Enforce Measurement` = the pack's Enforce Measurement "
                "node on that C-ΠGDM output (x ← x + H⁺(y − Hx) after decoding; its s/image includes the solve). "
                "The VAE round trip (the bound) and the unconditional sample (sanity) run on the first task only.", "",
                "Left out / limits: ΠGDM and DPS exist in samplers/ but no node exposes them, so they cannot run "
                f"through the server. TReg runs with data consistency only, cfg 1, {args.treg_steps} ddim_uniform "
                "steps: the prior's cross-attention is inert (attn2.to_out = 0, prior/README.md), so the prompt, CFG "
                "and adaptive negation (which adapts the null-prompt embedding, seen only through cross-attention) "
                "cannot change its output at all, whatever CLIP vision model is connected. Step sweep rows "
                f"({', '.join(map(str, args.steps)) or 'none'}) run on the noiseless tasks; the vjp × bridge grid at "
                f"{', '.join(map(str, args.grid_steps))} steps on {', '.join(args.grid_tasks) or 'no task'}.", "",
            ]
            presets = {t.key: presets_for(t) for t in tasks}
            rows_by_task = {t.key: [] for t in tasks}
            vae_rows = {}
            stopped = ""
            for stage in (1, 2, 3, 4):
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
                        save_figure(Path(args.figures) / f"quality_{task.key}.png", task.title, crops,
                                    rows_by_task[task.key], n_train, info["eps_short"])
            write_report(args.out, header, tasks, rows_by_task, presets, stopped)
        finally:
            server.stop()
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
