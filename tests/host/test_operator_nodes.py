"""Operator and measurement nodes through the real server: stock LoadImage → our nodes → stock
SaveImage, on a real photo from scikit-image."""

import numpy as np
import pytest
from skimage import data

pytestmark = pytest.mark.host

H, W = 64, 96  # a crop of the astronaut photo; divisible by the SR factor 4


@pytest.fixture(scope="module")
def photo_name(comfy):
    return comfy.upload_image(data.astronaut()[100:100 + H, 150:150 + W], name="astronaut_crop.png")


def degrade_prompt(photo_name, operator: dict, sigma_y=0.0, seed=0) -> dict:
    return {
        "1": {"class_type": "LoadImage", "inputs": {"image": photo_name}},
        "2": operator,
        "3": {"class_type": "InverseDegradeImage",
              "inputs": {"image": ["1", 0], "operator": ["2", 0], "sigma_y": sigma_y, "seed": seed}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 1], "filename_prefix": "measured"}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["3", 2], "filename_prefix": "pinv"}},
        "6": {"class_type": "InversePSNR", "inputs": {"image": ["3", 2], "reference": ["1", 0]}},
    }


SR4 = {"class_type": "InverseSuperResolution", "inputs": {"factor": 4, "kernel": "bicubic"}}


def test_super_resolution_measurement_and_pseudo_inverse(comfy, photo_name):
    history = comfy.run(degrade_prompt(photo_name, SR4))
    (measured,) = comfy.images(history, "4")
    (pinv,) = comfy.images(history, "5")
    assert measured.shape == (H // 4, W // 4, 3)  # the low-resolution image at its own size
    assert pinv.shape == (H, W, 3)
    original = data.astronaut()[100:100 + H, 150:150 + W] / 255.0
    # H⁺y of a ×4 bicubic measurement is a blurry but faithful upscale: well above noise level
    # (~10 dB) and below a perfect reconstruction.
    psnr = 10 * np.log10(1.0 / np.mean((pinv - original) ** 2))
    assert 18.0 < psnr < 40.0
    summary = history["outputs"]["6"]["text"][0]
    assert summary.startswith("PSNR:")
    assert float(summary.split()[1]) == pytest.approx(psnr, abs=0.3)  # PNG rounding


def test_same_seed_same_noisy_measurement(comfy, photo_name):
    first = comfy.images(comfy.run(degrade_prompt(photo_name, SR4, sigma_y=0.05, seed=7)), "4")[0]
    again = comfy.images(comfy.run(degrade_prompt(photo_name, SR4, sigma_y=0.05, seed=7)), "4")[0]
    other = comfy.images(comfy.run(degrade_prompt(photo_name, SR4, sigma_y=0.05, seed=8)), "4")[0]
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


@pytest.mark.parametrize("operator", [
    {"class_type": "InverseGaussianBlur", "inputs": {"sigma": 2.0, "kernel_size": 0, "threshold": 0.03, "boundary": "zero"}},
    {"class_type": "InverseMotionBlur", "inputs": {"length": 7.0, "angle": 30.0, "trajectory_seed": -1, "threshold": 0.03}},
    {"class_type": "InverseDenoise", "inputs": {}},
    {"class_type": "InverseColorization", "inputs": {}},
], ids=lambda op: op["class_type"])
def test_full_size_operators(comfy, photo_name, operator):
    history = comfy.run(degrade_prompt(photo_name, operator))
    assert comfy.images(history, "4")[0].shape == (H, W, 3)
    assert comfy.images(history, "5")[0].shape == (H, W, 3)


def test_inpainting_from_a_mask_and_own_photo(comfy, photo_name):
    """A user's photo with a mask: Measurement From Image keeps the known pixels, H⁺y zero-fills."""
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": photo_name}},
        "2": {"class_type": "SolidMask", "inputs": {"value": 0.0, "width": W, "height": H}},
        "3": {"class_type": "SolidMask", "inputs": {"value": 1.0, "width": 16, "height": 16}},
        "4": {"class_type": "MaskComposite", "inputs": {"destination": ["2", 0], "source": ["3", 0], "x": 8, "y": 8, "operation": "add"}},
        "5": {"class_type": "InverseInpainting", "inputs": {"mask": ["4", 0], "threshold": 0.5, "dilate": 0, "resize_mask_to_image": False}},
        "6": {"class_type": "InverseMeasurementFromImage", "inputs": {"image": ["1", 0], "operator": ["5", 0], "sigma_y": 0.0}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 1], "filename_prefix": "inpaint_pinv"}},
        "8": {"class_type": "InverseMeasurementConsistency", "inputs": {"image": ["1", 0], "measurement": ["6", 0]}},
    }
    history = comfy.run(prompt)
    (pinv,) = comfy.images(history, "7")
    assert pinv.shape == (H, W, 3)
    assert pinv[8:24, 8:24].max() == 0.0  # the hole is zero-filled
    assert pinv[30:, 30:].max() > 0.0
    assert history["outputs"]["8"]["text"][0].startswith("‖Hx − y‖/‖y‖: 0")


def test_size_not_divisible_by_factor_is_a_clear_error(comfy, photo_name):
    prompt = degrade_prompt(photo_name, {"class_type": "InverseSuperResolution", "inputs": {"factor": 5, "kernel": "box"}})
    with pytest.raises(Exception) as error:
        comfy.run(prompt)
    message = str(error.value)
    assert "divisible by 5" in message and "crop or resize" in message
    # the server keeps serving
    assert comfy.images(comfy.run(degrade_prompt(photo_name, SR4)), "5")[0].shape == (H, W, 3)
