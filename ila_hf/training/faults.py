"""Faults during training: the per-step agreement of all processes on what to do with a step (skip it for a NaN or
infinite loss, or for a micro-batch without a decodable video), and the counting, logging and limits of undecodable
videos and non-finite losses."""

import logging
import typing
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from .checkpoints import TrainingProgress, latest_checkpoint
from .config import TrainingConfig


logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss was NaN or infinite for `max_consecutive_nonfinite_steps` optimizer steps in a row."""


class UndecodableDataError(RuntimeError):
    """More than `max_bad_video_fraction` of a split's videos could not be decoded."""


class StepVerdict(typing.NamedTuple):
    """What every process agreed about one optimizer step."""

    update: bool  # apply it (False: skipped, gradients dropped)
    nonfinite: bool  # some process saw a NaN/inf loss in the step's micro-batches
    without_data: bool  # some process had no decodable video in the step's last micro-batch
    undecodable: dict[str, str]  # path -> reason, videos left out of the step on any process


class StepWindow:
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

    def agree(self, accelerator: Accelerator, has_videos: bool) -> StepVerdict:
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
        return StepVerdict(update, any_nonfinite, any_without_data, undecodable)


def record_step_faults(
    accelerator: Accelerator,
    progress: TrainingProgress,
    verdict: StepVerdict,
    config: TrainingConfig,
    num_videos: int | None,
    checkpoints_dir: Path,
) -> None:
    """Count, log and limit what went wrong in the optimizer step just taken (or skipped, with the buffers restored)."""
    step = progress.global_step
    if verdict.undecodable:
        progress.undecodable_in_epoch.update(verdict.undecodable)
        record_undecodable(
            accelerator,
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
        if accelerator.is_main_process:
            logger.warning(
                f"Step {step}: the loss was NaN or infinite; the step was skipped (no update, gradients dropped). "
                f"{progress.consecutive_nonfinite_steps} such step(s) in a row, {len(progress.nonfinite_loss_steps)} "
                "in all."
            )
        limit = config.max_consecutive_nonfinite_steps
        if limit is not None and progress.consecutive_nonfinite_steps >= limit:
            latest = latest_checkpoint(checkpoints_dir)
            raise NonFiniteLossError(
                f"The loss was NaN or infinite for {limit} optimizer steps in a row (steps "
                f"{progress.nonfinite_loss_steps[-limit:]}), so training stopped (max_consecutive_nonfinite_steps="
                f"{limit}). Skipped steps change no weight; the latest checkpoint is "
                f"{latest if latest is not None else 'none (none was written yet)'}. Lower the learning rates, set "
                "max_grad_norm, check the data, or try bf16 instead of fp16; then resume=True continues from it."
            )
    elif verdict.without_data:
        progress.steps_without_data.append(step)
        if accelerator.is_main_process:
            logger.warning(f"Step {step} was skipped: a process had no decodable video in the step's last micro-batch.")


def record_undecodable(
    accelerator: Accelerator,
    progress: TrainingProgress,
    metrics: dict[str, Any],
    split: str,
    num_videos: int | None,
    config: TrainingConfig,
    counted: dict[str, str] | None = None,
) -> None:
    """Log the videos a step or an evaluation skipped and stop if `counted` (default: those) exceeds the limit, a
    fraction of the split's `num_videos` (None: a stream of unknown size, which has no limit)."""
    skipped = metrics.get("skipped_videos", {})
    if not skipped:
        return
    progress.undecodable_videos.update(skipped)
    if accelerator.is_main_process:
        logger.warning(
            f"Skipped {len(skipped)} undecodable {split} video(s):\n"
            + "\n".join(f"  {reason}" for reason in skipped.values())
        )
    if num_videos is None:
        return
    counted = skipped if counted is None else counted
    allowed = config.max_bad_video_fraction * num_videos
    if len(counted) > allowed:
        listed = "\n".join(f"  {reason}" for reason in list(counted.values())[:20])
        raise UndecodableDataError(
            f"{len(counted)} of the {num_videos} {split} videos could not be decoded, more than "
            f"max_bad_video_fraction={config.max_bad_video_fraction} allows ({allowed:g}); training stopped. Repair or "
            f"remove them (or raise max_bad_video_fraction):\n{listed}" + ("\n  ..." if len(counted) > 20 else "")
        )


def fault_report(progress: TrainingProgress) -> dict[str, Any]:
    """The run's faults as `TrainingResult` and `metrics.json` report them."""
    return {
        "undecodable_videos": dict(progress.undecodable_videos),
        "nonfinite_loss_steps": list(progress.nonfinite_loss_steps),
        "steps_without_data": list(progress.steps_without_data),
    }


def micro_batch_everywhere(accelerator: Accelerator, has_videos: bool, batch_size: int, epoch: int) -> bool:
    """Whether every process has a decodable video in its current micro-batch. Under DDP / FSDP a forward pass is a
    collective too (buffer broadcast, parameter all-gather): a micro-batch is trained on every process or on none."""
    if accelerator.num_processes == 1:
        return has_videos
    everywhere = accelerator.gather(torch.tensor([int(has_videos)], device=accelerator.device))
    if has_videos and not everywhere.all():
        logger.warning(
            f"Left out a micro-batch of {batch_size} video(s) in epoch {epoch}: another process had no decodable "
            "video in its own."
        )
    return bool(everywhere.all())


__all__ = [
    "NonFiniteLossError",
    "StepVerdict",
    "StepWindow",
    "UndecodableDataError",
    "fault_report",
    "micro_batch_everywhere",
    "record_step_faults",
    "record_undecodable",
]
