"""What a training run is told (`TrainingConfig`) and what it returns (`TrainingResult`). Imports neither datasets
nor accelerate, so that building a config or its command line (`ila-hf train`) stays light.

Each field's metadata holds its command-line help (and `choices` / `metavar` where useful): `ila-hf train` has one
`--option` per field (see `ila_hf.arguments`)."""

from dataclasses import dataclass, field
from typing import Any

from ..arguments import option


MIXED_PRECISION_CHOICES = ("no", "fp16", "bf16")
ARCHITECTURES = ("ila", "frame_averaging")


@dataclass
class TrainingConfig:
    """
    Everything a training run needs. Defaults are the released ILA recipe (per-GPU batch 8; the release reached a
    total batch of 256 with gradient accumulation across its GPUs).
    """

    # Data: any `ila_hf.data.build_dataset` source
    train_data: str = field(
        metadata={
            "help": "list file (`path label_id` lines, needs --label-names), class folders, a save_to_disk folder, a "
            "folder or file load_dataset reads (videofolder, parquet, WebDataset tar) or a Hub dataset id"
        }
    )
    validation_data: str | None = option(
        None,
        "the same kinds of source as --train-data, evaluated every epoch and at the end (default with "
        "--validation-split: --train-data's split of that name)",
    )
    label_names: str | None = option(
        None, "`id,name` CSV or one name per line (required with list files; default for folders: the folder names)"
    )
    video_root: str | None = option(None, "folder that list-file paths are relative to (default: the list's folder)")
    video_column: str | None = option(None, "default: the Video feature, or a column named video/path/video_path/file")
    label_column: str | None = option(None, "default: the ClassLabel feature, or a column named label/labels/cls")
    dataset_config: str | None = option(None, "config name of a Hub dataset")
    split: str | None = option(None, "training split (needed when the source has several)")
    validation_split: str | None = option(None, "validation split (needed when the source has several)")
    streaming: bool = option(
        False, "stream the data instead of materialising it (parquet, WebDataset tar, Hub datasets)"
    )
    shuffle_buffer_size: int = option(
        256, "streamed training examples shuffled through; each data-loader worker holds them encoded"
    )

    # Model: a CLIP checkpoint to initialise from, or an ILA checkpoint to continue from.
    clip_model: str | None = option(None, "CLIP checkpoint (folder or Hub id) to initialise ILA from")
    model_name_or_path: str | None = option(
        None, "ILA model (folder or Hub id) to fine-tune instead of --clip-model; other classes get a new head"
    )
    num_frames: int = option(8, "frames per clip")
    head: str = option(
        "linear",
        "linear (SSv2 recipe) or text (K400 recipe: class names embedded by CLIP's text tower)",
        choices=("linear", "text"),
    )
    clip_text_model: str | None = option(None, "text tower for --head text (default: --clip-model)")
    interaction_variant: str = option(
        "depthwise", "depthwise (K400 recipe) or conv (SSv2 recipe)", choices=("depthwise", "conv")
    )
    freeze_backbone: bool = option(True, "keep the CLIP weights frozen, as released")
    drop_path_rate: float = option(0.0, "stochastic depth of the encoder layers")
    # None: ILAVideoConfig's default (the released 256 channels, loss weight 1.0, dropout 0.5)
    interaction_channels: int | None = option(None, "channels of the interaction block (default: the released 256)")
    alignment_loss_weight: float | None = option(None, "weight of the alignment loss (default: the released 1.0)")
    classifier_dropout: float | None = option(None, "dropout before the classifier (default: the released 0.5)")
    architecture: str = option(
        "ila",
        "ila, or frame_averaging: CLIP frame averaging on --clip-model, the baseline without temporal modelling "
        "(trained and evaluated by the same loop, not exported)",
        choices=ARCHITECTURES,
    )

    # Optimisation: AdamW, cosine schedule with linear warm-up, learning rate per parameter group.
    epochs: int = option(30, "epochs; the learning-rate schedule spans them all")
    max_steps: int | None = option(
        None, "optimizer steps in all, instead of --epochs (needed with --streaming when the dataset does not state its size)"
    )
    warmup_epochs: float = option(5.0, "epochs of linear learning-rate warm-up")
    batch_size: int = option(8, "clips per process and micro-batch")
    eval_batch_size: int | None = option(None, "clips per process in evaluation (default: --batch-size)")
    gradient_accumulation_steps: int = option(1, "micro-batches per optimizer step")
    base_learning_rate: float = option(8e-6, "CLIP backbone (when trained) and anything without its own group")
    alignment_learning_rate: float = option(
        5e-4, "message_fc / message_ln / alignment modules (message_* in the release)"
    )
    alignment_weight_decay: float = option(1e-2, "weight decay of the alignment modules")
    temporal_skip_lr_scale: float = option(
        10.0, "learning rate of aligned_tokens_proj / interaction_tokens_proj, as a multiple of the base"
    )
    mit_learning_rate: float = option(4e-4, "multi-frame integration transformer")
    head_learning_rate: float = option(4e-4, "classifier / prompt generator (as the MIT in the release)")
    weight_decay: float = option(1e-3, "weight decay of every other group (never of biases and 1-D parameters)")
    adam_betas: tuple[float, float] = option((0.9, 0.98), "AdamW betas", metavar=("BETA1", "BETA2"))
    adam_epsilon: float = option(1e-8, "AdamW epsilon")
    min_lr_ratio: float = option(0.01, "final learning rate / peak learning rate")
    max_grad_norm: float | None = option(None, "clip gradients to this norm (default: no clipping)")
    label_smoothing: float = option(0.1, "label smoothing of the training targets")
    mixup_alpha: float = option(0.8, "Mixup Beta parameter (0: no Mixup)")
    cutmix_alpha: float = option(1.0, "CutMix Beta parameter (0: no CutMix)")
    mixup_switch_prob: float = option(0.5, "probability of CutMix rather than Mixup for a batch, when both are on")
    jitter_delta: float = option(0.2, "initial jitter of the alignment mask (halved by the align decay)")
    align_decay_start_epoch: int = option(
        30, "0-based epoch at whose start the jitter first halves, and again at every later one"
    )
    augment: bool = option(
        True, "the released training augmentation (--no-augment: training clips are preprocessed as evaluation clips)"
    )
    horizontal_flip: bool = option(True, "random flips in the augmentation (turn off where direction is the label)")
    mixed_precision: str = option(
        "no", "no, fp16 (the release's AMP) or bf16; accelerate allows one per process", choices=MIXED_PRECISION_CHOICES
    )
    activation_checkpointing: bool = option(False, "recompute each encoder layer in the backward pass")
    seed: int = option(0, "seed of initialisation, data order, clips and augmentation")
    cpu: bool = option(False, "use the CPU even where a GPU is available")
    num_workers: int = option(4, "data-loading worker processes per process")

    # Evaluation
    eval_every_epochs: int = option(1, "validate every this many epochs")
    final_num_clips: int = option(1, "temporal views of the final evaluation (the release reports 4)")
    final_num_crops: int = option(1, "spatial crops of the final evaluation (the release reports 3)")

    # Checkpoints, logging, export
    output_dir: str = option("ila-output", "checkpoints, metrics and the exported model go here")
    checkpoint_every_steps: int | None = option(None, "save a checkpoint every this many optimizer steps")
    checkpoint_every_epochs: int | None = option(1, "save a checkpoint every this many epochs")
    checkpoints_total_limit: int | None = option(2, "checkpoints kept (older ones are deleted)")
    resume: bool = option(False, "continue from the latest checkpoint in OUTPUT_DIR/checkpoints")
    stop_after_steps: int | None = option(
        None, "end after this many optimizer steps in total, with a checkpoint; continue with --resume"
    )
    log_with: list[Any] | None = option(
        None, "accelerate trackers: names (tensorboard, wandb, ...) or, from Python, instances"
    )
    project_name: str = option("ila", "project name given to the trackers")
    log_every_steps: int = option(10, "log the training loss every this many optimizer steps")
    export: str = option(
        "best", "best (highest validation top-1) or last: the weights exported at the end", choices=("best", "last")
    )
    push_to_hub: str | None = option(
        None, "Hub repo id to upload the exported model to (in the background)", metavar="REPO_ID"
    )
    hub_private: bool = option(False, "create the Hub repo private")
    hub_token: str | None = option(None, "Hub token (default: the logged-in user's)")
    hub_upload_timeout: float = option(600.0, "seconds to wait for the background upload at the end")

    # Faults
    max_bad_video_fraction: float = option(
        0.1, "undecodable videos a split may have (skipped and logged) before the run stops"
    )
    max_consecutive_nonfinite_steps: int | None = option(
        3, "optimizer steps in a row with a NaN/inf loss (each skipped) before the run stops"
    )

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


__all__ = [
    "ARCHITECTURES",
    "MIXED_PRECISION_CHOICES",
    "TrainingConfig",
    "TrainingResult",
]
