"""ComfyUI σ ↔ ᾱ ↔ VP-SDE t ↔ flow t conversions and the paper's grids."""

import numpy as np
import pytest
import torch

from comfyui_inverse.samplers import schedules as sch


SIGMAS = np.array([0.0, 1e-4, 0.0105, 0.03, 0.5, 1.0, 2.0, 14.6, 80.0])


def test_sigma_alpha_bar_round_trip():
    ab = sch.sigma_to_alpha_bar(SIGMAS)
    back = sch.alpha_bar_to_sigma(ab)
    # 1 − ᾱ cancels: σ from ᾱ carries a relative error ≈ eps/σ², so tolerance grows for tiny σ
    tol = 1e-12 * SIGMAS + 4 * np.finfo(float).eps / np.maximum(SIGMAS, 1e-300)
    assert np.all(np.abs(back - SIGMAS) <= tol)
    mu, svp = sch.sigma_to_vp(SIGMAS)
    np.testing.assert_allclose(mu**2, ab, rtol=1e-14)
    np.testing.assert_allclose(mu**2 + svp**2, 1.0, rtol=1e-14)  # VP: α² + σ² = 1
    np.testing.assert_allclose(svp / mu, SIGMAS, rtol=1e-14)  # VE scaling x = x_vp/μ


def test_sigma_vpsde_time_round_trip():
    t = sch.sigma_to_vp_time(SIGMAS)
    np.testing.assert_allclose(sch.vp_time_to_sigma(t), SIGMAS, rtol=1e-10, atol=1e-15)
    # ᾱ(t) from the VP-SDE equals ComfyUI's 1/(1+σ²) at the mapped time
    np.testing.assert_allclose(sch.vpsde_mu(t) ** 2, sch.sigma_to_alpha_bar(SIGMAS), rtol=1e-12)
    np.testing.assert_allclose(sch.vpsde_mu(t) ** 2 + sch.vpsde_sigma(t) ** 2, 1.0, rtol=1e-12)
    assert np.all(np.diff(t) > 0)


def test_paper_vp_grid_matches_spec_values():
    s = sch.vp_sigmas_uniform_t(5, dtype=torch.float64).numpy()
    t = sch.sigma_to_vp_time(s)
    np.testing.assert_allclose(t, np.linspace(0.4, 0.001, 6), atol=1e-12)
    mu, svp = sch.sigma_to_vp(s)
    # spec §1.1: at τ = 0.4, μ = 0.442 and σ = 0.897; at t = 0.001, σ = 0.0105
    assert abs(mu[0] - 0.442) < 5e-4 and abs(svp[0] - 0.897) < 5e-4 and abs(svp[-1] - 0.0105) < 5e-5
    assert s[-1] > 0  # the paper never reaches σ = 0


def test_flow_grid_and_time():
    s = sch.flow_sigmas_uniform_t(10, t_start=0.6, dtype=torch.float64).numpy()
    np.testing.assert_allclose(sch.sigma_to_flow_time(s), np.linspace(0.6, 1.0, 11), atol=1e-15)
    assert s[-1] == 0.0


@pytest.mark.parametrize("bad", [torch.tensor([1.0]), torch.tensor([1.0, 2.0]), torch.tensor([[1.0, 0.0]]),
                                 torch.tensor([1.0, -0.1]), torch.tensor([0.0, 0.0])])
def test_bad_sigmas_raise_value_error(bad):
    with pytest.raises(ValueError, match="sigmas"):
        sch.sigmas_to_list(bad, "vp")


def test_bad_sigmas_messages_name_the_fix_and_stay_short():
    flipped = torch.linspace(0.01, 14.6, 201)  # Flip Sigmas of a 200-step schedule
    with pytest.raises(ValueError, match="Flip Sigmas") as caught:
        sch.sigmas_to_list(flipped, "vp")
    assert len(str(caught.value)) < 300 and "(201 values)" in str(caught.value)
    with pytest.raises(ValueError, match="Split Sigmas"):
        sch.sigmas_to_list(torch.tensor([0.5]), "vp")
    with pytest.raises(ValueError, match="diffusion schedule .* Inverse Sigmas"):
        sch.sigmas_to_list(torch.tensor([14.6, 1.0, 0.0]), "flow")


def test_flow_sigmas_above_one_rejected():
    with pytest.raises(ValueError, match="flow"):
        sch.sigmas_to_list(torch.tensor([2.0, 0.0]), "flow")
    with pytest.raises(ValueError, match="steps"):
        sch.vp_sigmas_uniform_t(0)
