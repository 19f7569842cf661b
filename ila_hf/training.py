"""Fine-tune ILA with Hugging Face accelerate, following the released recipe.

Read `train` top to bottom: build the data, the model, the optimizer (one learning rate per parameter group) and the
cosine schedule; prepare them with accelerate; optionally resume from the latest checkpoint; then per epoch set the
alignment jitter ("align decay"), train with gradient accumulation, evaluate, checkpoint; finally evaluate, export
and optionally push to the Hub.

Runs on one CPU or GPU as a plain `python` program and on many with `accelerate launch` (see docs/distributed.md).
A run that is stopped and resumed with `resume=True` ends with exactly the weights of an uninterrupted run: the
data order, the clips, the mixes and every random number generator are restored from the checkpoint.

Faults: checkpoints are written atomically (a run killed at any moment, even mid-save, resumes from a complete one);
undecodable videos are skipped, counted and logged, up to `max_bad_video_fraction` of a split; an optimizer step whose
loss is NaN or infinite is skipped (the same on every process) and `max_consecutive_nonfinite_steps` of them in a row
stop the run.
"""

import argparse
import dataclasses
import json
import math
import os
import re
import shutil
import time
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.logging import get_logger
from accelerate.utils import DistributedType, ProjectConfiguration, gather_object, set_seed
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import (
    MixupCutmix,
    VideoClassificationCollator,
    VideoClipTransform,
    VideoProcessorTransform,
    build_dataset,
)
from .hub import export_model, model_card_context, push_to_hub_in_background
from .inference import view_probabilities
from .modeling_ila import ILAForVideoClassification
from .transforms import EvalClipTransform, TrainClipTransform


logger = get_logger(__name__)

MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite for `max_consecutive_nonfinite_steps` optimizer steps in a row."""


class UndecodableDataError(RuntimeError):
    """More than `max_bad_video_fraction` of a split's videos could not be decoded."""


@dataclass
class TrainingConfig:
    """
    Everything a training run needs. Defaults are the released ILA recipe (per-GPU batch 8; the release reached a
    total batch of 256 with gradient accumulation across its GPUs).
    """

    # Data: a released-format list file (`path label_id` lines, needs `label_names`) or a folder per class.
    train_data: str = ""
    validation_data: str | None = None
    label_names: str | None = None  # `id,name` CSV or one name per line; default for folders: the folder names
    video_root: str | None = None  # folder that list-file paths are relative to (default: the list's folder)

    # Model: a CLIP checkpoint to initialise from, or an ILA checkpoint to continue from.
    clip_model: str | None = None
    model_name_or_path: str | None = None
    num_frames: int = 8
    head: str = "linear"  # "linear" (SSv2 recipe) or "text" (K400 recipe; class names embedded by CLIP's text tower)
    clip_text_model: str | None = None  # text tower for head="text" (default: clip_model)
    interaction_variant: str = "depthwise"  # "depthwise" (K400 recipe) or "conv" (SSv2 recipe)
    freeze_backbone: bool = True
    drop_path_rate: float = 0.0

    # Optimisation: AdamW, cosine schedule with linear warm-up, learning rate per parameter group.
    epochs: int = 30
    warmup_epochs: float = 5.0
    batch_size: int = 8  # per process
    eval_batch_size: int | None = None  # default: batch_size
    gradient_accumulation_steps: int = 1
    base_learning_rate: float = 8e-6  # CLIP backbone (when trained) and anything without its own group
    alignment_learning_rate: float = 5e-4  # message_fc / message_ln / alignment modules ("message_*" in the release)
    alignment_weight_decay: float = 1e-2
    temporal_skip_lr_scale: float = 10.0  # aligned_tokens_proj / interaction_tokens_proj: 10 x base
    mit_learning_rate: float = 4e-4
    head_learning_rate: float = 4e-4  # classifier / prompt generator, "as MIT"
    weight_decay: float = 1e-3
    adam_betas: tuple[float, float] = (0.9, 0.98)
    adam_epsilon: float = 1e-8
    min_lr_ratio: float = 0.01  # final learning rate / peak learning rate
    max_grad_norm: float | None = None
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    mixup_switch_prob: float = 0.5
    jitter_delta: float = 0.2
    align_decay_start_epoch: int = 30  # 0-based: delta halves at the start of this epoch and of every later one
    horizontal_flip: bool = True  # turn off where direction is the label (Something-Something)
    mixed_precision: str = "no"  # "no", "fp16" (the release's AMP) or "bf16"; accelerate allows one per process
    activation_checkpointing: bool = False
    seed: int = 0
    cpu: bool = False  # force CPU even where a GPU is available
    num_workers: int = 4

    # Evaluation
    eval_every_epochs: int = 1
    final_num_clips: int = 1  # temporal views of the final evaluation (the release reports 4)
    final_num_crops: int = 1  # spatial crops of the final evaluation (the release reports 3)

    # Checkpoints, logging, export
    output_dir: str = "ila-output"
    checkpoint_every_steps: int | None = None
    checkpoint_every_epochs: int | None = 1
    checkpoints_total_limit: int | None = 2
    resume: bool = False  # continue from the latest checkpoint in output_dir/checkpoints
    stop_after_steps: int | None = None  # end this run after this many optimizer steps in total, with a checkpoint
    log_with: list[Any] | None = None  # accelerate trackers: names ("tensorboard", "wandb", ...) or instances
    project_name: str = "ila"
    log_every_steps: int = 10
    export: str = "best"  # "best" (highest validation top-1) or "last"
    push_to_hub: str | None = None  # repo id
    hub_private: bool = False
    hub_token: str | None = None
    hub_upload_timeout: float = 600.0  # seconds to wait for the background upload at the end

    # Faults
    max_bad_video_fraction: float = 0.1  # undecodable videos a split may have (skipped and logged) before a stop
    max_consecutive_nonfinite_steps: int | None = 3  # NaN/inf-loss steps in a row (each skipped) before a stop

    def __post_init__(self):
        if self.mixed_precision not in MIXED_PRECISION_CHOICES:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION_CHOICES}, got {self.mixed_precision!r}.")
        if self.export not in ("best", "last"):
            raise ValueError(f"export must be 'best' or 'last', got {self.export!r}.")
        if (self.clip_model is None) == (self.model_name_or_path is None):
            raise ValueError(
                "Give exactly one of `clip_model` (start from CLIP) and `model_name_or_path` (an ILA model)."
            )
        if not self.train_data:
            raise ValueError("`train_data` is required: a list file or a folder with one folder per class.")
        if not 0.0 <= self.max_bad_video_fraction <= 1.0:
            raise ValueError(f"max_bad_video_fraction must lie in [0, 1], got {self.max_bad_video_fraction}.")
        if self.max_consecutive_nonfinite_steps is not None and self.max_consecutive_nonfinite_steps < 1:
            raise ValueError(
                "max_consecutive_nonfinite_steps must be >= 1 (or None to never stop), "
                f"got {self.max_consecutive_nonfinite_steps}."
            )
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(
                f"checkpoints_total_limit must be >= 1 (or None to keep all), got {self.checkpoints_total_limit}."
            )


@dataclass
class TrainingResult:
    """What `train` returns: metrics of the final evaluation, where the model went, how the upload went."""

    metrics: dict[str, float]
    output_dir: str
    model_dir: str | None  # the exported `from_pretrained` folder (None when the run stopped early)
    global_step: int
    epoch: int
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch validation metrics
    hub_upload: Any = None  # ila_hf.hub.UploadStatus when pushing
    undecodable_videos: dict[str, str] = field(default_factory=dict)  # path -> reason, training and validation
    nonfinite_loss_steps: list[int] = field(default_factory=list)  # optimizer steps skipped for a NaN/inf loss
    steps_without_data: list[int] = field(default_factory=list)  # steps skipped: a last micro-batch had no video


@dataclass
class TrainingProgress:
    """Loop position, saved in every checkpoint (accelerate's `register_for_checkpointing`)."""

    epoch: int = 0  # epochs completed
    batches_in_epoch: int = 0  # micro-batches of the current epoch already trained on
    global_step: int = 0  # optimizer steps
    best_top1: float = -1.0
    best_epoch: int = -1
    history: list = field(default_factory=list)
    # Fault counts, agreed across processes (each process saw part of every step).
    undecodable_videos: dict = field(default_factory=dict)  # path -> reason, every epoch and split
    undecodable_in_epoch: dict = field(default_factory=dict)  # training videos of the current epoch
    nonfinite_loss_steps: list = field(default_factory=list)
    consecutive_nonfinite_steps: int = 0
    steps_without_data: list = field(default_factory=list)

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name, value in state.items():
            setattr(self, name, value)


# ------------------------------------------------------------------------------------------------------ command line
_ARGUMENT_HELP = {
    "train_data": "list file (`path label_id` lines) or folder with one sub-folder per class",
    "validation_data": "list file or class folders to evaluate on every epoch and at the end",
    "label_names": "`id,name` CSV or one name per line (required with list files)",
    "clip_model": "CLIP checkpoint (folder or Hub id) to initialise ILA from",
    "model_name_or_path": "ILA checkpoint to continue fine-tuning",
    "resume": "continue from the latest checkpoint in OUTPUT_DIR/checkpoints",
    "push_to_hub": "repo id to upload the exported model to (in the background)",
    "log_with": "accelerate trackers, e.g. tensorboard wandb",
    "stop_after_steps": "end after this many optimizer steps in total, with a checkpoint; continue with --resume",
    "max_bad_video_fraction": "undecodable videos (skipped and logged) a split may have before the run stops",
    "max_consecutive_nonfinite_steps": "stop after this many optimizer steps in a row with a NaN/inf loss (skipped)",
}


_ARGUMENT_CHOICES = {
    "head": ("linear", "text"),
    "interaction_variant": ("depthwise", "conv"),
    "mixed_precision": MIXED_PRECISION_CHOICES,
    "export": ("best", "last"),
}


def add_training_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """One `--option` per `TrainingConfig` field (`--train-data`, `--push-to-hub REPO_ID`, `--resume`, ...), with
    the recipe's defaults; booleans also get `--no-...`."""
    hints = typing.get_type_hints(TrainingConfig)
    for config_field in dataclasses.fields(TrainingConfig):
        hint = hints[config_field.name]
        options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        kind = next(option for option in options if option is not type(None))
        default = config_field.default if config_field.default is not dataclasses.MISSING else None
        flag = "--" + config_field.name.replace("_", "-")
        help_text = _ARGUMENT_HELP.get(config_field.name, "") + f" (default: {default})"
        if kind is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif typing.get_origin(kind) is tuple:
            item_types = typing.get_args(kind)
            parser.add_argument(flag, type=item_types[0], nargs=len(item_types), default=default, help=help_text)
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, nargs="+", default=default, help=help_text)
        else:
            parser.add_argument(
                flag,
                type=kind,
                default=default,
                choices=_ARGUMENT_CHOICES.get(config_field.name),
                required=config_field.name == "train_data",
                help=help_text,
            )
    return parser


def config_from_args(args: argparse.Namespace) -> "TrainingConfig":
    """The `TrainingConfig` of arguments parsed by a parser set up with `add_training_arguments`."""
    values = {
        config_field.name: getattr(args, config_field.name) for config_field in dataclasses.fields(TrainingConfig)
    }
    if values["adam_betas"] is not None:
        values["adam_betas"] = tuple(values["adam_betas"])
    return TrainingConfig(**values)


# ------------------------------------------------------------------------------------------------------ recipe
def jitter_delta(epoch: int, initial: float = 0.2, decay_start_epoch: int = 30) -> float:
    """Align decay: the alignment-mask jitter of 0-based `epoch`, halved at the start of every epoch from
    `decay_start_epoch` on: initial for epoch < start, initial / 2 ** (epoch - start + 1) after."""
    return initial * 0.5 ** max(0, epoch - decay_start_epoch + 1)


def lr_multiplier(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning-rate factor of optimizer step `step` (0-based): linear warm-up to 1 over `warmup_steps`, then a
    cosine decay to `min_lr_ratio` at `total_steps`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _no_weight_decay(name: str, parameter: torch.nn.Parameter) -> bool:
    return parameter.ndim <= 1 or name.endswith(".bias") or "position_embedding" in name or "class_embedding" in name


def parameter_group_name(name: str, backbone_names: set[str]) -> str:
    """The recipe's group of a parameter of `ILAForVideoClassification`, by name."""
    if name in backbone_names:
        return "backbone"
    if ".aligned_tokens_proj." in name or ".interaction_tokens_proj." in name:
        return "temporal_skip"
    if ".message_fc." in name or ".message_ln." in name or ".alignment." in name:
        return "alignment"
    if name.startswith("mit."):
        return "mit"
    if name.startswith("head."):
        return "head"
    return "other"


def build_optimizer(model: ILAForVideoClassification, config: TrainingConfig) -> torch.optim.AdamW:
    """
    AdamW over the recipe's parameter groups; each group is split into a decayed part and a `_no_decay` part
    (biases, 1-D parameters, position and class embeddings). Frozen parameters get no group and no optimizer state.

    Groups (learning rate, weight decay):
    - alignment: message_fc, message_ln, alignment.* of every layer (alignment_learning_rate, alignment_weight_decay)
    - temporal_skip: aligned_tokens_proj, interaction_tokens_proj (base x temporal_skip_lr_scale, weight_decay)
    - mit: mit.* (mit_learning_rate, weight_decay)
    - head: head.*, the classifier or the prompt generator (head_learning_rate, weight_decay)
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
    backbone_names = {name for name, _ in model.ila.clip_backbone_parameters()}
    backbone_names = {f"ila.{name}" for name in backbone_names}
    grouped: dict[str, list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        group = parameter_group_name(name, backbone_names)
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
    """`LambdaLR` applying `lr_multiplier` to every group's learning rate; step it once per optimizer step."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, warmup_steps, total_steps, min_lr_ratio)
    )


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """scores (N, K), labels (N,) -> {"top1": ..., "top5": ...}; k is capped at K."""
    ranked = scores.topk(min(max(ks), scores.shape[-1]), dim=-1).indices  # (N, k)
    hits = ranked == labels.view(-1, 1)
    return {f"top{k}": hits[:, :k].any(dim=-1).float().mean().item() for k in ks}


# ------------------------------------------------------------------------------------------------------ pieces
def build_model(config: TrainingConfig, label_names: list[str]) -> ILAForVideoClassification:
    id2label = dict(enumerate(label_names))
    label2id = {name: index for index, name in id2label.items()}
    if config.model_name_or_path:
        model = ILAForVideoClassification.from_pretrained(config.model_name_or_path)
        if [model.config.id2label[i] for i in sorted(model.config.id2label)] != list(label_names):
            raise ValueError(
                f"{config.model_name_or_path} was trained on other classes than the data's {len(label_names)}; "
                "start from `clip_model` to train a new head."
            )
    else:
        model = ILAForVideoClassification.from_clip(
            config.clip_model,
            num_frames=config.num_frames,
            id2label=id2label,
            label2id=label2id,
            head=config.head,
            interaction_variant=config.interaction_variant,
            freeze_backbone=config.freeze_backbone,
            drop_path_rate=config.drop_path_rate,
            jitter_delta=config.jitter_delta,
        )
        if config.head == "text":
            model.set_class_names(list(label_names), config.clip_text_model or config.clip_model)
    model.ila.freeze_clip_backbone(config.freeze_backbone)
    model.config.freeze_backbone = config.freeze_backbone
    if config.activation_checkpointing:
        model.activation_checkpointing_enable()
    return model


def build_video_processor(model: ILAForVideoClassification):
    """The `ILAVideoProcessor` matching the model's frames and image size (saved with the exported model)."""
    from .video_processing_ila import ILAVideoProcessor

    size = model.config.image_size
    return ILAVideoProcessor(num_frames=model.config.num_frames, crop_size={"height": size, "width": size})


def build_clip_transforms(config: TrainingConfig, image_size: int):
    """(training augmentation, single-view evaluation transform) of the released recipe, for `VideoClipTransform`."""
    train_transform = TrainClipTransform(image_size, flip_p=0.5 if config.horizontal_flip else 0.0)
    return train_transform, EvalClipTransform(image_size)


@torch.no_grad()
def evaluate(model, dataloader, accelerator: Accelerator, desc: str = "eval") -> dict[str, Any]:
    """
    Top-1 / top-5 accuracy and mean cross-entropy over a prepared dataloader. `pixel_values` of shape
    (B, T, 3, H, W) are one view per video; (B, V, T, 3, H, W) are V views whose softmax probabilities are averaged.
    Predictions are gathered with `gather_for_metrics`, so padding samples added to even out the last batch across
    processes are dropped and N processes give exactly the single-process numbers.

    Batches from transforms with `skip_undecodable=True` mark undecodable videos (`decoded`, `skipped_videos`, see
    `VideoClassificationCollator`): they are left out of the metrics, counted in `num_skipped` and listed (path ->
    reason) in `skipped_videos` when there are any. `num_samples` counts the videos that count.
    """
    model.eval()
    all_scores, all_labels, all_losses, all_decoded = [], [], [], []
    undecodable: dict[str, str] = {}  # this process's
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        decoded = batch.get("decoded")
        if decoded is None:
            decoded = torch.ones_like(labels, dtype=torch.bool)
        undecodable.update(batch.get("skipped_videos", {}))
        # Undecodable videos are scored too (zeros) and dropped after the gather: every process runs the same
        # forward passes (collectives under DDP / FSDP) and gathers as many rows as it has items.
        scores, losses = _scores_and_losses(model, pixel_values, labels)
        scores, labels, losses, decoded = accelerator.gather_for_metrics((scores, labels, losses, decoded.long()))
        all_scores.append(scores.cpu())
        all_labels.append(labels.cpu())
        all_losses.append(losses.cpu())
        all_decoded.append(decoded.cpu().bool())
    decoded = torch.cat(all_decoded)
    scores, labels, losses = torch.cat(all_scores)[decoded], torch.cat(all_labels)[decoded], torch.cat(all_losses)
    metrics: dict[str, Any] = top_k_accuracy(scores, labels)
    metrics["loss"] = losses[decoded].mean().item()
    metrics["num_samples"] = int(decoded.sum())
    metrics["num_skipped"] = int((~decoded).sum())
    if metrics["num_skipped"]:  # the same decision on every process: the counts were gathered
        metrics["skipped_videos"] = dict(sorted(gather_object(list(undecodable.items()))))
    return metrics


def _scores_and_losses(model, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores (N, K) and per-video losses (N,); several views (N, V, T, C, H, W) average their probabilities."""
    if pixel_values.ndim == 6:  # (N, V, T, C, H, W): several views per video
        probabilities = view_probabilities(model, pixel_values)  # (N, K)
        return probabilities, F.nll_loss(probabilities.clamp_min(1e-12).log(), labels, reduction="none")
    logits = model(pixel_values=pixel_values).logits.float()
    return logits, F.cross_entropy(logits, labels, reduction="none")


# ------------------------------------------------------------------------------------------------------ checkpoints
_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")
_UNFINISHED_SUFFIXES = (".incomplete", ".deleting")  # a checkpoint being written / being removed


def _checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first. A folder with any other name (being written or removed) is not one."""
    numbered = []
    for path in checkpoints_dir.glob("checkpoint_*"):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir():
            numbered.append((int(match.group(1)), path))
    return [path for _, path in sorted(numbered)]


def _latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    checkpoints = _checkpoints(checkpoints_dir)
    return checkpoints[-1] if checkpoints else None


def _save_checkpoint(accelerator: Accelerator, checkpoints_dir: Path, total_limit: int | None) -> Path:
    """
    `accelerator.save_state` as `checkpoints_dir/checkpoint_<i>`, atomically. The state goes into
    `checkpoint_<i>.incomplete`, is flushed to disk and renamed; only then are checkpoints beyond `total_limit` removed
    (renamed `.deleting` first). A run killed at any moment, mid-save included, thus leaves its latest complete
    checkpoint under a `checkpoint_<i>` name and nothing partial under such a name. (accelerate's own naming writes in
    place and prunes before writing.) Assumes the folder is shared by all processes, as `save_state` does.
    """
    final = checkpoints_dir / f"checkpoint_{accelerator.save_iteration}"
    if final.exists():  # checked on every process, before any of them waits for the others
        raise FileExistsError(
            f"{final} already exists: {checkpoints_dir} holds checkpoints of another run. Continue that run with "
            "resume=True (--resume), or use a new output_dir."
        )
    incomplete = final.with_name(final.name + _UNFINISHED_SUFFIXES[0])
    if accelerator.is_main_process:
        _remove_unfinished_checkpoints(checkpoints_dir)  # left by a run killed while saving or pruning
        incomplete.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(incomplete))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _flush_to_disk(incomplete)
        incomplete.rename(final)
        _flush_to_disk(checkpoints_dir)
        if total_limit is not None:
            for old in _checkpoints(checkpoints_dir)[:-total_limit]:
                doomed = old.with_name(old.name + _UNFINISHED_SUFFIXES[1])
                old.rename(doomed)
                shutil.rmtree(doomed)
    accelerator.wait_for_everyone()
    return final


def _remove_unfinished_checkpoints(checkpoints_dir: Path) -> None:
    for path in checkpoints_dir.glob("checkpoint_*"):
        if path.name.endswith(_UNFINISHED_SUFFIXES):
            shutil.rmtree(path, ignore_errors=True)


def _flush_to_disk(folder: Path) -> None:
    """fsync the files in `folder` and the folder itself, so a rename after this cannot outlive the data it names
    (a killed process loses nothing already written; a power cut can)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as file:
                os.fsync(file.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_atomically(path: Path, write: Any) -> None:
    """`write(temporary_path)`, then rename it to `path`: readers see the old file or the complete new one."""
    temporary = path.with_name(path.name + _UNFINISHED_SUFFIXES[0])
    write(temporary)
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _hyperparameters(config: TrainingConfig, accelerator: Accelerator) -> dict[str, Any]:
    return {
        "epochs": config.epochs,
        "warmup_epochs": config.warmup_epochs,
        "frames": config.num_frames,
        "batch size per process": config.batch_size,
        "processes": accelerator.num_processes,
        "gradient accumulation": config.gradient_accumulation_steps,
        "total batch size": config.batch_size * accelerator.num_processes * config.gradient_accumulation_steps,
        "optimizer": f"AdamW (betas {config.adam_betas}, eps {config.adam_epsilon})",
        "lr: alignment (message_*)": config.alignment_learning_rate,
        "lr: temporal skip": config.base_learning_rate * config.temporal_skip_lr_scale,
        "lr: MIT": config.mit_learning_rate,
        "lr: head": config.head_learning_rate,
        "lr: base": config.base_learning_rate,
        "weight decay (alignment / others)": f"{config.alignment_weight_decay} / {config.weight_decay}",
        "schedule": f"cosine to {config.min_lr_ratio} x peak after linear warm-up",
        "label smoothing": config.label_smoothing,
        "mixup / cutmix alpha, switch prob": (
            f"{config.mixup_alpha} / {config.cutmix_alpha}, {config.mixup_switch_prob}"
        ),
        "alignment jitter (align decay from epoch)": f"{config.jitter_delta} ({config.align_decay_start_epoch})",
        "mixed precision": config.mixed_precision,
        "frozen CLIP backbone": config.freeze_backbone,
        "seed": config.seed,
    }


def _tracker_config(config: TrainingConfig) -> dict[str, Any]:
    values = asdict(config)
    values.pop("log_with")
    values.pop("hub_token")
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in values.items()}


# ------------------------------------------------------------------------------------------------------ the loop
def train(config: TrainingConfig) -> TrainingResult:
    """Fine-tune ILA as configured; see the module docstring. Returns a `TrainingResult`."""
    started = time.time()
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.log_with,
        project_config=ProjectConfiguration(project_dir=str(output_dir)),  # checkpoints: see `_save_checkpoint`
        # Every process draws the same shuffled order for an epoch from (seed, epoch): resumable and in step.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    set_seed(config.seed)
    if config.export == "best" and accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        raise ValueError(
            f"export='best' reloads the best epoch's full weights into the model, which {accelerator.distributed_type} "
            "shards; use export='last' (--export last) with FSDP or DeepSpeed."
        )

    # Data: lazily decoded clips; training randomness is a function of (seed, epoch, video).
    train_dataset = build_dataset(config.train_data, label_names=config.label_names, video_root=config.video_root)
    label_names = train_dataset.features["label"].names
    validation_dataset = None
    if config.validation_data:
        validation_dataset = build_dataset(
            config.validation_data, label_names=label_names, video_root=config.video_root
        )

    model = build_model(config, label_names)
    video_processor = build_video_processor(model)  # exported with the model; runs the final evaluation
    train_clip_transform, eval_clip_transform = build_clip_transforms(config, model.config.image_size)
    train_transform = VideoClipTransform(
        train_clip_transform, config.num_frames, training=True, seed=config.seed, skip_undecodable=True
    )
    train_dataset = train_dataset.with_transform(train_transform)
    mixup = None
    if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
        mixup = MixupCutmix(
            len(label_names),
            mixup_alpha=config.mixup_alpha,
            cutmix_alpha=config.cutmix_alpha,
            switch_prob=config.mixup_switch_prob,
            label_smoothing=config.label_smoothing,
        )
    train_loader = DataLoader(
        train_dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=VideoClassificationCollator(mixup, config.label_smoothing, len(label_names)),
        num_workers=config.num_workers,
        # The loader's own seed draw comes from this generator, not the global RNG that dropout uses.
        generator=torch.Generator().manual_seed(config.seed),
        drop_last=False,
    )
    validation_loader = None
    if validation_dataset is not None:
        eval_transform = VideoClipTransform(
            eval_clip_transform, config.num_frames, training=False, seed=config.seed, skip_undecodable=True
        )
        validation_loader = DataLoader(
            validation_dataset.with_transform(eval_transform),
            batch_size=config.eval_batch_size or config.batch_size,
            collate_fn=VideoClassificationCollator(),
            num_workers=config.num_workers,
        )

    optimizer = build_optimizer(model, config)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if validation_loader is not None:
        validation_loader = accelerator.prepare(validation_loader)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    # Not passed to `prepare`: accelerate would step it once per process per step. It steps once per optimizer step.
    scheduler = build_scheduler(
        optimizer, round(config.warmup_epochs * steps_per_epoch), total_steps, config.min_lr_ratio
    )
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(scheduler, progress)

    checkpoints_dir = output_dir / "checkpoints"
    latest = _latest_checkpoint(checkpoints_dir)
    if not config.resume and latest is not None:
        raise FileExistsError(
            f"{checkpoints_dir} holds checkpoints of an earlier run ({latest.name}); continue it with resume=True "
            "(--resume), or use a new output_dir."
        )
    if config.resume:
        if latest is None:
            logger.warning(f"resume=True but {checkpoints_dir} holds no checkpoint; starting from scratch.")
        else:
            accelerator.load_state(str(latest))
            # accelerate does not advance its checkpoint counter on load; the next save must not reuse a name.
            accelerator.project_configuration.iteration = int(latest.name.split("_")[-1]) + 1
            logger.info(
                f"Resumed from {latest} at epoch {progress.epoch}, step {progress.global_step}.", main_process_only=True
            )

    if config.log_with:
        accelerator.init_trackers(config.project_name, config=_tracker_config(config))

    unwrapped = accelerator.unwrap_model(model)
    progress_bar = tqdm(
        total=total_steps, initial=progress.global_step, desc="train", disable=not accelerator.is_local_main_process
    )
    running = {"loss": 0.0, "classification_loss": 0.0, "alignment_loss": 0.0, "batches": 0.0}  # this process's
    window = _StepWindow(model)
    stopped_early = False
    while progress.epoch < config.epochs and not stopped_early:
        epoch = progress.epoch
        delta = jitter_delta(epoch, config.jitter_delta, config.align_decay_start_epoch)
        unwrapped.set_jitter_delta(delta)
        train_transform.set_epoch(epoch)
        train_loader.set_epoch(epoch)
        batches = train_loader
        if progress.batches_in_epoch:  # resuming inside an epoch: the same order, minus what was done
            batches = accelerator.skip_first_batches(train_loader, progress.batches_in_epoch)

        model.train()
        for batch in batches:
            window.undecodable.update(batch.pop("skipped_videos", {}))
            has_videos = batch["labels"].shape[0] > 0  # every video of this micro-batch may have been undecodable
            if accelerator.num_processes > 1:
                # Under DDP / FSDP a forward pass is a collective too (buffer broadcast, parameter all-gather): a
                # micro-batch is trained on every process or on none.
                everywhere = accelerator.gather(torch.tensor([int(has_videos)], device=accelerator.device))
                if has_videos and not everywhere.all():
                    logger.warning(
                        f"Left out a micro-batch of {batch['labels'].shape[0]} video(s) in epoch {epoch}: another "
                        "process had no decodable video in its own."
                    )
                has_videos = bool(everywhere.all())
            window.start_micro_batch()
            with accelerator.accumulate(model):
                outputs = model(**batch) if has_videos else None
                if has_videos:
                    window.add_loss(outputs.loss)
                if not accelerator.sync_gradients:
                    if has_videos:
                        accelerator.backward(outputs.loss)
                else:
                    # Decided before the last backward, identically on every process: a process leaving out the
                    # backward alone would leave the others waiting in the gradient all-reduce.
                    verdict = window.agree(accelerator, has_videos)
                    if verdict.update:
                        accelerator.backward(outputs.loss)
                        if config.max_grad_norm:
                            accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                        optimizer.step()
                    optimizer.zero_grad(set_to_none=True)  # a skipped step drops the window's gradients
            progress.batches_in_epoch += 1
            if has_videos:  # tensors: no device sync per batch; non-finite losses stay out of the averages
                finite = torch.isfinite(outputs.loss.detach())
                for name in ("loss", "classification_loss", "alignment_loss"):
                    running[name] += torch.where(finite, outputs[name].detach().float(), 0.0)
                running["batches"] += finite.float()
            if not accelerator.sync_gradients:
                continue

            # One optimizer step done, or skipped on every process alike.
            step_learning_rates = {f"lr/{group['name']}": group["lr"] for group in optimizer.param_groups}
            progress.global_step += 1
            progress_bar.update(1)
            _record_step_faults(progress, verdict, config, len(train_dataset), checkpoints_dir)
            if verdict.update:
                progress.consecutive_nonfinite_steps = 0
                if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the step did not happen
                    scheduler.step()
            if progress.global_step % config.log_every_steps == 0 or progress.global_step == total_steps:
                averaged = max(float(running["batches"]), 1.0)
                logs = {f"train/{key}": float(value) / averaged for key, value in running.items() if key != "batches"}
                logs.update(step_learning_rates)
                logs.update(
                    {
                        "train/epoch": epoch,
                        "train/jitter_delta": delta,
                        "train/nonfinite_loss_steps": len(progress.nonfinite_loss_steps),
                        "train/undecodable_videos": len(progress.undecodable_in_epoch),
                    }
                )
                progress_bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
                if config.log_with:
                    accelerator.log(logs, step=progress.global_step)
                running = dict.fromkeys(running, 0.0)
            stopped_early = bool(config.stop_after_steps) and progress.global_step >= config.stop_after_steps
            checkpoint_due = (
                bool(config.checkpoint_every_steps) and progress.global_step % config.checkpoint_every_steps == 0
            )
            if checkpoint_due or stopped_early:  # a planned stop saves too: resume continues from this step
                _save_checkpoint(accelerator, checkpoints_dir, config.checkpoints_total_limit)
            if stopped_early:
                break
        if stopped_early:
            break

        progress.epoch, progress.batches_in_epoch, progress.undecodable_in_epoch = epoch + 1, 0, {}
        if validation_loader is not None and (
            (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs
        ):
            metrics = evaluate(model, validation_loader, accelerator, desc=f"eval epoch {epoch}")
            _record_undecodable(progress, metrics, "validation", len(validation_dataset), config)
            progress.history.append({"epoch": epoch, **metrics})
            accelerator.print(
                f"epoch {epoch}: top1 {metrics['top1']:.4f} top5 {metrics['top5']:.4f} loss {metrics['loss']:.4f}"
            )
            if config.log_with:
                accelerator.log(
                    {f"eval/{key}": value for key, value in _numbers(metrics).items()}, step=progress.global_step
                )
            if metrics["top1"] > progress.best_top1:
                progress.best_top1, progress.best_epoch = metrics["top1"], epoch
                if config.export == "best":
                    _save_best_weights(accelerator, model, output_dir)
        if config.checkpoint_every_epochs and progress.epoch % config.checkpoint_every_epochs == 0:
            _save_checkpoint(accelerator, checkpoints_dir, config.checkpoints_total_limit)
    progress_bar.close()

    if stopped_early:
        accelerator.wait_for_everyone()
        _finish_trackers(accelerator)
        return TrainingResult(
            metrics={},
            output_dir=str(output_dir),
            model_dir=None,
            global_step=progress.global_step,
            epoch=progress.epoch,
            stopped_early=True,
            history=list(progress.history),
            **_fault_report(progress),
        )

    # Final model: the best epoch's weights (if validated) or the last ones; evaluated, exported, pushed.
    accelerator.wait_for_everyone()
    if config.export == "best" and progress.best_epoch >= 0:
        _load_best_weights(unwrapped, output_dir)
    final_metrics: dict[str, float] = {}
    if validation_dataset is not None:
        final_loader = _final_evaluation_loader(config, validation_dataset, video_processor)
        final_metrics = evaluate(model, accelerator.prepare(final_loader), accelerator, desc="final eval")
        _record_undecodable(progress, final_metrics, "validation", len(validation_dataset), config)
        if config.log_with:
            logs = {f"final/{key}": value for key, value in _numbers(final_metrics).items()}
            accelerator.log(logs, step=progress.global_step)

    model_dir = output_dir / "model"
    upload = None
    state_dict = accelerator.get_state_dict(model)  # collective: gathers FSDP / DeepSpeed shards
    if accelerator.is_main_process:
        metrics_table = {
            f"validation {key} ({_protocol(config)})": value for key, value in _numbers(final_metrics).items()
        }
        if progress.best_epoch >= 0:
            metrics_table["best epoch (single view)"] = progress.best_epoch
        card = model_card_context(
            unwrapped,
            model_id=config.push_to_hub or str(model_dir.resolve()),
            model_name=config.push_to_hub.rsplit("/", 1)[-1] if config.push_to_hub else output_dir.resolve().name,
            base_model=config.clip_model or config.model_name_or_path,
            train_data=config.train_data,
            num_train_videos=len(train_dataset),
            validation_data=config.validation_data or "none",
            num_validation_videos=len(validation_dataset) if validation_dataset is not None else 0,
            hyperparameters=_hyperparameters(config, accelerator),
            metrics=metrics_table,
            compute={
                "device": f"{accelerator.num_processes} x {accelerator.device.type}",
                "optimizer steps": progress.global_step,
                "epochs": progress.epoch,
                "wall-clock time of this run (s)": round(time.time() - started, 1),
            },
        )
        export_model(unwrapped, model_dir, video_processor=video_processor, card_context=card, state_dict=state_dict)
        summary = {
            "final": final_metrics,
            "history": progress.history,
            "global_step": progress.global_step,
            **_fault_report(progress),
        }
        _write_atomically(output_dir / "metrics.json", lambda path: path.write_text(json.dumps(summary, indent=2)))
        if config.push_to_hub:
            upload = push_to_hub_in_background(
                model_dir,
                config.push_to_hub,
                token=config.hub_token,
                private=config.hub_private,
                commit_message=f"ILA fine-tuned for {progress.epoch} epochs ({progress.global_step} steps)",
            )
    accelerator.wait_for_everyone()
    _finish_trackers(accelerator)
    hub_status = upload.result(timeout=config.hub_upload_timeout) if upload is not None else None
    return TrainingResult(
        metrics=final_metrics,
        output_dir=str(output_dir),
        model_dir=str(model_dir),
        global_step=progress.global_step,
        epoch=progress.epoch,
        history=list(progress.history),
        hub_upload=hub_status,
        **_fault_report(progress),
    )


class _StepVerdict(typing.NamedTuple):
    """What every process agreed about one optimizer step."""

    update: bool  # apply it (False: skipped, gradients dropped)
    nonfinite: bool  # some process saw a NaN/inf loss in the step's micro-batches
    without_data: bool  # some process had no decodable video in the step's last micro-batch
    undecodable: dict[str, str]  # path -> reason, videos left out of the step on any process


class _StepWindow:
    """
    What this process saw in the micro-batches of the current optimizer step (the accumulation window), and the
    model's buffers as they were before it: forward passes update BatchNorm's running statistics, which a skipped
    step must not keep (a NaN there would outlive the skipped update).
    """

    def __init__(self, model: torch.nn.Module):
        self.buffers = list(model.buffers())
        self.saved_buffers: list[torch.Tensor] | None = None
        self.nonfinite: torch.Tensor | None = None
        self.undecodable: dict[str, str] = {}

    def start_micro_batch(self) -> None:
        if self.saved_buffers is None:  # the window's first micro-batch
            self.saved_buffers = [buffer.detach().clone() for buffer in self.buffers]

    def add_loss(self, loss: torch.Tensor) -> None:
        nonfinite = ~torch.isfinite(loss.detach())  # stays on the device: no sync per micro-batch
        self.nonfinite = nonfinite if self.nonfinite is None else self.nonfinite | nonfinite

    def agree(self, accelerator: Accelerator, has_videos: bool) -> _StepVerdict:
        """One gather per optimizer step makes every process take the same decision; then the window starts over."""
        nonfinite = self.nonfinite if self.nonfinite is not None else torch.tensor(False, device=accelerator.device)
        local = torch.stack(
            [
                nonfinite.float(),
                torch.tensor(float(not has_videos), device=nonfinite.device),
                torch.tensor(float(len(self.undecodable)), device=nonfinite.device),
            ]
        )
        flags = accelerator.gather(local[None]).cpu()  # (processes, 3)
        any_nonfinite, any_without_data = bool(flags[:, 0].any()), bool(flags[:, 1].any())
        undecodable = dict(gather_object(list(self.undecodable.items()))) if flags[:, 2].any() else {}
        update = not (any_nonfinite or any_without_data)
        if not update and self.saved_buffers is not None:
            with torch.no_grad():
                for buffer, saved in zip(self.buffers, self.saved_buffers):
                    buffer.copy_(saved)
        self.nonfinite, self.undecodable, self.saved_buffers = None, {}, None
        return _StepVerdict(update, any_nonfinite, any_without_data, undecodable)


def _record_step_faults(
    progress: TrainingProgress, verdict: _StepVerdict, config: TrainingConfig, num_videos: int, checkpoints_dir: Path
) -> None:
    """Count, log and limit what went wrong in the optimizer step just taken (or skipped, with the buffers restored)."""
    step = progress.global_step
    if verdict.undecodable:
        progress.undecodable_in_epoch.update(verdict.undecodable)
        _record_undecodable(
            progress,
            {"skipped_videos": verdict.undecodable},
            "training",
            num_videos,
            config,
            counted=progress.undecodable_in_epoch,
        )
    if verdict.nonfinite:
        progress.nonfinite_loss_steps.append(step)
        progress.consecutive_nonfinite_steps += 1
        logger.warning(
            f"Step {step}: the loss was NaN or infinite; the step was skipped (no update, gradients dropped). "
            f"{progress.consecutive_nonfinite_steps} such step(s) in a row, {len(progress.nonfinite_loss_steps)} in "
            "all.",
            main_process_only=True,
        )
        limit = config.max_consecutive_nonfinite_steps
        if limit is not None and progress.consecutive_nonfinite_steps >= limit:
            latest = _latest_checkpoint(checkpoints_dir)
            raise NonFiniteLossError(
                f"The loss was NaN or infinite for {limit} optimizer steps in a row (steps "
                f"{progress.nonfinite_loss_steps[-limit:]}), so training stopped (max_consecutive_nonfinite_steps="
                f"{limit}). Skipped steps change no weight; the latest checkpoint is "
                f"{latest if latest is not None else 'none (none was written yet)'}. Lower the learning rates, set "
                "max_grad_norm, check the data, or try bf16 instead of fp16; then resume=True continues from it."
            )
    elif verdict.without_data:
        progress.steps_without_data.append(step)
        logger.warning(
            f"Step {step} was skipped: a process had no decodable video in the step's last micro-batch.",
            main_process_only=True,
        )


def _record_undecodable(
    progress: TrainingProgress,
    metrics: dict[str, Any],
    split: str,
    num_videos: int,
    config: TrainingConfig,
    counted: dict[str, str] | None = None,
) -> None:
    """Log the videos a step or an evaluation skipped and stop if `counted` (default: those) exceeds the limit."""
    skipped = metrics.get("skipped_videos", {})
    if not skipped:
        return
    progress.undecodable_videos.update(skipped)
    logger.warning(
        f"Skipped {len(skipped)} undecodable {split} video(s):\n"
        + "\n".join(f"  {reason}" for reason in skipped.values()),
        main_process_only=True,
    )
    counted = skipped if counted is None else counted
    allowed = config.max_bad_video_fraction * num_videos
    if len(counted) > allowed:
        listed = "\n".join(f"  {reason}" for reason in list(counted.values())[:20])
        raise UndecodableDataError(
            f"{len(counted)} of the {num_videos} {split} videos could not be decoded, more than "
            f"max_bad_video_fraction={config.max_bad_video_fraction} allows ({allowed:g}); training stopped. Repair or "
            f"remove them (or raise max_bad_video_fraction):\n{listed}" + ("\n  ..." if len(counted) > 20 else "")
        )


def _fault_report(progress: TrainingProgress) -> dict[str, Any]:
    return {
        "undecodable_videos": dict(progress.undecodable_videos),
        "nonfinite_loss_steps": list(progress.nonfinite_loss_steps),
        "steps_without_data": list(progress.steps_without_data),
    }


def _numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics dict (what trackers and the model card take)."""
    return {key: value for key, value in metrics.items() if isinstance(value, (int, float))}


def _finish_trackers(accelerator: Accelerator) -> None:
    # Not `accelerator.end_training()`: that also destroys the process group, which belongs to the process (the
    # launcher), not to this call; `train` may run again in the same processes (e.g. resuming, or a second model).
    for tracker in accelerator.trackers:
        tracker.finish()


def _protocol(config: TrainingConfig) -> str:
    return f"{config.final_num_clips} clip(s) x {config.final_num_crops} crop(s)"


def _save_best_weights(accelerator: Accelerator, model, output_dir: Path) -> None:
    from safetensors.torch import save_file

    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        (output_dir / "best").mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.contiguous() for name, tensor in state_dict.items()}
        _write_atomically(output_dir / "best" / "model.safetensors", lambda path: save_file(tensors, path))
    accelerator.wait_for_everyone()


def _load_best_weights(model, output_dir: Path) -> None:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(output_dir / "best" / "model.safetensors"))


def _final_evaluation_loader(config: TrainingConfig, validation_dataset, video_processor) -> DataLoader:
    """Validation clips made by the exported video processor itself, with the configured views per video."""
    transform = VideoProcessorTransform(
        video_processor, skip_undecodable=True, num_clips=config.final_num_clips, num_crops=config.final_num_crops
    )
    return DataLoader(
        validation_dataset.with_transform(transform),
        batch_size=config.eval_batch_size or config.batch_size,
        collate_fn=VideoClassificationCollator(),
        num_workers=config.num_workers,
    )


__all__ = [
    "NonFiniteLossError",
    "TrainingConfig",
    "TrainingProgress",
    "TrainingResult",
    "UndecodableDataError",
    "add_training_arguments",
    "build_model",
    "build_optimizer",
    "build_scheduler",
    "config_from_args",
    "evaluate",
    "jitter_delta",
    "lr_multiplier",
    "parameter_group_name",
    "top_k_accuracy",
    "train",
]
