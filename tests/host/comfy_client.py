"""Test-side handle on a running ComfyUI server: queue prompts, wait, fetch images and latents.

A thin layer over the pack's own runner (`comfyui_inverse.runner`: ComfyServer starts the
process, ComfyClient speaks HTTP) with the shapes tests want: numpy images, latents as arrays,
uploads from arrays, and the server log for assertions.
"""

from __future__ import annotations

import io
import os
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from comfyui_inverse.runner import ComfyClient, ComfyServer
from comfyui_inverse.runner.client import PromptExecutionError, PromptValidationError

__all__ = ["HostComfy", "PromptExecutionError", "PromptValidationError"]

DEFAULT_TIMEOUT = 180.0


class HostComfy:
    """A started ComfyServer plus helpers. Errors: queue() raises PromptValidationError
    (.node_errors) on HTTP 400; wait() raises PromptExecutionError (.exception_message,
    .node_type, .traceback) when a node failed, TimeoutError after `timeout` seconds."""

    def __init__(self, server: ComfyServer):
        self.server = server
        self.http: ComfyClient = server.client
        self.tiny_build = None  # a tiny_models.Job started with the server (conftest)

    # -- where things are --------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_dir(self) -> Path:
        return self.server.base_dir

    @property
    def models_dir(self) -> Path:
        return self.server.models_dir

    @property
    def input_dir(self) -> Path:
        return self.server.input_dir

    @property
    def output_dir(self) -> Path:
        return self.server.output_dir

    @property
    def log_path(self) -> Path:
        return self.server.log_path

    def log_text(self) -> str:
        return self.server.log_text()

    # -- prompts -----------------------------------------------------------------------------
    def object_info(self, node_class: str | None = None) -> dict:
        return self.http.object_info(node_class)

    def queue(self, prompt: dict) -> str:
        """Queue an API-format prompt; returns its prompt_id."""
        return self.http.queue_prompt(prompt)

    def wait(self, prompt_id: str, timeout: float = DEFAULT_TIMEOUT) -> dict:
        """Poll /history until the prompt finished; returns its history entry."""
        return self.http.wait(prompt_id, timeout=timeout)

    def run(self, prompt: dict, timeout: float = DEFAULT_TIMEOUT) -> dict:
        return self.wait(self.queue(prompt), timeout=timeout)

    def interrupt(self) -> None:
        self.http.interrupt()

    # -- results -----------------------------------------------------------------------------
    def files(self, history: dict, node_id: str, key: str = "images") -> list[dict]:
        outputs = (history.get("outputs") or {}).get(str(node_id))
        if outputs is None:
            raise KeyError(f"node {node_id} has no outputs in this history entry; nodes with "
                           f"outputs: {sorted((history.get('outputs') or {}).keys())}")
        return list(outputs.get(key) or [])

    def download(self, item: dict) -> bytes:
        return self.http.view(item["filename"], item.get("subfolder", ""), item.get("type", "output"))

    def pil_images(self, history: dict, node_id: str) -> list[Image.Image]:
        return [Image.open(io.BytesIO(self.download(item))) for item in self.files(history, node_id)]

    def images(self, history: dict, node_id: str) -> list[np.ndarray]:
        """The images a SaveImage/PreviewImage node produced, as float32 arrays [H, W, C] in
        [0, 1] (ComfyUI's IMAGE layout, without the batch axis)."""
        return [np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
                for img in self.pil_images(history, node_id)]

    def latents(self, history: dict, node_id: str) -> list[np.ndarray]:
        """The latents a SaveLatent node wrote, as float32 arrays [B, C, H, W]."""
        from safetensors.numpy import load

        return [load(self.download(item))["latent_tensor"].astype(np.float32)
                for item in self.files(history, node_id, key="latents")]

    @staticmethod
    def texts(history: dict, node_id: str) -> list[str]:
        """What a PreviewAny ("Preview as Text") node showed."""
        return list(((history.get("outputs") or {}).get(str(node_id)) or {}).get("text") or [])

    # -- inputs ------------------------------------------------------------------------------
    def upload_image(self, image, name: str | None = None) -> str:
        """Upload a file path, PIL image or array (H×W×C, uint8 or float in [0, 1]) to the
        server's input folder; returns the LoadImage `image` value."""
        if isinstance(image, (str, os.PathLike)):
            return self.http.upload_image(Path(image), name=name)
        if not isinstance(image, Image.Image):
            array = np.asarray(image)
            if array.dtype != np.uint8:
                array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
            image = Image.fromarray(array.squeeze())
        name = name or f"upload_{uuid.uuid4().hex[:8]}.png"
        staged = self.base_dir / "staged_uploads" / name
        staged.parent.mkdir(parents=True, exist_ok=True)
        image.save(staged)
        return self.http.upload_image(staged, name=name)
