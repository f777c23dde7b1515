"""Pure-torch inverse-problem samplers (no ComfyUI import). See each module for the maths."""

from .analytic import GaussianMixturePrior, dense_matrix, gaussian_prior, mixture_prior
from .common import measurement_start
from .consistency import enforce_measurement, enforce_measurement_in_range
from .cpgdm import UnstableNoisyCorrection, cpgdm
from .cpgdm_noisy import wiener_start, wiener_y
from .cpgfm import cpgfm
from .ddim import ddim
from .ddnm import ddnm
from .dps import dps
from .pigdm import pigdm, pigfm
from .problem import OperatorProblem
from .restarts import TAU_RESTART, with_restarts
from .schedules import (
    flow_sigmas_uniform_t,
    sigma_to_alpha_bar,
    sigma_to_flow_time,
    sigma_to_vp,
    sigma_to_vp_time,
    vp_sigmas_uniform_t,
    vp_time_to_sigma,
)
from .tiling import TiledDenoiser, tiled
from .vjp import AutogradUnavailable, AutogradVJP, FiniteDifferenceVJP, NoJacobian, get_vjp

__all__ = [
    "AutogradUnavailable", "AutogradVJP", "FiniteDifferenceVJP", "GaussianMixturePrior", "NoJacobian",
    "OperatorProblem", "TAU_RESTART", "UnstableNoisyCorrection", "cpgdm", "cpgfm", "ddim", "ddnm", "dense_matrix", "dps", "enforce_measurement", "enforce_measurement_in_range", "flow_sigmas_uniform_t",
    "gaussian_prior", "get_vjp", "measurement_start", "mixture_prior", "pigdm", "pigfm",
    "sigma_to_alpha_bar", "sigma_to_flow_time", "sigma_to_vp", "sigma_to_vp_time", "TiledDenoiser", "tiled",
    "vp_sigmas_uniform_t", "vp_time_to_sigma", "with_restarts", "wiener_start", "wiener_y",
]
