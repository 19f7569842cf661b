"""The end of a run: the exported `from_pretrained` folder (weights, video processor, code, model card with the run's
numbers), `metrics.json`, and the optional background upload to the Hub."""

import json
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from ..atomic_files import write_file_atomically
from ..hub import HubUpload, accuracy_results, export_model, model_card_context, push_to_hub_in_background
from .checkpoints import TrainingProgress
from .config import TrainingConfig
from .faults import fault_report


def export_run(
    accelerator: Accelerator,
    model,
    video_processor,
    config: TrainingConfig,
    progress: TrainingProgress,
    final_metrics: dict[str, Any],
    num_videos: dict[str, int],
    seconds: float,
) -> tuple[Path | None, HubUpload | None]:
    """
    Export the trained (prepared) `model` with `video_processor` to `output_dir/model` (atomically, replacing a previous
    export whole: see `export_model`) and write `metrics.json`, on the main process; then start the Hub upload of
    that complete folder when `push_to_hub` is set. `num_videos` has the "train" and "validation"
    split sizes. Every process must call it (gathering the weights is a collective). Returns (model folder, the
    running upload or None); the frame-averaging baseline writes only `metrics.json` and returns (None, None).
    """
    output_dir = Path(config.output_dir)
    if config.architecture != "ila":  # the baseline is for comparison: its numbers only
        if accelerator.is_main_process:
            write_metrics(output_dir, final_metrics, progress)
        accelerator.wait_for_everyone()
        return None, None
    model_dir = output_dir / "model"
    upload = None
    state_dict = accelerator.get_state_dict(model)  # collective: gathers FSDP / DeepSpeed shards
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        metrics_table = {
            f"validation {key} ({_protocol(config)})": value for key, value in numbers(final_metrics).items()
        }
        if progress.best_epoch >= 0:
            metrics_table["best epoch (single view)"] = progress.best_epoch
        card = model_card_context(
            unwrapped,
            model_id=config.push_to_hub or str(model_dir.resolve()),
            model_name=config.push_to_hub.rsplit("/", 1)[-1] if config.push_to_hub else output_dir.resolve().name,
            base_model=config.clip_model or config.model_name_or_path,
            train_data=config.train_data,
            num_train_videos=num_videos["train"],
            validation_data=config.validation_data or "none",
            num_validation_videos=num_videos["validation"],
            hyperparameters=_hyperparameters(config, accelerator),
            metrics=metrics_table,
            eval_results=accuracy_results(final_metrics, config.validation_data, _protocol(config))
            if config.validation_data
            else (),
            compute={
                "device": f"{accelerator.num_processes} x {accelerator.device.type}",
                "optimizer steps": progress.global_step,
                "epochs": progress.epoch,
                "wall-clock time of this run (s)": round(seconds, 1),
            },
        )
        exported = _unsharded(unwrapped, state_dict)
        export_model(exported, model_dir, video_processor=video_processor, card_context=card, state_dict=state_dict)
        write_metrics(output_dir, final_metrics, progress)
        if config.push_to_hub:
            upload = push_to_hub_in_background(
                model_dir,
                config.push_to_hub,
                token=config.hub_token,
                private=config.hub_private,
                commit_message=f"ILA fine-tuned for {progress.epoch} epochs ({progress.global_step} steps)",
            )
    accelerator.wait_for_everyone()
    return model_dir, upload


def _unsharded(model, state_dict: dict[str, torch.Tensor]):
    """
    `model`, or under FSDP2 a model of its own class holding the gathered `state_dict`, to export. FSDP2 changes a
    sharded model's class to one it generates (`FSDPILAForVideoClassification`, defined in torch), which
    `save_pretrained` would write into `auto_map`, copying torch's FSDP files as the model's code. The copy is built
    on the meta device and takes the gathered tensors themselves: no second copy of the weights is made.
    """
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return model
    model_class = next(cls for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))
    with torch.device("meta"):
        unsharded = model_class(model.config)
    unsharded.load_state_dict(state_dict, assign=True)
    return unsharded


def write_metrics(output_dir: Path, final_metrics: dict[str, Any], progress: TrainingProgress) -> None:
    """`output_dir/metrics.json`: the final and per-epoch metrics, the step count and the faults, atomically."""
    summary = {
        "final": final_metrics,
        "history": progress.history,
        "global_step": progress.global_step,
        **fault_report(progress),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    write_file_atomically(output_dir / "metrics.json", lambda path: path.write_text(json.dumps(summary, indent=2)))


def numbers(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics dict (what trackers and the model card take)."""
    return {key: value for key, value in metrics.items() if isinstance(value, (int, float))}


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


def _protocol(config: TrainingConfig) -> str:
    return f"{config.final_num_clips} clip(s) x {config.final_num_crops} crop(s)"



__all__ = ["export_run", "numbers", "write_metrics"]
