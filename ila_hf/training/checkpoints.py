"""Checkpoints of a training run: the loop position (`TrainingProgress`), atomic saves of accelerate's state named by
optimizer step, resuming from the latest complete checkpoint (refusing one of another model or other labels), pruning,
the best epoch's weights, and the lock that keeps one run per output folder.

Every checkpoint and the best weights carry the run's id, and every checkpoint the run's fingerprint (`run.json`:
labels, model, data and recipe), so that neither a resume nor the export at the end can pick up another run's files.
"""

import fcntl
import json
import logging
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from ..atomic_files import (
    UNFINISHED_SUFFIXES,
    explain_disk_full,
    flush_to_disk,
    move_into_place,
    write_file_atomically,
)
from .config import TrainingConfig


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
    # The current epoch's training sums over all processes: (finite loss x clips, clips with a finite loss, correct
    # top-1, clips); kept here so that a run resumed inside an epoch reports the epoch's full means.
    epoch_sums: list = field(default_factory=lambda: [0.0, 0.0, 0.0, 0.0])
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


# ------------------------------------------------------------------------------------------------------ run lock
LOCK_FILE_NAME = "run.lock"


class OutputDirInUseError(RuntimeError):
    """Another training run holds the output folder."""


class OutputDirLock:
    """
    An exclusive `fcntl.flock` on `output_dir/run.lock`, which names its holder (pid, host, start time, run id).
    The lock belongs to the open file: it ends with the holding process, however that ends, and a stale lock file
    left behind locks nothing. On a shared (network) filesystem it holds across machines only where the filesystem
    implements `flock` across clients (NFSv4, Lustre and GPFS with their lock options do; some mounts keep locks
    local to each machine).
    """

    def __init__(self, output_dir: str | os.PathLike, run_id: str):
        self.output_dir, self.run_id = Path(output_dir), run_id
        self._file = None

    def acquire(self) -> None:
        """Take the lock or raise `OutputDirInUseError` naming the holder; `NotADirectoryError` for a file."""
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise NotADirectoryError(
                f"output_dir {self.output_dir} is a file; expected a folder (created if missing) for the checkpoints "
                "and the exported model."
            )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        lock_file = open(self.output_dir / LOCK_FILE_NAME, "a+", encoding="utf-8")
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read()
            lock_file.close()
            raise OutputDirInUseError(
                f"output_dir {self.output_dir} is in use by another training run ({_describe_holder(holder)}); wait "
                "for it to end or choose another output_dir (--output-dir)."
            ) from None
        lock_file.seek(0)
        lock_file.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": started, "run_id": self.run_id}
        lock_file.write(json.dumps(holder))
        lock_file.flush()
        self._file = lock_file

    def release(self) -> None:
        if self._file is not None:
            # Unlocked explicitly: forked data-loader workers share the open file and would keep a merely closed lock.
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "OutputDirLock":
        self.acquire()
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()


def _describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started']}, run {holder['run_id']}"
    except (ValueError, KeyError, TypeError):  # the holder has locked the file but not written it yet
        return "holder not yet recorded"


@contextmanager
def hold_output_dir(accelerator: Accelerator, output_dir: str | os.PathLike) -> Iterator[str]:
    """
    Hold `OutputDirLock` on `output_dir` for the body, on the main process; yields the run's id (the same on every
    process). The other processes learn the outcome from the main one (one collective, no file access), so a refusal
    is raised on every process at once.
    """
    lock, failure = None, None
    run_id = uuid.uuid4().hex[:12]
    if accelerator.is_main_process:
        lock = OutputDirLock(output_dir, run_id)
        try:
            lock.acquire()
        except (OutputDirInUseError, OSError) as error:  # OSError: a file as output_dir, no permission, ...
            failure = error
    failure, run_id = broadcast_object_list([failure, run_id])
    if failure is not None:
        raise failure
    try:
        yield run_id
    finally:
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------------------------------ fingerprint
RUN_FILE_NAME = "run.json"  # in every checkpoint: the run id and fingerprint
# A change of these makes a checkpoint unusable (other weights' shapes, other parameter groups): refused on resume.
MODEL_SETTINGS = (
    "architecture",
    "head",
    "num_frames",
    "interaction_variant",
    "interaction_channels",
    "freeze_backbone",
)
DATA_SETTINGS = ("train_data", "validation_data", "label_names", "video_root")
# Not part of what is trained: where it goes, how it is logged, how fast it loads.
_NOT_RECIPE = {
    "output_dir",
    "resume",
    "stop_after_steps",
    "log_with",
    "project_name",
    "log_every_steps",
    "push_to_hub",
    "hub_private",
    "hub_token",
    "hub_upload_timeout",
    "num_workers",
    "eval_batch_size",
    "cpu",
}


class ResumeMismatchError(ValueError):
    """A checkpoint (or best weights) of another run, model or label set than the one resuming."""


def run_fingerprint(config: TrainingConfig, label_names: Sequence[str], num_train_videos: int | None, run_id: str):
    """What a checkpoint must match to be resumed: the run id, the labels, the model settings (refused when they
    differ), the data (source, number of videos) and the recipe (warned about when they differ). JSON values."""
    settings = json.loads(json.dumps(asdict(config), default=str))
    return {
        "run_id": run_id,
        "labels": list(label_names),
        "model": {name: settings[name] for name in MODEL_SETTINGS},
        "data": {**{name: settings[name] for name in DATA_SETTINGS}, "num_train_videos": num_train_videos},
        "recipe": {
            name: value
            for name, value in settings.items()
            if name not in _NOT_RECIPE and name not in MODEL_SETTINGS and name not in DATA_SETTINGS
        },
    }


def check_resume_fingerprint(saved: dict, current: dict, checkpoint: Path) -> None:
    """Refuse a checkpoint of other labels or another model (`ResumeMismatchError`); log a warning listing the data
    and recipe settings that changed."""
    if saved["labels"] != current["labels"]:
        raise ResumeMismatchError(
            f"{checkpoint} was trained on {len(saved['labels'])} classes {_preview(saved['labels'])}, the data now has "
            f"{len(current['labels'])} {_preview(current['labels'])}; resume with the same labels, or start a new run "
            "in another output_dir."
        )
    refused = _changes(saved["model"], current["model"])
    if refused:
        raise ResumeMismatchError(
            f"{checkpoint} was trained with other model settings ({refused}); resume with the checkpoint's settings, "
            "or start a new run in another output_dir."
        )
    changed = _changes({**saved["data"], **saved["recipe"]}, {**current["data"], **current["recipe"]})
    if changed:
        logger.warning(f"Resuming {checkpoint} with changed settings: {changed}.")


def _changes(saved: dict, current: dict) -> str:
    names = sorted(set(saved) | set(current))
    return ", ".join(
        f"{name} {saved.get(name)!r} -> {current.get(name)!r}" for name in names if saved.get(name) != current.get(name)
    )


def _preview(labels: Sequence[str]) -> str:
    return "(" + ", ".join(labels[:5]) + (", ..." if len(labels) > 5 else "") + ")"


# ------------------------------------------------------------------------------------------------------ checkpoints
_CHECKPOINT_NAME = re.compile(r"checkpoint_step_(\d+)")
_COUNTER_CHECKPOINT_NAME = re.compile(r"checkpoint_(\d+)")  # accelerate's save counter (before step names): resumable


def checkpoint_name(global_step: int) -> str:
    return f"checkpoint_step_{global_step}"


def list_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first: `checkpoint_step_<N>` by step, after any counter-named `checkpoint_<i>` of
    earlier versions (a run resumed from those names its later checkpoints by step). A folder with any other name
    (being written or removed) is not one."""
    ordered = []
    for path in checkpoints_dir.glob("checkpoint_*"):
        for generation, pattern in enumerate((_COUNTER_CHECKPOINT_NAME, _CHECKPOINT_NAME)):
            match = pattern.fullmatch(path.name)
            if match and path.is_dir():
                ordered.append((generation, int(match.group(1)), path))
    return [path for *_, path in sorted(ordered)]


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    """The newest complete checkpoint folder, or None."""
    checkpoints = list_checkpoints(checkpoints_dir)
    return checkpoints[-1] if checkpoints else None


def read_run_file(checkpoint: Path) -> dict | None:
    """A checkpoint's `run.json` (run id and fingerprint), or None for a checkpoint written before they existed."""
    path = checkpoint / RUN_FILE_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def save_checkpoint(
    accelerator: Accelerator, checkpoints_dir: Path, global_step: int, total_limit: int | None, fingerprint: dict
) -> Path:
    """
    `accelerator.save_state` and the run's `fingerprint` (`run.json`) as `checkpoints_dir/checkpoint_step_<step>`,
    atomically. The state goes into `<name>.incomplete`, is flushed to disk and renamed (replacing this run's
    checkpoint of the same step: an epoch's end after a step checkpoint); only then are checkpoints beyond
    `total_limit` removed (renamed `.deleting` first). A run killed at any moment, mid-save included, thus leaves its
    latest complete checkpoint under a checkpoint name and nothing partial under such a name. (accelerate's own naming
    counts saves, writes in place and prunes before writing.) A full disk raises `DiskFullError`. Assumes the folder
    is shared by all processes, as `save_state` does.
    """
    final = checkpoints_dir / checkpoint_name(global_step)
    # Checked on every process, before any of them waits for the others. The run lock and `resume_from_latest` keep
    # other runs' checkpoints out; this is the last line.
    if final.is_dir() and (read_run_file(final) or {}).get("run_id") != fingerprint["run_id"]:
        raise FileExistsError(
            f"{final} already exists and belongs to another run: continue that run with resume=True (--resume), or "
            "use a new output_dir."
        )
    incomplete = final.with_name(final.name + UNFINISHED_SUFFIXES[0])
    if accelerator.is_main_process:
        _remove_unfinished_checkpoints(checkpoints_dir)  # left by a run killed while saving or pruning
        incomplete.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        with explain_disk_full(checkpoints_dir, final.name):
            accelerator.save_state(str(incomplete))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                (incomplete / RUN_FILE_NAME).write_text(json.dumps(fingerprint, indent=1), encoding="utf-8")
                flush_to_disk(incomplete)
    except BaseException:
        if accelerator.is_main_process:  # a full disk gets its space back
            shutil.rmtree(incomplete, ignore_errors=True)
        raise
    if accelerator.is_main_process:
        move_into_place(incomplete, final)
        if total_limit is not None:
            for old in list_checkpoints(checkpoints_dir)[:-total_limit]:
                doomed = old.with_name(old.name + UNFINISHED_SUFFIXES[1])
                old.rename(doomed)
                shutil.rmtree(doomed)
    accelerator.wait_for_everyone()
    return final


def _remove_unfinished_checkpoints(checkpoints_dir: Path) -> None:
    for path in checkpoints_dir.glob("checkpoint_*"):
        if path.name.endswith(UNFINISHED_SUFFIXES):
            shutil.rmtree(path, ignore_errors=True)


def resume_from_latest(
    accelerator: Accelerator, checkpoints_dir: Path, resume: bool, progress: TrainingProgress, fingerprint: dict
) -> dict:
    """
    With `resume`, check the latest complete checkpoint's fingerprint against this run's (`check_resume_fingerprint`)
    and load it (model, optimizer, scheduler, `progress`, random states) into the prepared objects; without, refuse
    a folder that already holds another run's checkpoints. Returns the run's fingerprint: `fingerprint` with the
    resumed run's id, which its checkpoints and best weights carry on.
    """
    latest = latest_checkpoint(checkpoints_dir)
    if not resume:
        if latest is not None:
            raise FileExistsError(
                f"{checkpoints_dir} holds checkpoints of an earlier run ({latest.name}); continue it with resume=True "
                "(--resume), or use a new output_dir."
            )
        return fingerprint
    if latest is None:
        logger.warning(f"resume=True but {checkpoints_dir} holds no checkpoint; starting from scratch.")
        return fingerprint
    saved = read_run_file(latest)
    if saved is None:
        logger.warning(f"{latest} was written before checkpoints had fingerprints; its labels and model are unchecked.")
    else:
        check_resume_fingerprint(saved, fingerprint, latest)
        fingerprint = {**fingerprint, "run_id": saved["run_id"]}
    accelerator.load_state(str(latest))
    if accelerator.is_main_process:
        logger.info(f"Resumed from {latest} at epoch {progress.epoch}, step {progress.global_step}.")
    return fingerprint


# ------------------------------------------------------------------------------------------------------ best weights
def save_best_weights(accelerator: Accelerator, model, output_dir: Path, run_id: str) -> None:
    """The (prepared) model's full weights as `output_dir/best/model.safetensors`, tagged with `run_id` (safetensors
    metadata), atomically (export='best')."""
    from safetensors.torch import save_file

    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        (output_dir / "best").mkdir(parents=True, exist_ok=True)
        tensors = {name: tensor.contiguous() for name, tensor in state_dict.items()}
        metadata = {"run_id": run_id}
        write_file_atomically(
            output_dir / "best" / "model.safetensors", lambda path: save_file(tensors, path, metadata=metadata)
        )
    accelerator.wait_for_everyone()


def check_best_weights(output_dir: Path, run_id: str) -> Path:
    """`output_dir/best/model.safetensors` if this run (`run_id`) saved it; else `ResumeMismatchError` (another run's
    weights) or `FileNotFoundError`. Checked on resume and before the best weights are loaded for export."""
    from safetensors import safe_open

    path = output_dir / "best" / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: this run's best weights are gone. Retrain, or export the last weights (export='last')."
        )
    with safe_open(path, framework="pt") as file:
        saved_by = (file.metadata() or {}).get("run_id")
    if saved_by != run_id:
        raise ResumeMismatchError(
            f"{path} holds the weights of another run ({saved_by or 'untagged'}), not of this run ({run_id}): another "
            f"run wrote into {output_dir}. Retrain, or export the last weights (export='last')."
        )
    return path


def load_best_weights(model, output_dir: Path, run_id: str) -> None:
    """
    Load what `save_best_weights` saved into the unwrapped model, after `check_best_weights`: another run's best
    weights are never exported. Every process reads the full weights; an FSDP2 model keeps its own shard of each (a
    collective: every process must call it).
    """
    from safetensors.torch import load_file
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    weights = load_file(check_best_weights(output_dir, run_id))
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True))


__all__ = [
    "LOCK_FILE_NAME",
    "OutputDirInUseError",
    "OutputDirLock",
    "ResumeMismatchError",
    "TrainingProgress",
    "check_best_weights",
    "checkpoint_name",
    "check_resume_fingerprint",
    "hold_output_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_best_weights",
    "read_run_file",
    "resume_from_latest",
    "run_fingerprint",
    "save_best_weights",
    "save_checkpoint",
]
