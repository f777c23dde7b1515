"""Headless runner: start or reach a ComfyUI server over HTTP, convert UI workflows, run them.

Pure Python + HTTP: nothing here imports comfy or torch, so it works from any Python that can
reach the server (the server itself runs with the ComfyUI venv's Python).
"""

from .client import ComfyClient, ComfyError, PromptValidationError, PromptExecutionError
from .comfy_root import find_comfy_root, ComfyNotFoundError
from .workflow_api import ui_to_api, is_ui_workflow, WorkflowConversionError
from .server import ComfyServer, prepare_base_dir

__all__ = [
    "ComfyClient",
    "ComfyError",
    "PromptValidationError",
    "PromptExecutionError",
    "find_comfy_root",
    "ComfyNotFoundError",
    "ui_to_api",
    "is_ui_workflow",
    "WorkflowConversionError",
    "ComfyServer",
    "prepare_base_dir",
]
