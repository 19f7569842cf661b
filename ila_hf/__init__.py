"""ila_hf: ILA (Implicit Learnable Alignment, ICCV 2023) video recognition for Hugging Face Transformers.

Importing the package registers the ILA classes with transformers' Auto classes.
"""

from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

from .configuration_ila import ILAVideoConfig
from .modeling_ila import (
    ILAForVideoClassification,
    ILAPreTrainedModel,
    ILAVideoClassifierOutput,
    ILAVideoModel,
    ILAVideoModelOutput,
)


AutoConfig.register(ILAVideoConfig.model_type, ILAVideoConfig, exist_ok=True)
AutoModel.register(ILAVideoConfig, ILAVideoModel, exist_ok=True)
AutoModelForVideoClassification.register(ILAVideoConfig, ILAForVideoClassification, exist_ok=True)

# `save_pretrained` then copies the code files and writes `auto_map`, so saved folders load with trust_remote_code.
ILAVideoConfig.register_for_auto_class()
ILAVideoModel.register_for_auto_class("AutoModel")
ILAForVideoClassification.register_for_auto_class("AutoModelForVideoClassification")

__version__ = "0.1.0"

__all__ = [
    "ILAForVideoClassification",
    "ILAPreTrainedModel",
    "ILAVideoClassifierOutput",
    "ILAVideoConfig",
    "ILAVideoModel",
    "ILAVideoModelOutput",
]
