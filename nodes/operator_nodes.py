"""Nodes that build degradation operators and measurements (category inverse/operators)."""

from __future__ import annotations

import logging
import math

import torch
from comfy_api.latest import io, ui

from .. import operators as ops
from .convert import bchw_to_image, check_finite, image_to_bchw
from .limits import check_pseudo_inverse_memory
from .schema_extras import search_aliases
from .types import Measurement, MeasurementType, OperatorType

CATEGORY = "inverse/operators"
log = logging.getLogger("comfyui-inverse")


def _operator_node(node_id: str, display_name: str, description: str, inputs: list, aliases=()) -> io.Schema:
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category=CATEGORY,
        description=description,
        inputs=inputs,
        outputs=[OperatorType.Output(display_name="operator")],
        **search_aliases(*aliases),
    )


class SuperResolutionOperator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _operator_node(
            "InverseSuperResolution",
            "Super-Resolution / Upscale Operator",
            "Upscale: the measurement is the low-resolution image, the result is `factor` times larger in width and "
            "height (the operator downsamples by an integer factor).",
            [
                io.Int.Input("factor", default=4, min=2, max=32,
                             tooltip="Upscale factor s (×s per side). With Degrade Image the clean image's sides must be "
                                     "divisible by s; with Measurement From Image any photo size works."),
                io.Combo.Input("kernel", options=["bicubic", "box"], default="bicubic",
                               tooltip="bicubic: antialiased bicubic (Keys a=-0.5), like most image resizers. box: average pooling."),
            ],
            aliases=("upscale", "upscaler", "super resolution", "enlarge", "increase resolution", "SR"),
        )

    @classmethod
    def execute(cls, factor: int, kernel: str) -> io.NodeOutput:
        return io.NodeOutput(ops.SuperResolution(factor, kernel=kernel))


class InpaintingOperator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _operator_node(
            "InverseInpainting",
            "Inpainting Operator",
            "Keeps the pixels outside the mask; the masked pixels (mask = 1, as drawn in the mask editor) are unknown.",
            [
                io.Mask.Input("mask", tooltip="1 = missing pixel (ComfyUI mask convention). Must match the image size unless resize is on."),
                io.Float.Input("threshold", default=0.5, min=0.0, max=1.0, step=0.01, tooltip="Soft masks are binarized: values above this are missing."),
                io.Int.Input("dilate", default=0, min=0, max=64, tooltip="Grow the missing region by this many pixels (hides seams)."),
                io.Boolean.Input("resize_mask_to_image", default=False,
                                 tooltip="Resize the mask to the size of `image` instead of reporting a size mismatch."),
                io.Image.Input("image", optional=True, tooltip="Only needed with resize_mask_to_image: the image whose size the mask takes."),
            ],
        )

    @classmethod
    def execute(cls, mask: torch.Tensor, threshold: float, dilate: int, resize_mask_to_image: bool, image=None) -> io.NodeOutput:
        check_finite(threshold=threshold)
        if not threshold < 1.0:  # the widget allows 1.0; the operator marks pixels above it missing
            raise ValueError(f"threshold: must be below 1, got {threshold:g} (mask values above it are missing, so 1 "
                             "would mark none). Use 0.5 for a drawn mask.")
        mask = mask.detach().to("cpu", torch.float32)
        resize_to = None
        if resize_mask_to_image:
            if image is None:
                raise ValueError("image: resize_mask_to_image is on but no image is connected. Connect the image the mask belongs to, or turn resizing off.")
            resize_to = (int(image.shape[1]), int(image.shape[2]))
        operator = ops.Inpainting(mask, threshold=threshold, dilate=dilate, resize_to=resize_to)
        if operator.missing_fraction == 1.0:
            # Allowed (inpaint everything = generation), but usually an inverted mask: say so on the
            # node (ui text, shown by web/comfyui_inverse.js) and in the server log.
            warning = ("Warning: the mask marks every pixel missing (1 = fill), so the result will ignore the "
                       "image. If 1 should mean keep, invert the mask (InvertMask node).")
            log.warning("comfyui-inverse: Inpainting Operator: %s", warning)
            return io.NodeOutput(operator, ui=ui.PreviewText(warning))
        return io.NodeOutput(operator)


class GaussianBlurOperator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _operator_node(
            "InverseGaussianBlur",
            "Gaussian Blur Operator",
            "Gaussian blur with standard deviation sigma (pixels). Frequencies the blur removes (gain below threshold) are treated as unknown.",
            [
                io.Float.Input("sigma", default=3.0, min=0.1, max=50.0, step=0.1),
                io.Int.Input("kernel_size", default=0, min=0, max=255, tooltip="0 = automatic (about 6·sigma)."),
                io.Float.Input("threshold", default=0.03, min=0.0, max=0.5, step=0.001,
                               tooltip="Singular values below this are dropped from the operator (the papers use 0.03)."),
                io.Combo.Input("boundary", options=["zero", "circular"], default="zero",
                               tooltip="zero: zero padding (separable SVD form, as in the papers). circular: wrap-around (FFT form)."),
            ],
        )

    @classmethod
    def execute(cls, sigma: float, kernel_size: int, threshold: float, boundary: str) -> io.NodeOutput:
        check_finite(sigma=sigma, threshold=threshold)
        mode = "svd" if boundary == "zero" else "fft"
        return io.NodeOutput(ops.GaussianBlur(sigma, kernel_size=kernel_size or None, threshold=threshold, mode=mode))


class MotionBlurOperator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _operator_node(
            "InverseMotionBlur",
            "Motion Blur Operator",
            "Camera-shake blur: a straight streak of the given length and angle, a seeded random trajectory, or your own kernel image.",
            [
                io.Float.Input("length", default=9.0, min=1.0, max=101.0, step=0.5, tooltip="Streak length in pixels."),
                io.Float.Input("angle", default=0.0, min=-180.0, max=180.0, step=1.0, tooltip="Streak direction in degrees."),
                io.Int.Input("trajectory_seed", default=-1, min=-1, max=2**31 - 1,
                             tooltip="-1: straight streak. Any other value: a random shake trajectory from this seed."),
                io.Float.Input("threshold", default=0.03, min=0.0, max=0.5, step=0.001,
                               tooltip="Frequencies whose gain is below this are treated as unknown."),
                io.Image.Input("kernel", optional=True, tooltip="Optional blur kernel image (grey levels, normalized to sum 1); overrides length/angle."),
            ],
        )

    @classmethod
    def execute(cls, length: float, angle: float, trajectory_seed: int, threshold: float, kernel=None) -> io.NodeOutput:
        check_finite(length=length, angle=angle, threshold=threshold)
        if kernel is not None:
            k = image_to_bchw(kernel, "kernel")[0].mean(dim=0)
            if not float(k.sum()) > 0:
                raise ValueError("kernel: the kernel image is black (its grey levels sum to 0). Connect an image of "
                                 "the blur streak, bright on black, or disconnect it to use length and angle.")
            return io.NodeOutput(ops.ConvolutionFFT(k, threshold=threshold))
        seed = None if trajectory_seed < 0 else trajectory_seed
        return io.NodeOutput(ops.MotionBlur(length, angle, seed=seed, threshold=threshold))


class DenoiseOperator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _operator_node("InverseDenoise", "Denoising Operator",
                              "Identity: the measurement is the image itself plus noise (set sigma_y on the measurement).", [])

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(ops.Denoise())


class ColorizationOperator(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _operator_node("InverseColorization", "Colorization Operator",
                              "Grey-scale measurement (mean of the channels): the colours are unknown.", [])

    @classmethod
    def execute(cls) -> io.NodeOutput:
        return io.NodeOutput(ops.Colorization())


class ComposeOperators(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseComposeOperators",
            display_name="Compose Operators",
            category=CATEGORY,
            description="Apply `first`, then `second` (e.g. blur then downsample).",
            inputs=[OperatorType.Input("first"), OperatorType.Input("second")],
            outputs=[OperatorType.Output(display_name="operator")],
        )

    @classmethod
    def execute(cls, first, second) -> io.NodeOutput:
        operator = ops.Compose(first, second)
        if not operator.pinv_exact:  # Degrade Image, Measurement From Image and every solver need H⁺
            raise ValueError(
                f"second: {first.describe()} then {second.describe()} has no exact pseudo-inverse, which Degrade "
                "Image, Measurement From Image and the solvers need. Orders that have one: Super-Resolution "
                "(box) or Colorization first; a Gaussian Blur (boundary zero) then Super-Resolution; a circular "
                "Gaussian Blur or Motion Blur then Super-Resolution (box); two zero-boundary blurs, or two circular/motion blurs.")
        return io.NodeOutput(operator)


def _check_sigma_y(sigma_y: float) -> None:
    # JSON NaN passes ComfyUI's min/max validation and would make every pixel NaN.
    if not math.isfinite(sigma_y):
        raise ValueError(f"sigma_y must be a finite number >= 0, got {sigma_y}. Use 0 for a noiseless measurement.")


def _check_operator_fits(operator, shape: tuple, check) -> None:
    """Operator-size errors with the node-level fix (the operator's message speaks Python API)."""
    try:
        check(shape, "image")
    except ValueError as err:
        if isinstance(operator, ops.Inpainting) and tuple(operator.missing.shape[-2:]) != tuple(shape[-2:]):
            (mh, mw), (h, w) = operator.missing.shape[-2:], shape[-2:]
            raise ValueError(f"image is {w}×{h} but the inpainting mask is {mw}×{mh}. In the Inpainting Operator node: "
                             "turn on resize_mask_to_image and connect this image to its `image` input, or crop/resize "
                             f"the image to {mw}×{mh}.") from err
        if isinstance(operator, ops.Colorization) and shape[1] != operator.channels:
            raise ValueError(f"image: has {shape[1]} channels but the Colorization Operator works on RGB images (3). "
                             + ("Remove the alpha channel first (Split Image with Alpha)." if shape[1] == 4 else
                                "Convert the image to RGB first.")) from err
        raise


def _grey_photo(operator, y: torch.Tensor) -> torch.Tensor:
    """A grey photo for colorization as ComfyUI loads it (RGB, three equal channels) -> its one grey channel (the
    channel mean: what the Colorization Operator measures), when the operator's measurement has one channel."""
    if y.shape[1] not in (3, 4):
        return y
    try:
        operator.check_measurement(tuple(y.shape))
        return y
    except ValueError:
        pass
    try:
        operator.check_measurement((y.shape[0], 1, *y.shape[2:]))
    except ValueError:
        return y  # not a channel problem: the caller's check reports it
    if y.shape[1] == 4:
        raise ValueError("image: the photo has an alpha channel; remove it first (Split Image with Alpha).")
    return y.mean(dim=1, keepdim=True)


def _measurement_outputs(measurement: Measurement) -> tuple[torch.Tensor, torch.Tensor]:
    y_image = bchw_to_image(measurement.y)
    pinv_image = bchw_to_image(measurement.pinv_image())
    return y_image, pinv_image


class DegradeImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseDegradeImage",
            display_name="Degrade Image",
            category=CATEGORY,
            description="Simulate a measurement y = H·image + sigma_y·noise from a clean image, to test solvers against a known answer.",
            inputs=[
                io.Image.Input("image"),
                OperatorType.Input("operator"),
                io.Float.Input("sigma_y", default=0.0, min=0.0, max=1.0, step=0.001, tooltip="Noise std on the 0–1 image scale."),
                io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True),
            ],
            outputs=[
                MeasurementType.Output(display_name="measurement"),
                io.Image.Output(display_name="measured", tooltip="y shown at its own size (low-resolution for super-resolution)."),
                io.Image.Output(display_name="pseudo_inverse", tooltip="H⁺y at the full image size."),
            ],
        )

    @classmethod
    def execute(cls, image, operator, sigma_y: float, seed: int) -> io.NodeOutput:
        _check_sigma_y(sigma_y)
        x = image_to_bchw(image)
        _check_operator_fits(operator, tuple(x.shape), operator.check_input)
        check_pseudo_inverse_memory(operator, x.shape, "image", "Use a smaller image (or fewer images per batch).")
        generator = torch.Generator().manual_seed(seed)
        y = operator.measure(x, sigma_y=sigma_y, generator=generator)
        measurement = Measurement(y=y, operator=operator, sigma_y=float(sigma_y), image_shape=tuple(x.shape))
        return io.NodeOutput(measurement, *_measurement_outputs(measurement))


class MeasurementFromImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InverseMeasurementFromImage",
            display_name="Measurement From Image",
            category=CATEGORY,
            description="Use your own degraded photo as the measurement: a small image to upscale, a blurry photo, or a photo whose masked part should be filled.",
            **search_aliases("upscale photo", "restore photo", "load degraded image"),
            inputs=[
                io.Image.Input("image", tooltip="The degraded photo as you have it (for super-resolution: the small image)."),
                OperatorType.Input("operator"),
                io.Float.Input("sigma_y", default=0.01, min=0.0, max=1.0, step=0.001, tooltip="Assumed noise std on the 0–1 scale."),
            ],
            outputs=[
                MeasurementType.Output(display_name="measurement"),
                io.Image.Output(display_name="pseudo_inverse", tooltip="H⁺y at the full image size."),
            ],
        )

    @classmethod
    def execute(cls, image, operator, sigma_y: float) -> io.NodeOutput:
        _check_sigma_y(sigma_y)
        y = _grey_photo(operator, image_to_bchw(image))
        _check_operator_fits(operator, tuple(y.shape), operator.check_measurement)
        image_shape = tuple(operator.input_shape(tuple(y.shape)))
        check_pseudo_inverse_memory(operator, image_shape, "image", "Use a smaller upscale factor or a smaller photo "
                                                                    "(or crop it into parts).")
        if isinstance(operator, ops.Inpainting):
            y = operator.forward(y)  # the masked pixels carry no information
        measurement = Measurement(y=y, operator=operator, sigma_y=float(sigma_y), image_shape=image_shape, from_photo=True)
        return io.NodeOutput(measurement, bchw_to_image(measurement.pinv_image()))


class PseudoInverse(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversePseudoInverse",
            display_name="Pseudo-Inverse",
            category=CATEGORY,
            description="H⁺y: the least-squares, minimum-norm reconstruction every solver starts from (the classical baseline).",
            inputs=[MeasurementType.Input("measurement")],
            outputs=[io.Image.Output(display_name="image")],
        )

    @classmethod
    def execute(cls, measurement: Measurement) -> io.NodeOutput:
        check_pseudo_inverse_memory(measurement.operator, measurement.image_shape, "measurement",
                                    "Use a smaller image or upscale factor.")
        image = bchw_to_image(measurement.pinv_image())
        return io.NodeOutput(image, ui=ui.PreviewImage(image, cls=cls))


NODES = [
    SuperResolutionOperator,
    InpaintingOperator,
    GaussianBlurOperator,
    MotionBlurOperator,
    DenoiseOperator,
    ColorizationOperator,
    ComposeOperators,
    DegradeImage,
    MeasurementFromImage,
    PseudoInverse,
]
