"""Fine-tuning ILA with accelerate, following the released recipe: `train` (ila_hf.training.loop) and its parts.

- `config`: `TrainingConfig` (each field with its command-line help) and `TrainingResult` (no datasets / accelerate
  import);
- `recipe`: parameter groups, AdamW, the learning-rate and align-decay schedules;
- `checkpoints`: atomic saves, resuming (fingerprinted), pruning, the run lock on the output folder;
- `faults`: step agreement across processes, undecodable videos and non-finite losses;
- `loop`: `train` and `evaluate`;
- `export`: the exported model folder, metrics and Hub upload at the end of a run.
"""

import importlib


# Loaded on first use, so that `ila_hf.training.config` (argument parsing) does not import datasets.
_SUBMODULE_OF = {
    "ARCHITECTURES": "config",
    "MIXED_PRECISION_CHOICES": "config",
    "TrainingConfig": "config",
    "TrainingResult": "config",
    "TrainingProgress": "checkpoints",
    "OutputDirInUseError": "checkpoints",
    "ResumeMismatchError": "checkpoints",
    "NonFiniteLossError": "faults",
    "UndecodableDataError": "faults",
    "build_datasets": "loop",
    "build_model": "loop",
    "build_train_clip_transform": "loop",
    "evaluate": "loop",
    "top_k_accuracy": "loop",
    "train": "loop",
    "build_optimizer": "recipe",
    "build_scheduler": "recipe",
    "build_training_collator": "recipe",
    "jitter_delta": "recipe",
    "parameter_group_name": "recipe",
}


def __getattr__(name: str):
    if name in _SUBMODULE_OF:
        return getattr(importlib.import_module(f".{_SUBMODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ARCHITECTURES",
    "MIXED_PRECISION_CHOICES",
    "NonFiniteLossError",
    "OutputDirInUseError",
    "ResumeMismatchError",
    "TrainingConfig",
    "TrainingProgress",
    "TrainingResult",
    "UndecodableDataError",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "jitter_delta",
    "parameter_group_name",
    "top_k_accuracy",
    "train",
]
