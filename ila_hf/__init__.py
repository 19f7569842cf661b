"""ila_hf: ILA (Implicit Learnable Alignment, ICCV 2023) video recognition for Hugging Face Transformers.

Importing the package registers the ILA classes with transformers' Auto classes. The training, data and conversion
entry points load on first use, so that inference code does not import accelerate and datasets.
"""

import importlib

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification, AutoVideoProcessor

from .configuration_ila import ILAVideoConfig
from .modeling_ila import (
    ILAForVideoClassification,
    ILAPreTrainedModel,
    ILAVideoClassifierOutput,
    ILAVideoModel,
    ILAVideoModelOutput,
)
from .video_io import VideoDecodeError, load_video, read_video_metadata
from .video_processing_ila import ILAVideoProcessor


AutoConfig.register(ILAVideoConfig.model_type, ILAVideoConfig, exist_ok=True)
AutoModel.register(ILAVideoConfig, ILAVideoModel, exist_ok=True)
AutoModelForVideoClassification.register(ILAVideoConfig, ILAForVideoClassification, exist_ok=True)
AutoVideoProcessor.register(ILAVideoConfig, ILAVideoProcessor, exist_ok=True)

# `save_pretrained` then copies the code files and writes `auto_map`, so saved folders load with trust_remote_code.
ILAVideoConfig.register_for_auto_class()
ILAVideoModel.register_for_auto_class("AutoModel")
ILAForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")
ILAVideoProcessor.register_for_auto_class()

_LAZY_ATTRIBUTES = {
    "build_dataset": "data",
    "VideoClassificationCollator": "data",
    "VideoBatchStream": "data",
    "TrainingConfig": "training",
    "train": "training",
    "convert_checkpoint": "convert",
    "export_model": "hub",
    "predict_timeline": "timeline",
    "iter_timeline": "timeline",
}


def __getattr__(name: str):
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(f".{_LAZY_ATTRIBUTES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "ILAForVideoClassification",
    "ILAPreTrainedModel",
    "ILAVideoClassifierOutput",
    "ILAVideoConfig",
    "ILAVideoModel",
    "ILAVideoModelOutput",
    "ILAVideoProcessor",
    "VideoDecodeError",
    "load_video",
    "read_video_metadata",
    *_LAZY_ATTRIBUTES,
]
