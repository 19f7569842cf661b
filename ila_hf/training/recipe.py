"""The released recipe's optimisation: parameter groups and their learning rates, AdamW, the warm-up + cosine
learning-rate schedule, the align-decay schedule of the alignment jitter, and the training batches' Mixup/CutMix with
label smoothing."""

import torch
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup_lr_rate

from ..baselines import FrameAveragingClassifier
from ..data import MixupCutmix, VideoClassificationCollator
from ..modeling_ila import ILAForVideoClassification
from .config import TrainingConfig


def jitter_delta(epoch: int, initial: float = 0.2, decay_start_epoch: int = 30) -> float:
    """Align decay: the alignment-mask jitter of 0-based `epoch`, halved at the start of every epoch from
    `decay_start_epoch` on: initial for epoch < start, initial / 2 ** (epoch - start + 1) after."""
    return initial * 0.5 ** max(0, epoch - decay_start_epoch + 1)


def _no_weight_decay(name: str, parameter: torch.nn.Parameter) -> bool:
    return parameter.ndim <= 1 or name.endswith(".bias") or "position_embedding" in name or "class_embedding" in name


def parameter_group_name(name: str, backbone_names: set[str], head_prefixes: tuple[str, ...] = ("head.",)) -> str:
    """The recipe's group of a parameter of `ILAForVideoClassification` (or of the baseline), by name."""
    if name in backbone_names:
        return "backbone"
    if ".aligned_tokens_proj." in name or ".interaction_tokens_proj." in name:
        return "temporal_skip"
    if ".message_fc." in name or ".message_ln." in name or ".alignment." in name:
        return "alignment"
    if name.startswith("mit."):
        return "mit"
    if name.startswith(head_prefixes):
        return "head"
    return "other"


def _backbone_and_head(model: ILAForVideoClassification | FrameAveragingClassifier) -> tuple[set[str], tuple[str, ...]]:
    """(names of the CLIP backbone's parameters, name prefixes of the head's) of ILA or of the baseline."""
    if isinstance(model, FrameAveragingClassifier):
        return {f"clip.{name}" for name, _ in model.clip.named_parameters()}, ("norm.", "classifier.")
    return {f"ila.{name}" for name, _ in model.ila.clip_backbone_parameters()}, ("head.",)


def build_optimizer(
    model: ILAForVideoClassification | FrameAveragingClassifier, config: TrainingConfig
) -> torch.optim.AdamW:
    """
    AdamW over the recipe's parameter groups; each group is split into a decayed part and a `_no_decay` part
    (biases, 1-D parameters, position and class embeddings). Frozen parameters get no group and no optimizer state.

    Groups (learning rate, weight decay):
    - alignment: message_fc, message_ln, alignment.* of every layer (alignment_learning_rate, alignment_weight_decay)
    - temporal_skip: aligned_tokens_proj, interaction_tokens_proj (base x temporal_skip_lr_scale, weight_decay)
    - mit: mit.* (mit_learning_rate, weight_decay)
    - head: head.*, the classifier or the prompt generator; the baseline's norm and classifier (head_learning_rate,
      weight_decay)
    - backbone: the CLIP weights, when not frozen (base_learning_rate, weight_decay)
    - other: anything else trainable (base_learning_rate, weight_decay)

    Every group records its peak learning rate as `initial_lr`; the schedule scales it.
    """
    settings = {
        "alignment": (config.alignment_learning_rate, config.alignment_weight_decay),
        "temporal_skip": (config.base_learning_rate * config.temporal_skip_lr_scale, config.weight_decay),
        "mit": (config.mit_learning_rate, config.weight_decay),
        "head": (config.head_learning_rate, config.weight_decay),
        "backbone": (config.base_learning_rate, config.weight_decay),
        "other": (config.base_learning_rate, config.weight_decay),
    }
    backbone_names, head_prefixes = _backbone_and_head(model)
    grouped: dict[str, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        group = parameter_group_name(name, backbone_names, head_prefixes)
        grouped.setdefault(group + ("_no_decay" if _no_weight_decay(name, parameter) else ""), []).append(parameter)
    param_groups = []
    for group, (learning_rate, weight_decay) in settings.items():
        for suffix, decay in (("", weight_decay), ("_no_decay", 0.0)):
            if grouped.get(group + suffix):
                param_groups.append(
                    {
                        "params": grouped[group + suffix],
                        "lr": learning_rate,
                        "weight_decay": decay,
                        "name": group + suffix,
                    }
                )
    if not param_groups:
        raise ValueError("The model has no trainable parameters.")
    return torch.optim.AdamW(param_groups, betas=config.adam_betas, eps=config.adam_epsilon)


def build_scheduler(optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    """
    The learning-rate schedule of every group, stepped once per optimizer step (0-based step s of `total_steps`):
    linear warm-up, (s + 1) / warmup_steps x peak, so that the first step already learns and step warmup_steps - 1
    is at the peak; then a cosine decay that reaches min_lr_ratio x peak on the last step.

    This is transformers' `get_cosine_with_min_lr_schedule_with_warmup_lr_rate`. Its sibling
    `get_cosine_with_min_lr_schedule_with_warmup` is not: its warm-up starts at 0, so the first step of every run
    would not learn at all.
    """
    return get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
        optimizer, warmup_steps, total_steps, min_lr_rate=min_lr_ratio
    )


def build_training_collator(config: TrainingConfig, num_labels: int) -> VideoClassificationCollator:
    """The recipe's collator: Mixup/CutMix (when either alpha is positive) and label smoothing on training items;
    evaluation items pass through with their class ids, so one collator serves both."""
    mixup = None
    if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
        mixup = MixupCutmix(
            num_labels,
            mixup_alpha=config.mixup_alpha,
            cutmix_alpha=config.cutmix_alpha,
            switch_prob=config.mixup_switch_prob,
            label_smoothing=config.label_smoothing,
        )
    return VideoClassificationCollator(mixup, config.label_smoothing, num_labels)


__all__ = ["build_optimizer", "build_scheduler", "build_training_collator", "jitter_delta", "parameter_group_name"]
