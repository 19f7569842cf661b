"""Export a saved ILA classifier for serving: an ONNX graph or a `torch.export` program, with a dynamic batch.

The graph takes `pixel_values` (batch, num_frames, 3, image_size, image_size), already preprocessed, and returns
`logits` (batch, num_labels). The folder also gets the model's `config.json` (labels) and, when the source folder has
one, the video processor's settings, so a serving stack can reproduce the preprocessing. ONNX needs the `export` extra
(`pip install ila-hf[export]`: onnx, onnxscript; onnxruntime to run the result).
"""

import logging
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from .modeling_ila import ILAForVideoClassification


logger = logging.getLogger(__name__)

FORMATS = ("onnx", "exported-program")
FILE_NAMES = {"onnx": "model.onnx", "exported-program": "model.pt2"}


class ILALogits(nn.Module):
    """The classifier as a serving graph sees it: pixel_values -> logits, one tensor in and one out."""

    def __init__(self, model: ILAForVideoClassification):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def example_pixel_values(config, batch_size: int = 2) -> torch.Tensor:
    """Random inputs of the model's shape. Batch 2: with 1, tracing would fix the batch size to 1."""
    shape = (batch_size, config.num_frames, config.num_channels, config.image_size, config.image_size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0))


def export_program(model: ILAForVideoClassification, strict: bool = False) -> torch.export.ExportedProgram:
    """`torch.export` the eval-mode classifier (fused or not) with a dynamic batch dimension."""
    if model.training:
        raise ValueError("Export the model in evaluation mode: call model.eval() first.")
    batch = torch.export.Dim("batch", min=1, max=1024)
    return torch.export.export(
        ILALogits(model),
        (example_pixel_values(model.config),),
        dynamic_shapes={"pixel_values": {0: batch}},
        strict=strict,
    )


def save_onnx(program: torch.export.ExportedProgram, path: str | Path) -> None:
    """Write an `export_program` result as an ONNX graph (dynamo exporter): input `pixel_values`, output `logits`."""
    onnx_program = torch.onnx.export(
        program, input_names=["pixel_values"], output_names=["logits"], dynamo=True, verbose=False
    )
    onnx_program.save(str(path))


def export_for_serving(
    model_dir: str | Path,
    output_dir: str | Path,
    format: Literal["onnx", "exported-program"] = "onnx",
    fuse: bool = False,
) -> Path:
    """
    Export the classifier saved in `model_dir` into `output_dir`; returns the path of the graph file.

    Args:
        model_dir: a `save_pretrained` folder of an `ILAForVideoClassification`.
        output_dir: folder to write `model.onnx` or `model.pt2`, `config.json` and the video processor's settings to.
        format: `"onnx"` (dynamo exporter, runs in onnxruntime) or `"exported-program"` (`torch.export.load`).
        fuse: fold BatchNorm and the interaction projections first (`fuse_for_inference`): fewer operations, same
            outputs up to float rounding.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    model = ILAForVideoClassification.from_pretrained(model_dir).eval()
    if fuse:
        model.fuse_for_inference()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    graph_path = output_dir / FILE_NAMES[format]

    program = export_program(model)
    if format == "exported-program":
        torch.export.save(program, graph_path)
    else:
        save_onnx(program, graph_path)

    model.config.save_pretrained(output_dir)
    try:
        from .video_processing_ila import ILAVideoProcessor

        ILAVideoProcessor.from_pretrained(model_dir).save_pretrained(output_dir)
    except OSError:
        logger.warning("%s has no video processor settings; the export has none either.", model_dir)
    logger.info("Exported %s to %s", model_dir, graph_path)
    return graph_path


__all__ = ["ILALogits", "export_for_serving", "export_program", "save_onnx"]
