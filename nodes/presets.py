"""The solver presets live in samplers/presets.py and, for latent models (what the node runs on),
samplers/latent_presets.py (pure torch, shared with the benchmarks)."""

from ..samplers.latent_presets import latent_preset
from ..samplers.presets import PRESET_NAMES, TASKS, detect_task, preset

__all__ = ["PRESET_NAMES", "TASKS", "detect_task", "latent_preset", "preset"]
