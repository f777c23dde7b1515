"""Dynamic VRAM (ComfyUI ≥ 0.16 on NVIDIA): the pack leaves the loader's weights alone and every
gradient path still runs or says which setting to change. Checked in a --cpu ComfyUI process with
the tiny SD1.5 checkpoint (dynamic_vram_probe.py says what is real and what is told to the pack)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.host

PROBE = Path(__file__).resolve().parent / "dynamic_vram_probe.py"


@pytest.fixture(scope="module")
def facts(comfy, tiny_models):
    checkpoint = comfy.models_dir / "checkpoints" / tiny_models["sd15_ckpt"]
    done = subprocess.run([sys.executable, str(PROBE), "--comfy", str(comfy.server.comfy_root),
                           "--checkpoint", str(checkpoint)], capture_output=True, text=True, timeout=1200,
                          stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"probe failed:\n{done.stdout[-2000:]}\n{done.stderr[-6000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_dynamic_weights_are_never_replaced(facts):
    # make_differentiable would swap every Parameter for a copy (and drop the loader's dtype tags).
    assert facts["unet_untouched"] and facts["vae_untouched"] and facts["vae_untouched_after_grad"]


def test_unet_jacobian_falls_back_to_finite_differences_and_says_why(facts):
    for bridge in ("latent_surrogate", "pixel_bridge"):
        run = facts["conjugate"][bridge]
        assert run.get("finite") and run["std"] > 1e-3, run
        assert any("finite-difference" in line and "--disable-dynamic-vram" in line for line in run["log"]), run


def test_consistent_target_uses_the_hosts_non_dynamic_copy_or_names_the_setting(facts):
    run = facts["conjugate"]["consistent_target"]
    if facts["host_has_delegate"]:
        assert run.get("finite") and run["std"] > 1e-3, run
        assert facts["bridge_error"] is None
        assert facts["bridge_uses_other_model"] and facts["decoder_grad_finite_nonzero"]
        assert facts["delegate_decodes_like_vae"] < 1e-5  # same weights, loaded again from the file
    else:  # a host with no way to reload the VAE
        assert "--disable-dynamic-vram" in run["error"] and "bridge_mode latent_surrogate" in run["error"], run


def test_treg_dps_names_the_setting_and_runs_on_a_plain_host(facts):
    message = facts["treg_dps_error"]
    assert message and "use_dps" in message and "--disable-dynamic-vram" in message
    plain = facts["treg_dps_plain_host"]
    assert plain["finite"] and plain["std"] > 1e-3, plain


def test_memory_check_uses_the_patchers_free_memory(facts):
    assert facts["refused_with_patcher_figure"] and "64×64" in facts["refused_with_patcher_figure"]
    assert facts["accepted_with_patcher_figure"]
