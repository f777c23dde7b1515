"""The solver presets live in samplers/presets.py (pure torch, shared with the benchmarks)."""

from ..samplers.presets import PRESET_NAMES, TASKS, detect_task, preset

__all__ = ["PRESET_NAMES", "TASKS", "detect_task", "preset"]
