"""Preset auto on latent models (samplers/latent_presets.py): the analytic preset plus the overrides measured
on the learned prior (benchmarks/results/quality.md)."""

from __future__ import annotations

import pytest
import torch

from comfyui_inverse import operators as ops
from comfyui_inverse.samplers.latent_presets import LATENT_FLOW, LATENT_VP, latent_preset, table_key
from comfyui_inverse.samplers.latent_problem import BRIDGE_MODES
from comfyui_inverse.samplers.presets import TASKS, preset

SHAPE = (1, 3, 64, 64)
OPERATORS = {
    "sr4": ops.SuperResolution(4), "sr8": ops.SuperResolution(8), "gaussian_deblur": ops.GaussianBlur(3.0),
    "motion_deblur": ops.MotionBlur(9.0, 45.0, seed=None), "denoise": ops.Denoise(), "colorize": ops.Colorization(),
    "inpaint": ops.Inpainting((torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()),
}


@pytest.mark.parametrize("kind", ["vp", "flow"])
@pytest.mark.parametrize("sigma_y", [0.0, 0.05])
@pytest.mark.parametrize("task", sorted(OPERATORS))
def test_latent_preset_is_the_analytic_preset_plus_the_measured_overrides(task, sigma_y, kind):
    op = OPERATORS[task]
    got = latent_preset("auto", kind, op, sigma_y, SHAPE)
    base = preset("auto", kind, op, sigma_y, SHAPE)
    overrides = (LATENT_VP if kind == "vp" else LATENT_FLOW).get(table_key(task, sigma_y), {})
    assert got["task"] == task
    for key, value in base.items():  # every analytic value the table does not override is kept
        assert got[key] == overrides.get(key, value)
    assert isinstance(got["enforce"], bool)
    assert got["bridge"] in ("auto",) + BRIDGE_MODES
    # what the solver accepts for this family: DDNM and DPS run on diffusion models only
    assert got["sampler"] in (("conjugate", "ddnm", "pigdm", "dps") if kind == "vp" else ("conjugate", "pigdm"))
    assert got["steps"] >= 1 and got["w"] >= 0 and got["k"] >= 0 and 0 < got["start"] <= 1


def test_latent_tables_name_only_known_tasks_and_keys():
    known = set(preset("auto", "vp", ops.SuperResolution(4), 0.0)) | {"enforce", "bridge"}
    for table in (LATENT_VP, LATENT_FLOW):
        assert {key.removesuffix("@noisy") for key in table} <= set(TASKS)
        for overrides in table.values():
            assert set(overrides) <= known - {"task"}


def test_latent_presets_are_the_quality_benchmarks_winners():
    """The choices recorded in benchmarks/results/quality.md (retrained prior): enforce everywhere it was measured;
    DDNM on SR ×4, Gaussian deblur and denoising, DPS on SR ×8, C-ΠGDM 10 steps on motion deblur and 5 steps
    without restart on inpainting; a rerun that changes them must change this test with the table."""
    def vp(task, sigma_y=0.0):
        return latent_preset("auto", "vp", OPERATORS[task], sigma_y, SHAPE)

    def pick(p):
        return p["sampler"], p["steps"], p["restarts"], p["enforce"]

    for task in ("sr4", "gaussian_deblur"):
        assert pick(vp(task)) == ("ddnm", 10, 0, True)
    assert pick(vp("denoise", 0.1)) == ("ddnm", 10, 0, True)
    assert pick(vp("sr8")) == ("dps", 10, 0, True) and vp("sr8")["w"] == 1.0
    assert pick(vp("motion_deblur")) == ("conjugate", 10, 0, True)
    assert pick(vp("inpaint")) == ("conjugate", 5, 0, True) and vp("inpaint")["bridge"] == "auto"
    for task in ("sr4", "sr8", "inpaint"):
        assert vp(task, 0.05)["enforce"] and vp(task, 0.05)["sampler"] == "conjugate"
    for task in ("gaussian_deblur", "motion_deblur"):  # noisy deblurring: DPS + enforce
        assert pick(vp(task, 0.05)) == ("dps", 10, 0, True)
    assert not vp("colorize")["enforce"]  # the latent solvers refuse colorization; nothing measured
    flow = latent_preset("auto", "flow", OPERATORS["inpaint"], 0.0, SHAPE)
    assert flow["sampler"] == "conjugate" and flow["enforce"] and flow["steps"] == 5
