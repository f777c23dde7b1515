"""Before/after image pairs for the README, made by the headless runner from the example workflows.

    python scripts/make_doc_images.py --server URL --tiny-models MAP.json [--size 128]

Each workflow in workflows/ runs through `python -m comfyui_inverse run` (the README's command)
against a server whose models folder holds stand-in model files; MAP.json maps the workflows'
model names to them ({"v1-5-pruned-emaonly.safetensors": "tiny_sd15.safetensors", ...}).
Here they are the tests' tiny RANDOM-WEIGHT models, so the "after" pictures show that the
graphs run end to end, not restoration quality; the images are labelled as such.
Writes docs/images/<workflow name as snake_case>.png (before | after, < 100 KB).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = REPO / "workflows"
OUT = REPO / "docs" / "images"
LOADER_INPUTS = {"CheckpointLoaderSimple": "ckpt_name", "UNETLoader": "unet_name", "CLIPLoader": "clip_name",
                 "VAELoader": "vae_name", "CLIPVisionLoader": "clip_name", "LoraLoader": "lora_name"}
SIZE_NODES = ("EmptyLatentImage", "EmptySD3LatentImage", "ImageScale")
STEP_NODES = {"BasicScheduler": 6, "InverseTRegSolve": 6}  # TReg's 100–200 steps: minutes on CPU


def run_workflow(path: Path, server: str, models: dict, size: int, inputs: Path, out: Path) -> list[Path]:
    workflow = json.loads(path.read_text())
    args = [sys.executable, "-m", "comfyui_inverse", "run", str(path), "--server", server, "--out", str(out),
            "--quiet"]
    for node in workflow["nodes"]:
        kind, title = node["type"], node.get("title") or node["type"]
        if kind in LOADER_INPUTS:
            name = node["widgets_values"][0]
            args += ["--set", f"{node['id']}.{LOADER_INPUTS[kind]}={models[name]}"]
        if kind in SIZE_NODES:
            args += ["--set", f"{node['id']}.width={size}", "--set", f"{node['id']}.height={size}"]
        if kind in STEP_NODES:
            args += ["--set", f"{node['id']}.steps={STEP_NODES[kind]}"]
        if kind == "LoadImage":
            args += ["--image", f"{node['id']}={inputs / node['widgets_values'][0]}"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{path.name}: runner failed:\n{proc.stderr[-3000:]}")
    return [Path(line) for line in proc.stdout.splitlines() if line.strip()]


def doc_image_name(stem: str) -> str:
    """'03 Upscale x4, step by step' -> '03_upscale_x4_step_by_step' (no spaces in Markdown links)."""
    return re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_")


def pair_image(name: str, before: Path, after: Path, size: int, target: Path) -> None:
    from PIL import Image, ImageDraw

    panel = 2 * size
    left = Image.open(before).convert("RGB").resize((panel, panel), Image.Resampling.NEAREST)
    right = Image.open(after).convert("RGB").resize((panel, panel), Image.Resampling.NEAREST)
    canvas = Image.new("RGB", (2 * panel + 30, panel + 74), "white")
    canvas.paste(left, (10, 30))
    canvas.paste(right, (panel + 20, 30))
    draw = ImageDraw.Draw(canvas)
    draw.text((10, 6), f"{name}", fill="black", font_size=15)
    draw.text((10, panel + 36), "before: the measurement", fill="black", font_size=13)
    draw.text((panel + 20, panel + 36), "after: restored by the workflow", fill="black", font_size=13)
    draw.text((10, panel + 54), "TINY RANDOM-WEIGHT TEST MODEL: shows the graph runs, not restoration quality",
              fill="#b00", font_size=12)
    canvas.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(target, optimize=True)


def main(argv=None) -> int:
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", required=True)
    parser.add_argument("--tiny-models", required=True, help="JSON map: workflow model name -> file on the server")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args(argv)
    models = json.loads(Path(args.tiny_models).read_text())
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = Path(tmp) / "inputs"
        inputs.mkdir()
        for sample in (WORKFLOWS / "inputs").glob("inverse_*"):
            side = args.size // 4 if "_128" in sample.name else args.size
            with Image.open(sample) as image:
                image.resize((side, side), Image.Resampling.LANCZOS).save(inputs / sample.name)
        for path in sorted(WORKFLOWS.glob("*.json")):
            if args.only and not any(path.stem.startswith(p) for p in args.only):
                continue
            written = run_workflow(path, args.server, models, args.size, inputs, Path(tmp) / path.stem)
            restored = [p for p in written if "_measured_" not in p.name]
            measured = [p for p in written if "_measured_" in p.name]
            before = measured[0] if measured else inputs / "inverse_astronaut_128.png"
            target = OUT / f"{doc_image_name(path.stem)}.png"
            pair_image(path.stem, before, restored[0], args.size, target)
            print(f"{target.relative_to(REPO)}: {target.stat().st_size // 1024} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
