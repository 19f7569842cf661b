"""Checkpoints of a training run: the loop position (`TrainingProgress`), atomic saves of accelerate's state, resuming
from the latest complete checkpoint, pruning, and the best epoch's weights."""

import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from accelerate import Accelerator


logger = logging.getLogger(__name__)


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


_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")
_UNFINISHED_SUFFIXES = (".incomplete", ".deleting")  # a checkpoint being written / being removed


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first. A folder with any other name (being written or removed) is not one."""
    numbered = []
    for path in checkpoints_dir.glob("checkpoint_*"):
        match = _CHECKPOINT_NAME.fullmatch(path.name)
        if match and path.is_dir():
            numbered.append((int(match.group(1)), path))
    return [path for _, path in sorted(numbered)]


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    checkpoints = list_checkpoints(checkpoints_dir)
    return checkpoints[-1] if checkpoints else None


def save_checkpoint(accelerator: Accelerator, checkpoints_dir: Path, total_limit: int | None) -> Path:
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
            for old in list_checkpoints(checkpoints_dir)[:-total_limit]:
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


def write_atomically(path: Path, write: Any) -> None:
    """`write(temporary_path)`, then rename it to `path`: readers see the old file or the complete new one."""
    temporary = path.with_name(path.name + _UNFINISHED_SUFFIXES[0])
    write(temporary)
    with open(temporary, "rb") as file:
        os.fsync(file.fileno())
    os.replace(temporary, path)


def save_best_weights(accelerator: Accelerator, model, output_dir: Path) -> None:
    """The (prepared) model's full weights as `output_dir/best/model.safetensors`, atomically (export='best')."""
    from safetensors.torch import save_file

    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        (output_dir / "best").mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.contiguous() for name, tensor in state_dict.items()}
        write_atomically(output_dir / "best" / "model.safetensors", lambda path: save_file(tensors, path))
    accelerator.wait_for_everyone()


def load_best_weights(model, output_dir: Path) -> None:
    """
    Load what `save_best_weights` saved into the unwrapped model. Every process reads the full weights; an FSDP2 model
    keeps its own shard of each (a collective: every process must call it).
    """
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    weights = load_file(output_dir / "best" / "model.safetensors")
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


def resume_from_latest(
    accelerator: Accelerator, checkpoints_dir: Path, resume: bool, progress: TrainingProgress
) -> None:
    """
    With `resume`, load the latest complete checkpoint (model, optimizer, scheduler, `progress`, random states) into
    the prepared objects; without, refuse a folder that already holds another run's checkpoints.
    """
    latest = latest_checkpoint(checkpoints_dir)
    if not resume:
        if latest is not None:
            raise FileExistsError(
                f"{checkpoints_dir} holds checkpoints of an earlier run ({latest.name}); continue it with resume=True "
                "(--resume), or use a new output_dir."
            )
        return
    if latest is None:
        logger.warning(f"resume=True but {checkpoints_dir} holds no checkpoint; starting from scratch.")
        return
    accelerator.load_state(str(latest))
    # accelerate does not advance its checkpoint counter on load; the next save must not reuse a name.
    accelerator.project_configuration.iteration = int(latest.name.split("_")[-1]) + 1
    if accelerator.is_main_process:
        logger.info(f"Resumed from {latest} at epoch {progress.epoch}, step {progress.global_step}.")


__all__ = [
    "TrainingProgress",
    "latest_checkpoint",
    "list_checkpoints",
    "load_best_weights",
    "resume_from_latest",
    "save_best_weights",
    "save_checkpoint",
    "write_atomically",
]
