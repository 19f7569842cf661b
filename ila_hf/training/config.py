"""What a training run is told (`TrainingConfig`) and what it returns (`TrainingResult`), and their command-line
arguments. Imports neither datasets nor accelerate, so that building a config or a parser stays light."""

import argparse
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any


MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")
ARCHITECTURES = ("ila", "frame_averaging")


@dataclass
class TrainingConfig:
    """
    Everything a training run needs. Defaults are the released ILA recipe (per-GPU batch 8; the release reached a
    total batch of 256 with gradient accumulation across its GPUs).
    """

    # Data: any `ila_hf.data.build_dataset` source: a released-format list file (`path label_id` lines, needs
    # `label_names`), a folder per class, a `save_to_disk` folder, what `load_dataset` reads (videofolder, parquet,
    # WebDataset tar shards) or a Hub dataset id.
    train_data: str = ""
    validation_data: str | None = None  # default with `validation_split`: `train_data`'s split of that name
    label_names: str | None = None  # `id,name` CSV or one name per line; default for folders: the folder names
    video_root: str | None = None  # folder that list-file paths are relative to (default: the list's folder)
    video_column: str | None = None  # default: the `Video` feature, or a column named video/path/video_path/file
    label_column: str | None = None  # default: the `ClassLabel` feature, or a column named label/labels/cls
    dataset_config: str | None = None  # config name of a Hub dataset
    split: str | None = None  # training split (needed when the source has several)
    validation_split: str | None = None
    streaming: bool = False  # stream the data (`VideoBatchStream`) instead of materialising it
    shuffle_buffer_size: int = 256  # streamed training examples shuffled through (each worker holds them encoded)

    # Model: a CLIP checkpoint to initialise from, or an ILA checkpoint to continue from.
    clip_model: str | None = None
    model_name_or_path: str | None = None
    num_frames: int = 8
    head: str = "linear"  # "linear" (SSv2 recipe) or "text" (K400 recipe; class names embedded by CLIP's text tower)
    clip_text_model: str | None = None  # text tower for head="text" (default: clip_model)
    interaction_variant: str = "depthwise"  # "depthwise" (K400 recipe) or "conv" (SSv2 recipe)
    freeze_backbone: bool = True
    drop_path_rate: float = 0.0
    # None: ILAVideoConfig's default (the released 256 channels, loss weight 1.0, dropout 0.5)
    interaction_channels: int | None = None
    alignment_loss_weight: float | None = None
    classifier_dropout: float | None = None
    # "ila", or "frame_averaging": CLIP frame averaging on `clip_model`, the baseline without temporal modelling
    # (trained and evaluated by the same loop, not exported)
    architecture: str = "ila"

    # Optimisation: AdamW, cosine schedule with linear warm-up, learning rate per parameter group.
    epochs: int = 30
    max_steps: int | None = None  # optimizer steps in all, instead of `epochs` (needed for streams of unknown size)
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
    augment: bool = True  # the released augmentation; False: training clips are preprocessed as evaluation clips
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
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {self.architecture!r}.")
        if self.architecture == "frame_averaging" and self.clip_model is None:
            raise ValueError("architecture='frame_averaging' builds the baseline on a CLIP model: give `clip_model`.")
        if self.architecture == "frame_averaging" and self.activation_checkpointing:
            raise ValueError("activation_checkpointing applies to ILA models, not to architecture='frame_averaging'.")
        if self.export not in ("best", "last"):
            raise ValueError(f"export must be 'best' or 'last', got {self.export!r}.")
        if (self.clip_model is None) == (self.model_name_or_path is None):
            raise ValueError(
                "Give exactly one of `clip_model` (start from CLIP) and `model_name_or_path` (an ILA model)."
            )
        if not self.train_data:
            raise ValueError(
                "`train_data` is required: a list file, class folders, a dataset folder or file, or a Hub dataset id."
            )
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1 (or None to train for `epochs`), got {self.max_steps}.")
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
    # One entry per epoch: "epoch", "train_loss" and "train_top1" (means over the epoch's training clips, the loss
    # being the one optimised), and the validation metrics ("top1", "loss", ...) of the epochs validated.
    history: list[dict[str, float]] = field(default_factory=list)
    hub_upload: Any = None  # ila_hf.hub.UploadStatus when pushing
    undecodable_videos: dict[str, str] = field(default_factory=dict)  # path -> reason, training and validation
    nonfinite_loss_steps: list[int] = field(default_factory=list)  # optimizer steps skipped for a NaN/inf loss
    steps_without_data: list[int] = field(default_factory=list)  # steps skipped: a last micro-batch had no video


_ARGUMENT_HELP = {
    "train_data": "list file (`path label_id` lines), class folders, a save_to_disk folder, a folder or file "
    "load_dataset reads (videofolder, parquet, WebDataset tar) or a Hub dataset id",
    "validation_data": "the same kinds of source as --train-data, evaluated every epoch and at the end "
    "(default with --validation-split: --train-data's split of that name)",
    "video_column": "default: the Video feature, or a column named video/path/video_path/file",
    "label_column": "default: the ClassLabel feature, or a column named label/labels/cls",
    "dataset_config": "config name of a Hub dataset",
    "split": "training split (needed when the source has several)",
    "validation_split": "validation split (needed when the source has several)",
    "streaming": "stream the data instead of materialising it (parquet, WebDataset tar, Hub datasets)",
    "shuffle_buffer_size": "streamed training examples shuffled through; each data-loader worker holds them encoded",
    "max_steps": "optimizer steps in all, instead of --epochs (needed with --streaming when the dataset does not state "
    "its size)",
    "label_names": "`id,name` CSV or one name per line (required with list files)",
    "clip_model": "CLIP checkpoint (folder or Hub id) to initialise ILA from",
    "model_name_or_path": "ILA checkpoint to continue fine-tuning",
    "resume": "continue from the latest checkpoint in OUTPUT_DIR/checkpoints",
    "push_to_hub": "repo id to upload the exported model to (in the background)",
    "log_with": "accelerate trackers, e.g. tensorboard wandb",
    "stop_after_steps": "end after this many optimizer steps in total, with a checkpoint; continue with --resume",
    "max_bad_video_fraction": "undecodable videos (skipped and logged) a split may have before the run stops",
    "architecture": "ila, or frame_averaging: the CLIP frame-averaging baseline (not exported)",
    "augment": "the released training augmentation (--no-augment: evaluation preprocessing for training clips too)",
    "max_consecutive_nonfinite_steps": "stop after this many optimizer steps in a row with a NaN/inf loss (skipped)",
}


_ARGUMENT_CHOICES = {
    "head": ("linear", "text"),
    "interaction_variant": ("depthwise", "conv"),
    "mixed_precision": MIXED_PRECISION_CHOICES,
    "architecture": ARCHITECTURES,
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


__all__ = [
    "ARCHITECTURES",
    "MIXED_PRECISION_CHOICES",
    "TrainingConfig",
    "TrainingResult",
    "add_training_arguments",
    "config_from_args",
]
