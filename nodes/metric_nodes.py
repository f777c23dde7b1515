"""Metric nodes (category inverse/metrics): compare solvers inside a workflow."""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..operators.metrics import measurement_consistency, psnr, ssim
from .convert import image_to_bchw
from .types import Measurement, MeasurementType

CATEGORY = "inverse/metrics"


def _summary(name: str, values, unit: str = "") -> tuple[float, str]:
    values = [float(v) for v in values]
    mean = sum(values) / len(values)
    items = ", ".join(f"{v:.4g}{unit}" for v in values)
    text = f"{name}: {mean:.4g}{unit}" + (f" (per image: {items})" if len(values) > 1 else "")
    return mean, text


def _metric_schema(node_id: str, display_name: str, description: str, second) -> io.Schema:
    return io.Schema(
        node_id=node_id,
        display_name=display_name,
        category=CATEGORY,
        description=description,
        inputs=[io.Image.Input("image", tooltip="The reconstruction."), second],
        outputs=[io.Float.Output(display_name="value", tooltip="Mean over the batch."), io.String.Output(display_name="summary")],
        is_output_node=True,
    )


class ImagePSNR(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _metric_schema("InversePSNR", "PSNR", "Peak signal-to-noise ratio (dB) against a reference image; higher is better.",
                              io.Image.Input("reference", tooltip="The ground truth, same size: one per image, or one for the whole batch."))

    @classmethod
    def execute(cls, image, reference) -> io.NodeOutput:
        mean, text = _summary("PSNR", psnr(image_to_bchw(image), image_to_bchw(reference, "reference")), " dB")
        return io.NodeOutput(mean, text, ui=ui.PreviewText(text))


class ImageSSIM(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _metric_schema("InverseSSIM", "SSIM", "Structural similarity against a reference image (1 = identical).",
                              io.Image.Input("reference", tooltip="The ground truth, same size: one per image, or one for the whole batch."))

    @classmethod
    def execute(cls, image, reference) -> io.NodeOutput:
        mean, text = _summary("SSIM", ssim(image_to_bchw(image), image_to_bchw(reference, "reference")))
        return io.NodeOutput(mean, text, ui=ui.PreviewText(text))


class MeasurementConsistency(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return _metric_schema(
            "InverseMeasurementConsistency", "Measurement Consistency",
            "‖H·image − y‖ / ‖y‖: how well the reconstruction explains the measurement (about sigma_y·√n/‖y‖ is as good as it gets).",
            MeasurementType.Input("measurement"))

    @classmethod
    def execute(cls, image, measurement: Measurement) -> io.NodeOutput:
        x = image_to_bchw(image)
        want = tuple(measurement.image_shape[1:])
        if tuple(x.shape[1:]) != want:  # before the operator's own check, which speaks Python (resize_to=...)
            raise ValueError(f"image: its size {tuple(x.shape[1:])} (C×H×W) does not match the measurement's unknown "
                             f"image {want}: connect the restored image of this measurement.")
        values = measurement_consistency(x, measurement.operator, measurement.y)
        mean, text = _summary("‖Hx − y‖/‖y‖", values)
        return io.NodeOutput(mean, text, ui=ui.PreviewText(text))


NODES = [ImagePSNR, ImageSSIM, MeasurementConsistency]
