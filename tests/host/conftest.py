"""Fixtures for tests against a real ComfyUI server.

comfy        (session) a started server (HostComfy, see comfy_client.py): `main.py --cpu` on a
             free port, a fresh --base-directory with this pack linked into its custom_nodes/,
             an in-memory database, fp32 text encoders (CPU fp16 matmuls are ~50x slower).
             Start-up fails loudly with the log tail, or if the pack failed to import.
tiny_models  (session) tiny random-weight models built into comfy.models_dir (tiny_models.py):
             {name: loader widget value}; `.stats` has bytes/seconds/params per model.
             ComfyUI re-lists a models folder when its mtime changes, so building after
             start-up is seen by the running server. Deleted at session end.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

# The helper modules beside this file, through the pack's name (no sys.path entry for tests/host).
from comfyui_inverse.runner import ComfyNotFoundError, ComfyServer, find_comfy_root
from comfyui_inverse.tests.host import tiny_models as tiny_models_module
from comfyui_inverse.tests.host.comfy_client import HostComfy

MODEL_FOLDERS = ("checkpoints", "vae", "vae_approx", "clip", "clip_vision", "diffusion_models",
                 "loras", "text_encoders")
STARTUP_TIMEOUT = float(os.environ.get("INVERSE_STARTUP_TIMEOUT", 300))  # s; a loaded 2-core box needs >120


def comfy_root_or_fail() -> Path:
    try:
        return find_comfy_root()
    except ComfyNotFoundError as error:
        pytest.fail(f"{error}\nHost tests need ComfyUI: run `bash scripts/setup.sh` (or "
                    "scripts/test.sh, which runs it), or set COMFYUI_PATH.", pytrace=False)


def frontend_args(base: Path) -> list[str]:
    """The real frontend when its package is installed, else a stub page (main.py exits when
    neither is there)."""
    if importlib.util.find_spec("comfyui_frontend_package") is not None:
        return []
    stub = base / "frontend_stub"
    stub.mkdir(exist_ok=True)
    (stub / "index.html").write_text("<!doctype html><title>ComfyUI (test stub)</title>\n")
    return ["--front-end-root", str(stub)]


@pytest.fixture(scope="session")
def comfy(request, tmp_path_factory):
    root = comfy_root_or_fail()
    base = tmp_path_factory.mktemp("comfy_base")
    for sub in ["custom_nodes", "input", "output"] + [f"models/{m}" for m in MODEL_FOLDERS]:
        (base / sub).mkdir(parents=True, exist_ok=True)
    # When the session will need the tiny models, build them while the server starts (two
    # mostly single-threaded start-ups on two cores).
    build = None
    if any("tiny_models" in getattr(item, "fixturenames", ()) for item in request.session.items):
        build = tiny_models_module.Job("build", base / "models", root)
    server = ComfyServer(
        comfy_root=root, base_dir=base, log_path=base / "comfyui.log", cpu=True,
        # latent2rgb previews: the stock per-step preview path runs (and is tested) in every sampler
        extra_args=["--fp32-text-enc", "--preview-method", "latent2rgb", *frontend_args(base)],
        startup_timeout=STARTUP_TIMEOUT, require_pack=True, quiet=True,
    )
    try:
        server.start()  # raises ComfyStartError with the log tail / the pack's import error
        host = HostComfy(server)
        host.tiny_build = build
        yield host
    finally:
        if build is not None:
            build.cancel()
        server.stop()


class TinyModels(dict):
    """{name: loader widget value} plus .stats {name: {"bytes", "seconds", "params"}}."""

    stats: dict


@pytest.fixture(scope="session")
def tiny_models(comfy):
    job = getattr(comfy, "tiny_build", None) or tiny_models_module.Job(
        "build", comfy.models_dir, comfy.server.comfy_root)
    models = TinyModels(job.result())
    models.stats = models.pop("_stats")
    try:
        yield models
    finally:  # ~2 GB: do not leave them in pytest's kept temp dirs
        for folder in MODEL_FOLDERS:
            shutil.rmtree(comfy.models_dir / folder, ignore_errors=True)
