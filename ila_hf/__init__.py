"""ila_hf: ILA (Implicit Learnable Alignment, ICCV 2023) video recognition for Hugging Face Transformers.

Importing the package registers the ILA classes with transformers' Auto classes (AutoConfig, AutoModel,
AutoModelForVideoClassification, AutoVideoProcessor) and the `zero-shot-video-classification` pipeline. It imports
neither torch nor transformers itself: the public names below load their module on first use, and each registration
is made when transformers loads the Auto class or pipeline module it extends (see `auto_registration`), so that
`ila-hf --help` answers at once.
"""

import importlib

from .auto_registration import register_when_loaded


register_when_loaded()

# Public name -> the module that defines it, imported on first use (PEP 562).
_LAZY_ATTRIBUTES = {
    "ILAVideoConfig": "configuration_ila",
    "ILAForVideoClassification": "modeling_ila",
    "ILAPreTrainedModel": "modeling_ila",
    "ILAVideoClassifierOutput": "modeling_ila",
    "ILAVideoModel": "modeling_ila",
    "ILAVideoModelOutput": "modeling_ila",
    "ILAVideoProcessor": "video_processing_ila",
    "ZeroShotVideoClassificationPipeline": "zero_shot_video_classification",
    "VideoDecodeError": "video_io",
    "load_video": "video_io",
    "read_video_metadata": "video_io",
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


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_ATTRIBUTES])


__version__ = "0.1.0"

__all__ = sorted(_LAZY_ATTRIBUTES)
