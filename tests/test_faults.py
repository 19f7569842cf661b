"""Faults during training and loading: undecodable videos, NaN losses, a trainer killed at any moment (mid-save
included), untrusted files, invalid configs and a Hub that hangs.

The kill-and-resume test SIGKILLs a training subprocess at kill points drawn deterministically from `KILL_SEED`
(inside a micro-batch, inside `save_state` after some of a checkpoint's files, inside the pruning of old checkpoints)
and checks after each kill that the latest checkpoint is complete, and at the end that the resumed run has exactly the
weights of an uninterrupted one.
"""

import ast
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from safetensors.torch import load_file

from ila_hf import ILAForVideoClassification, ILAVideoConfig
from ila_hf.data import (
    VideoClassificationCollator,
    VideoClipTransform,
    VideoProcessorTransform,
    build_dataset,
)
from ila_hf.atomic_files import DiskFullError
from ila_hf.training.checkpoints import (
    OutputDirLock,
    latest_checkpoint,
    list_checkpoints,
    load_best_weights,
    save_best_weights,
    save_checkpoint,
)
from ila_hf.video_io import VideoDecodeError
from ila_hf.training import (
    NonFiniteLossError,
    OutputDirInUseError,
    ResumeMismatchError,
    TrainingConfig,
    UndecodableDataError,
    evaluate,
    train,
)
from tests.helpers import REPO_ROOT, launch_two_processes, loop_settings, tiny_ila_config

from .videos import truncate_copy, write_random_bytes


KILL_SEED = 20230917
CHECKPOINT_FILES = {"model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_checkpoint_1.pkl"}
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data_with_bad_videos(tiny_video_dataset, tmp_path_factory) -> Path:
    """
    The tiny dataset plus undecodable files: `train_bad.txt` (the 12 training videos and `broken/noise.mp4`, random
    bytes), `val_bad.txt` (the 7 validation videos and `broken/cut.mp4`, a download cut short),
    `train_mostly_bad.txt` (12 good, 3 bad) and `val_bad_only.txt` (the cut one alone).
    """
    root = tmp_path_factory.mktemp("bad_videos")
    (root / "broken").mkdir()
    write_random_bytes(root / "broken" / "noise.mp4", 5000)
    truncate_copy(tiny_video_dataset / "videos" / "rowing" / "rowing_0.mp4", root / "broken" / "cut.mp4", 0.4)
    for index in range(3):
        write_random_bytes(root / "broken" / f"junk_{index}.avi", 3000, seed=index + 1)
    good_train = (tiny_video_dataset / "train.txt").read_text().splitlines()
    good_val = (tiny_video_dataset / "val.txt").read_text().splitlines()
    absolute = [
        f"{tiny_video_dataset / line.rsplit(maxsplit=1)[0]} {line.rsplit(maxsplit=1)[1]}" for line in good_train
    ]
    absolute_val = [
        f"{tiny_video_dataset / line.rsplit(maxsplit=1)[0]} {line.rsplit(maxsplit=1)[1]}" for line in good_val
    ]
    (root / "train_bad.txt").write_text("\n".join([*absolute[:5], f"{root}/broken/noise.mp4 2", *absolute[5:]]) + "\n")
    (root / "val_bad.txt").write_text(
        "\n".join([*absolute_val[:3], f"{root}/broken/cut.mp4 5", *absolute_val[3:]]) + "\n"
    )
    junk = [f"{root}/broken/junk_{index}.avi {index}" for index in range(3)]
    (root / "train_mostly_bad.txt").write_text("\n".join([*absolute, *junk]) + "\n")
    (root / "labels.csv").write_text((tiny_video_dataset / "labels.csv").read_text())
    return root


def fault_settings(data: Path, clip_dir: Path, **kwargs) -> dict:
    """The tiny recipe (`loop_settings`) on `data`'s list with undecodable videos, without validation."""
    kwargs = {"train_data": str(data / "train_bad.txt"), "validation_data": None, **kwargs}
    return loop_settings(data, clip_dir, **kwargs)


def fault_config(data: Path, clip_dir: Path, output_dir: Path, **kwargs) -> TrainingConfig:
    return TrainingConfig(**fault_settings(data, clip_dir, output_dir=str(output_dir), **kwargs))


def poison_losses(monkeypatch, micro_batches) -> None:
    """Make the training loss NaN at the given 1-based training forward calls (micro-batches with videos)."""
    real_forward = ILAForVideoClassification.forward
    calls = [0]

    def forward(self, *args, **kwargs):
        outputs = real_forward(self, *args, **kwargs)
        if self.training:
            calls[0] += 1
            if calls[0] in micro_batches:
                outputs.loss = outputs.loss * float("nan")
        return outputs

    monkeypatch.setattr(ILAForVideoClassification, "forward", forward)


def weights_of(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def all_finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(tensor).all() for tensor in weights.values())


def assert_same_weights(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    assert [name for name in expected if not torch.equal(expected[name], actual[name])] == []


# ------------------------------------------------------------------------------------------------------ bad items
def test_undecodable_training_items_are_marked_then_left_out_of_the_batch_with_their_paths(data_with_bad_videos):
    dataset = build_dataset(data_with_bad_videos / "train_bad.txt", label_names=data_with_bad_videos / "labels.csv")
    transform = VideoClipTransform(lambda frames, generator: torch.zeros(4, 3, 8, 8), 4, training=True)
    with pytest.raises(VideoDecodeError, match="noise.mp4"):  # without skip_undecodable nothing changes: it raises
        dataset.with_transform(transform)[5]
    transform.skip_undecodable = True
    items = [dataset.with_transform(transform)[index] for index in (4, 5, 6)]
    bad_path = str(data_with_bad_videos / "broken" / "noise.mp4")
    assert items[1]["video"] == bad_path and not items[1]["pixel_values"].any()
    assert items[1]["decode_error"].startswith(f"{bad_path}: ")
    assert items[0]["decode_error"] is None and items[0]["pixel_values"].shape == (4, 3, 8, 8)
    batch = VideoClassificationCollator()(items)
    assert batch["pixel_values"].shape == (2, 4, 3, 8, 8) and batch["labels"].tolist() == [2, 2]
    assert list(batch["skipped_videos"]) == [bad_path]
    empty = VideoClassificationCollator()([items[1]])
    assert empty["pixel_values"].numel() == 0 and empty["labels"].shape == (0,)


def test_undecodable_evaluation_items_keep_their_labels_and_are_flagged(data_with_bad_videos):
    dataset = build_dataset(data_with_bad_videos / "val_bad.txt", label_names=data_with_bad_videos / "labels.csv")
    transform = VideoClipTransform(lambda f, g: torch.zeros(4, 3, 8, 8), 4, training=False, skip_undecodable=True)
    batch = VideoClassificationCollator()([dataset.with_transform(transform)[index] for index in (2, 3, 4)])
    assert batch["labels"].tolist() == [2, 5, 3]  # every item's label: processes gather as many rows as items
    assert batch["decoded"].tolist() == [True, False, True]
    assert batch["pixel_values"].shape == (3, 4, 3, 8, 8) and not batch["pixel_values"][1].any()
    assert list(batch["skipped_videos"]) == [str(data_with_bad_videos / "broken" / "cut.mp4")]


def test_processor_transform_singles_out_the_undecodable_video_of_a_batch(data_with_bad_videos):
    from ila_hf.video_processing_ila import ILAVideoProcessor

    processor = ILAVideoProcessor(num_frames=4, crop_size={"height": 32, "width": 32})
    dataset = build_dataset(data_with_bad_videos / "val_bad.txt", label_names=data_with_bad_videos / "labels.csv")
    rows = dataset[2:5]
    transformed = VideoProcessorTransform(processor, skip_undecodable=True, num_clips=2)(rows)
    assert [error is None for error in transformed["decode_error"]] == [True, False, True]
    assert all(clip.shape == (2, 4, 3, 32, 32) for clip in transformed["pixel_values"])
    assert transformed["pixel_values"][0].any() and not transformed["pixel_values"][1].any()
    assert "cut.mp4: " in transformed["decode_error"][1]


@pytest.fixture(scope="module")
def run_with_bad_videos(data_with_bad_videos, tiny_clip_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("run_with_bad_videos")
    config = fault_config(
        data_with_bad_videos,
        tiny_clip_dir,
        output_dir,
        validation_data=str(data_with_bad_videos / "val_bad.txt"),
        export="best",
        checkpoint_every_steps=None,
        max_bad_video_fraction=0.2,  # 1 of the 8 validation videos
    )
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger("ila_hf.training").addHandler(handler)
    try:
        result = train(config)
    finally:
        logging.getLogger("ila_hf.training").removeHandler(handler)
    return result, "\n".join(record.getMessage() for record in records)


def test_training_skips_counts_and_logs_undecodable_videos(run_with_bad_videos, data_with_bad_videos):
    result, log = run_with_bad_videos
    noise, cut = str(data_with_bad_videos / "broken" / "noise.mp4"), str(data_with_bad_videos / "broken" / "cut.mp4")
    assert (result.global_step, result.epoch) == (14, 2)  # 13 videos, batch 2: 7 steps per epoch
    assert sorted(result.undecodable_videos) == [cut, noise]
    assert result.undecodable_videos[noise].startswith(f"{noise}: not a readable video container")
    assert f"Skipped 1 undecodable training video(s):\n  {noise}: " in log
    assert f"Skipped 1 undecodable validation video(s):\n  {cut}: " in log
    assert [(entry["num_samples"], entry["num_skipped"]) for entry in result.history] == [(7, 1), (7, 1)]
    assert (result.metrics["num_samples"], result.metrics["num_skipped"]) == (7, 1)
    assert list(result.metrics["skipped_videos"]) == [cut]
    saved = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    assert sorted(saved["undecodable_videos"]) == [cut, noise]


def test_metrics_with_undecodable_videos_equal_those_of_the_decodable_ones_alone(
    run_with_bad_videos, data_with_bad_videos, tiny_video_dataset
):
    """The final evaluation left the undecodable video out exactly: same numbers as the clean validation list."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoVideoProcessor

    result, _ = run_with_bad_videos
    model = ILAForVideoClassification.from_pretrained(result.model_dir)
    processor = AutoVideoProcessor.from_pretrained(result.model_dir, trust_remote_code=True)
    clean = build_dataset(tiny_video_dataset / "val.txt", label_names=tiny_video_dataset / "labels.csv")
    loader = DataLoader(
        clean.with_transform(VideoProcessorTransform(processor)), batch_size=2, collate_fn=VideoClassificationCollator()
    )
    expected = evaluate(model, loader, Accelerator(cpu=True))
    assert (expected["top1"], expected["top5"], expected["num_samples"]) == (
        result.metrics["top1"],
        result.metrics["top5"],
        result.metrics["num_samples"],
    )
    assert expected["loss"] == pytest.approx(result.metrics["loss"], rel=1e-6)


def test_a_micro_batch_without_any_decodable_video_skips_its_step(data_with_bad_videos, tiny_clip_dir, tmp_path):
    config = fault_config(data_with_bad_videos, tiny_clip_dir, tmp_path, batch_size=1, epochs=1)
    result = train(config)
    assert result.global_step == 13 and len(result.steps_without_data) == 1
    assert result.nonfinite_loss_steps == [] and all_finite(weights_of(Path(result.model_dir)))


def test_too_many_undecodable_videos_stop_training_with_the_list(data_with_bad_videos, tiny_clip_dir, tmp_path):
    config = fault_config(
        data_with_bad_videos, tiny_clip_dir, tmp_path, train_data=str(data_with_bad_videos / "train_mostly_bad.txt")
    )
    # The run stops as soon as the count crosses 1.5: at the second of the 3 junk files in the seeded order.
    with pytest.raises(
        UndecodableDataError,
        match=r"(?s)2 of the 15 training videos could not be decoded, more than "
        r"max_bad_video_fraction=0\.1 allows \(1\.5\).*junk_\d\.avi: ",
    ):
        train(config)
    # It stopped within the first epoch, as soon as the limit was crossed, with no checkpoint after the crossing.
    assert not (tmp_path / "model").exists()


def test_bad_fraction_must_be_a_fraction():
    with pytest.raises(ValueError, match=r"max_bad_video_fraction must lie in \[0, 1\], got 1\.5"):
        TrainingConfig(train_data="x", clip_model="y", max_bad_video_fraction=1.5)
    with pytest.raises(ValueError, match="max_consecutive_nonfinite_steps must be >= 1"):
        TrainingConfig(train_data="x", clip_model="y", max_consecutive_nonfinite_steps=0)


# ------------------------------------------------------------------------------------------------------ NaN losses
def test_a_nonfinite_loss_skips_its_step_without_touching_the_weights(
    tiny_video_dataset, tiny_clip_dir, tmp_path, monkeypatch
):
    poison_losses(monkeypatch, {3})
    config = fault_config(tiny_video_dataset, tiny_clip_dir, tmp_path, train_data=str(tiny_video_dataset / "train.txt"))
    result = train(config)
    assert result.nonfinite_loss_steps == [3] and result.global_step == 12
    assert all_finite(weights_of(Path(result.model_dir)))
    # AdamW counted 11 updates of every trainable parameter: step 3 changed nothing.
    optimizer_state = torch.load(latest_checkpoint(tmp_path / "checkpoints") / "optimizer.bin", weights_only=True)
    assert {float(state["step"]) for state in optimizer_state["state"].values()} == {11.0}


def test_with_gradient_accumulation_a_nonfinite_micro_batch_drops_its_whole_step(
    tiny_video_dataset, tiny_clip_dir, tmp_path, monkeypatch
):
    poison_losses(monkeypatch, {3})  # the first micro-batch of step 2: its NaN gradients are accumulated, not applied
    config = fault_config(
        tiny_video_dataset,
        tiny_clip_dir,
        tmp_path,
        train_data=str(tiny_video_dataset / "train.txt"),
        gradient_accumulation_steps=2,
        epochs=1,
    )
    result = train(config)
    assert result.nonfinite_loss_steps == [2] and result.global_step == 3
    assert all_finite(weights_of(Path(result.model_dir)))


def test_repeated_nonfinite_losses_stop_the_run_and_keep_the_last_good_checkpoint(
    tiny_video_dataset, tiny_clip_dir, tmp_path, monkeypatch
):
    poison_losses(monkeypatch, set(range(5, 100)))  # from step 5 on
    config = fault_config(
        tiny_video_dataset,
        tiny_clip_dir,
        tmp_path,
        train_data=str(tiny_video_dataset / "train.txt"),
        checkpoints_total_limit=None,
    )
    with pytest.raises(
        NonFiniteLossError, match=r"NaN or infinite for 3 optimizer steps in a row \(steps \[5, 6, 7\]\)"
    ):
        train(config)
    checkpoints = tmp_path / "checkpoints"
    # Saved at steps 2, 4, 6 and at the end of epoch 1 (step 6 again: it replaces the first); nothing after the stop
    # at step 7.
    assert sorted(path.name for path in checkpoints.iterdir()) == [f"checkpoint_step_{step}" for step in (2, 4, 6)]
    latest = latest_checkpoint(checkpoints)
    assert latest.name == "checkpoint_step_6" and CHECKPOINT_FILES <= {path.name for path in latest.iterdir()}
    assert all_finite(weights_of(latest))
    assert_same_weights(weights_of(checkpoints / "checkpoint_step_4"), weights_of(latest))  # steps 5, 6: no change
    monkeypatch.undo()
    resumed = train(
        fault_config(
            tiny_video_dataset,
            tiny_clip_dir,
            tmp_path,
            train_data=str(tiny_video_dataset / "train.txt"),
            checkpoints_total_limit=None,
            resume=True,
        )
    )
    assert resumed.global_step == 12 and resumed.nonfinite_loss_steps == [5, 6]
    assert all_finite(weights_of(Path(resumed.model_dir)))


# ------------------------------------------------------------------------------------------------------ run lock
HOLD_LOCK_SCRIPT = """
import sys
from ila_hf.training.checkpoints import OutputDirLock
lock = OutputDirLock(sys.argv[1], "first-run")  # kept: the lock ends with the object
lock.acquire()
print("held", flush=True)
sys.stdin.read()  # held until the test closes this process's stdin
"""


def test_a_second_run_in_a_held_output_folder_is_refused_at_start_naming_the_holder(
    tiny_video_dataset, tiny_clip_dir, tmp_path
):
    """A first run (here a process holding the folder's lock as `train` does) keeps a second `train` out."""
    output_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK_SCRIPT, str(output_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    try:
        assert holder.stdout.readline() == "held\n"
        config = fault_config(
            tiny_video_dataset, tiny_clip_dir, output_dir, train_data=str(tiny_video_dataset / "train.txt")
        )
        holder_description = rf"pid {holder.pid} on {re.escape(socket.gethostname())}, started [^)]+, run first-run"
        with pytest.raises(OutputDirInUseError, match=rf"is in use by another training run \({holder_description}\)"):
            train(config)
        assert [path.name for path in output_dir.iterdir()] == ["run.lock"]  # refused before writing anything
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    with OutputDirLock(output_dir, "next-run"):  # the lock ended with its holder
        pass


def test_best_weights_of_another_run_are_refused_on_resume_and_never_exported(
    tiny_video_dataset, tiny_clip_dir, tmp_path
):
    """As when two runs shared a folder: best/ now holds another run's weights. Resuming refuses it; so would the
    end of the run (next test); nothing is exported."""
    from safetensors.torch import save_file

    settings = dict(
        train_data=str(tiny_video_dataset / "train.txt"),
        validation_data=str(tiny_video_dataset / "val.txt"),
        export="best",
    )
    stopped = train(fault_config(tiny_video_dataset, tiny_clip_dir, tmp_path, stop_after_steps=7, **settings))
    assert stopped.stopped_early and stopped.history  # epoch 0 validated at step 6: best/ written
    save_file(weights_of(tmp_path / "best"), tmp_path / "best" / "model.safetensors", metadata={"run_id": "another"})
    refused = r"best/model.safetensors holds the weights of another run \(another\)"
    with pytest.raises(ResumeMismatchError, match=refused):
        train(fault_config(tiny_video_dataset, tiny_clip_dir, tmp_path, resume=True, **settings))
    assert not (tmp_path / "model").exists()


def test_the_end_of_a_run_loads_only_its_own_best_weights(tmp_path):
    from accelerate import Accelerator

    model = torch.nn.Linear(3, 2)
    save_best_weights(Accelerator(cpu=True), model, tmp_path, "run-a")
    load_best_weights(model, tmp_path, "run-a")
    with pytest.raises(ResumeMismatchError, match=r"another run \(run-a\), not of this run \(run-b\)"):
        load_best_weights(model, tmp_path, "run-b")


def test_resume_refuses_other_labels_or_model_settings_and_warns_on_recipe_changes(
    tiny_video_dataset, tiny_clip_dir, tmp_path, caplog
):
    output_dir = tmp_path / "run"
    settings = dict(train_data=str(tiny_video_dataset / "train.txt"), epochs=1)
    train(fault_config(tiny_video_dataset, tiny_clip_dir, output_dir, stop_after_steps=2, **settings))
    resume = dict(output_dir=str(output_dir), resume=True, **settings)
    renamed = tmp_path / "renamed.csv"
    renamed.write_text((tiny_video_dataset / "labels.csv").read_text().replace("juggling", "kayaking"))
    with pytest.raises(
        ResumeMismatchError,
        match=r"checkpoint_step_2 was trained on 6 classes \(archery, bowling, cycling, diving, juggling, \.\.\.\), "
        r"the data now has 6 \(archery, bowling, cycling, diving, kayaking, \.\.\.\)",
    ):
        train(TrainingConfig(**fault_settings(tiny_video_dataset, tiny_clip_dir, label_names=str(renamed), **resume)))
    other_model = fault_settings(tiny_video_dataset, tiny_clip_dir, interaction_variant="conv", **resume)
    with pytest.raises(ResumeMismatchError, match=r"model settings \(interaction_variant 'depthwise' -> 'conv'\)"):
        train(TrainingConfig(**other_model))
    other_recipe = fault_settings(tiny_video_dataset, tiny_clip_dir, seed=1, head_learning_rate=1e-3, **resume)
    with caplog.at_level(logging.WARNING, logger="ila_hf.training.checkpoints"):
        resumed = train(TrainingConfig(**other_recipe))
    assert resumed.global_step == 6
    assert "changed settings: head_learning_rate 0.0004 -> 0.001, seed 0 -> 1." in caplog.text


def test_an_output_dir_that_is_a_file_is_refused_at_start(tiny_video_dataset, tiny_clip_dir, tmp_path):
    output_dir = tmp_path / "output"
    output_dir.write_text("not a folder")
    with pytest.raises(NotADirectoryError, match=rf"output_dir {re.escape(str(output_dir))} is a file"):
        train(fault_config(tiny_video_dataset, tiny_clip_dir, output_dir))


def test_a_full_disk_while_checkpointing_names_the_folder_and_frees_the_partial_checkpoint(tmp_path, monkeypatch):
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True)

    def save_state(output_dir):  # what torch's writer raises when the device fills up mid-file
        (Path(output_dir) / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1408 vs 1302")

    monkeypatch.setattr(accelerator, "save_state", save_state)
    with pytest.raises(
        DiskFullError,
        match=rf"No space left on the device holding {re.escape(str(tmp_path))} while writing checkpoint_step_3",
    ):
        save_checkpoint(accelerator, tmp_path, 3, total_limit=2, fingerprint={"run_id": "run"})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------------ kills
def test_latest_checkpoint_ignores_folders_being_written_or_deleted(tmp_path):
    names = ("checkpoint_step_2", "checkpoint_step_10", "checkpoint_step_11.incomplete", "checkpoint_step_12.deleting")
    for name in (*names, "checkpoint_step_x"):
        (tmp_path / name).mkdir()
    (tmp_path / "checkpoint_step_13").write_text("a file, not a checkpoint folder")
    assert latest_checkpoint(tmp_path).name == "checkpoint_step_10"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_counter_named_checkpoints_of_earlier_versions_resume_before_step_named_ones(tmp_path):
    """Earlier versions named checkpoints by accelerate's save counter; a run resumed from one names its later
    checkpoints by step, which are the newer ones whatever the numbers."""
    for name in ("checkpoint_7", "checkpoint_12"):
        (tmp_path / name).mkdir()
    assert latest_checkpoint(tmp_path).name == "checkpoint_12"
    (tmp_path / "checkpoint_step_3").mkdir()
    assert [path.name for path in list_checkpoints(tmp_path)] == ["checkpoint_7", "checkpoint_12", "checkpoint_step_3"]


KILLABLE_TRAINING_SCRIPT = r"""
import json, os, signal, sys
import torch
torch.set_num_threads(1)
import accelerate.checkpointing
from ila_hf import training
import ila_hf.training.checkpoints
from ila_hf.modeling_ila import ILAForVideoClassification

kind, count = sys.argv[1], int(sys.argv[2])
config = training.TrainingConfig(**json.loads(sys.argv[3]))
calls = [0]

def maybe_die():
    calls[0] += 1
    if calls[0] == count:
        os.kill(os.getpid(), signal.SIGKILL)

def wrap(owner, name, before, counts=lambda *args: True):
    real = getattr(owner, name)
    def wrapper(*args, **kwargs):
        if before and counts(*args):
            maybe_die()
        result = real(*args, **kwargs)
        if not before and counts(*args):
            maybe_die()
        return result
    setattr(owner, name, wrapper)

if kind == "forward":  # inside a micro-batch, before its forward
    wrap(ILAForVideoClassification, "forward", before=True)
elif kind == "checkpoint_file":  # inside save_state, after the count-th file of the checkpoints it writes
    wrap(accelerate.checkpointing, "save", before=False)
elif kind == "prune":  # after a checkpoint's rename, while an old one is being removed
    wrap(training.checkpoints.shutil, "rmtree", before=True, counts=lambda path, *args: str(path).endswith(".deleting"))
result = training.train(config)
print(json.dumps({"global_step": result.global_step, "model_dir": result.model_dir}))
"""


def _run_killable(script: Path, kind: str, count: int, config: dict) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, str(script), kind, str(count), json.dumps(config)],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
    )


@pytest.mark.slow
def test_kills_at_random_points_then_resume_end_with_the_uninterrupted_weights(
    data_with_bad_videos, tiny_clip_dir, tmp_path, capsys
):
    """Four runs in one output folder: three SIGKILLed (mid-micro-batch, mid-save, mid-pruning) and a last one that
    finishes. 13 training videos, one undecodable: 7 steps per epoch, 2 epochs, a checkpoint every 3 steps and at each
    epoch's end (5 files per checkpoint), at most 2 kept."""
    started = time.monotonic()
    rng = random.Random(KILL_SEED)
    kill_points = [
        ("forward", rng.randint(4, 9)),  # run 1: after the step-3 checkpoint, inside a later micro-batch
        # run 2: inside its first save_state, after 1-3 of the 4 files that go through accelerate's `save` (model,
        # optimizer, then scheduler and loop position; the RNG state, written with torch.save, comes before those two)
        ("checkpoint_file", rng.randint(1, 3)),
        ("prune", 1),  # run 3: at its first removal of an old checkpoint
    ]
    settings = fault_settings(data_with_bad_videos, tiny_clip_dir, checkpoint_every_steps=3)
    reference = train(TrainingConfig(**settings, output_dir=str(tmp_path / "uninterrupted")))

    script = tmp_path / "killable_training.py"
    script.write_text(KILLABLE_TRAINING_SCRIPT)
    output_dir = tmp_path / "killed"
    checkpoints = output_dir / "checkpoints"
    seen = []
    for run, (kind, count) in enumerate(kill_points):
        config = {**settings, "output_dir": str(output_dir), "resume": run > 0}
        completed = _run_killable(script, kind, count, config)
        assert completed.returncode == -signal.SIGKILL, (kind, count, completed.stderr[-3000:])
        latest = latest_checkpoint(checkpoints)
        assert latest is not None and CHECKPOINT_FILES <= {path.name for path in latest.iterdir()}, (kind, count)
        assert all_finite(weights_of(latest))
        seen.append((kind, count, sorted(path.name for path in checkpoints.iterdir())))
    # What each kill left behind: a partial checkpoint from the mid-save kill, an old one half-removed by the last.
    assert any(name.endswith(".incomplete") for name in seen[1][2]), seen
    assert any(name.endswith(".deleting") for name in seen[2][2]), seen

    finished = _run_killable(script, "none", 0, {**settings, "output_dir": str(output_dir), "resume": True})
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert json.loads(finished.stdout.splitlines()[-1])["global_step"] == reference.global_step == 14
    assert_same_weights(weights_of(Path(reference.model_dir)), weights_of(output_dir / "model"))
    assert not [path.name for path in checkpoints.iterdir() if not path.name[len("checkpoint_step_") :].isdigit()]
    with capsys.disabled():
        print(f"\n[kill-and-resume] kill points {kill_points}: {time.monotonic() - started:.1f} s")


# ------------------------------------------------------------------------------------------------------ 2 processes
TWO_PROCESS_SCRIPT = r"""
import json, os, sys
from ila_hf import training
from ila_hf.modeling_ila import ILAForVideoClassification

config = training.TrainingConfig(**json.loads(sys.argv[1]))
rank = int(os.environ["RANK"])  # set by the launcher (accelerate's state is not touched before train sets it up)
real_forward, calls = ILAForVideoClassification.forward, [0]

def forward(self, *args, **kwargs):  # NaN losses on process 1 only, at its 3rd and 6th training micro-batch
    outputs = real_forward(self, *args, **kwargs)
    if self.training and rank == 1:
        calls[0] += 1
        if calls[0] in (3, 6):
            outputs.loss = outputs.loss * float("nan")
    return outputs

ILAForVideoClassification.forward = forward
result = training.train(config)
report = {name: getattr(result, name) for name in ("global_step", "nonfinite_loss_steps", "undecodable_videos", "history", "metrics")}
with open(f"{config.output_dir}/rank_{rank}.json", "w") as file:
    json.dump(report, file)
"""


@pytest.mark.slow
def test_two_processes_skip_the_same_nonfinite_steps_and_count_undecodable_videos_exactly(
    data_with_bad_videos, tiny_clip_dir, tmp_path
):
    """`accelerate launch` with 2 CPU processes; process 1 alone sees NaN losses (in a step's first micro-batch, then in
    a step's last), gradients accumulate over 2 micro-batches of 1 video, and a training and a validation video are
    undecodable. Both processes must skip the same steps (else process 0 would apply the all-reduced NaN gradients)
    and report the same faults; the validation metrics leave the undecodable video out exactly as one process does."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoVideoProcessor

    from ila_hf.transforms import EvalClipTransform

    output_dir = tmp_path / "run"
    config = loop_settings(
        data_with_bad_videos,
        tiny_clip_dir,
        train_data=str(data_with_bad_videos / "train_bad.txt"),
        validation_data=str(data_with_bad_videos / "val_bad.txt"),
        batch_size=1,
        eval_batch_size=2,
        gradient_accumulation_steps=2,
        checkpoint_every_steps=None,
        max_bad_video_fraction=0.2,
        cpu=True,
        output_dir=str(output_dir),
    )
    script = tmp_path / "two_processes.py"
    script.write_text(TWO_PROCESS_SCRIPT)
    # About 25 s; processes that disagreed on a step would wait for each other in an all-reduce until the timeout.
    launch_two_processes(script, [json.dumps(config)])
    first, second = (json.loads((output_dir / f"rank_{rank}.json").read_text()) for rank in (0, 1))
    assert first["global_step"] == second["global_step"] == 8  # 7 videos per process, 2 per step: 4 steps an epoch
    assert first["nonfinite_loss_steps"] == second["nonfinite_loss_steps"] and len(first["nonfinite_loss_steps"]) == 2
    assert first["undecodable_videos"] == second["undecodable_videos"]
    assert sorted(Path(path).name for path in first["undecodable_videos"]) == ["cut.mp4", "noise.mp4"]
    assert all_finite(weights_of(output_dir / "model"))

    model = ILAForVideoClassification.from_pretrained(output_dir / "model")
    dataset = build_dataset(data_with_bad_videos / "val_bad.txt", label_names=data_with_bad_videos / "labels.csv")
    accelerator, collator = Accelerator(cpu=True), VideoClassificationCollator()
    single_view = VideoClipTransform(EvalClipTransform(64), 4, training=False, skip_undecodable=True)
    processor = AutoVideoProcessor.from_pretrained(output_dir / "model", trust_remote_code=True)
    final_view = VideoProcessorTransform(processor, skip_undecodable=True, num_clips=1, num_crops=1)
    for transform, distributed in ((single_view, first["history"][-1]), (final_view, first["metrics"])):
        single = evaluate(
            model, DataLoader(dataset.with_transform(transform), batch_size=2, collate_fn=collator), accelerator
        )
        assert (
            (single["num_samples"], single["num_skipped"])
            == (distributed["num_samples"], distributed["num_skipped"])
            == (7, 1)
        )
        assert (single["top1"], single["top5"]) == (distributed["top1"], distributed["top5"])
        assert single["loss"] == pytest.approx(distributed["loss"], rel=1e-5)


# ------------------------------------------------------------------------------------------------------ loading
REMOTE_CODE_FILES = {
    "configuration_ila.py",
    "modeling_ila.py",
    "video_processing_ila.py",
    "video_io.py",
    "sampling.py",
    "transforms.py",
}


def test_training_and_export_write_safetensors_and_never_a_pickle(run_with_bad_videos):
    """Everything a run leaves for users (the exported model, the best weights, metrics) is pickle-free; model
    weights in the resume checkpoints are safetensors too (their optimizer and RNG state is accelerate's own)."""
    result, _ = run_with_bad_videos
    output_dir = Path(result.output_dir)
    for_users = [path for path in output_dir.rglob("*") if path.is_file() and "checkpoints" not in path.parts]
    assert {path.relative_to(output_dir).as_posix() for path in for_users} >= {
        "model/model.safetensors",
        "best/model.safetensors",
        "metrics.json",
    }
    assert [path for path in for_users if path.suffix in PICKLE_SUFFIXES or ".incomplete" in path.name] == []
    for checkpoint in (output_dir / "checkpoints").iterdir():
        names = {path.name for path in checkpoint.iterdir()}
        assert "model.safetensors" in names and not names & {"pytorch_model.bin", "model.bin", "model.pt"}


def _sibling_imports(source: str) -> tuple[set[str], set[str]]:
    """(modules imported relatively, top-level packages imported absolutely) by a Python file."""
    relative, absolute = set(), set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and node.module, (
                f"only flat sibling imports survive save_pretrained: {ast.dump(node)}"
            )
            relative.add(node.module)
        elif isinstance(node, ast.ImportFrom):
            absolute.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            absolute.update(alias.name.split(".")[0] for alias in node.names)
    return relative, absolute


def test_exported_remote_code_is_exactly_our_flat_modules(run_with_bad_videos):
    model_dir = Path(run_with_bad_videos[0].model_dir)
    code_files = {path.name for path in model_dir.glob("*.py")}
    assert code_files == REMOTE_CODE_FILES
    siblings = {name.removesuffix(".py") for name in REMOTE_CODE_FILES}
    for name in sorted(code_files):
        relative, absolute = _sibling_imports((model_dir / name).read_text())
        assert relative <= siblings, (name, relative - siblings)
        assert "ila_hf" not in absolute and "tests" not in absolute, (name, absolute)


class _RunsShellCommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_trojan_inside_a_real_released_checkpoint_is_refused_unexecuted(tmp_path, monkeypatch):
    """A genuine-looking release (weights, optimizer, yacs config) with a command hidden in its scheduler state."""
    import tests.released_checkpoint as released
    from ila_hf.convert import CheckpointConversionError, convert_checkpoint

    marker = tmp_path / "pwned"
    real_scheduler_state = released._scheduler_state
    monkeypatch.setattr(
        released, "_scheduler_state", lambda: {**real_scheduler_state(), "noise": _RunsShellCommand(marker)}
    )
    sizes = dict(width=128, layers=2, patch_size=16, image_size=64, num_frames=4, embed_dim=128, num_classes=174)
    path = tmp_path / "release.pth"
    released.write_released_checkpoint(path, "ssv2", **sizes)
    with pytest.raises(
        CheckpointConversionError, match="Refused to unpickle .*system.*Nothing from the file was executed"
    ):
        convert_checkpoint(path, tmp_path / "out", "ssv2", 4)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_conversion_stays_weights_only_when_torch_is_told_to_allow_pickles(tmp_path, monkeypatch):
    from ila_hf.convert import CheckpointConversionError, convert_checkpoint

    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # overrides torch.load calls that omit weights_only
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "config": _RunsShellCommand(marker)}, path)
    with pytest.raises(CheckpointConversionError, match="Refused to unpickle"):
        convert_checkpoint(path, tmp_path / "out", "ssv2", 4)
    assert not marker.exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"interaction_channels": 0}, r"interaction_channels must be a positive multiple of 4 \(.*\), got 0"),
        ({"interaction_channels": -8}, r"positive multiple of 4 \(.*\), got -8"),
        ({"mit_layers": -1}, "mit_layers counts layers, so it must be >= 0, got -1"),
        ({"prompt_layers": -2}, "prompt_layers counts layers"),
        ({"point_scale": 0.0}, "point_scale shapes the alignment masks and must be a positive number, got 0.0"),
        ({"alignment_window": -0.25}, "alignment_window .* positive number, got -0.25"),
        ({"alignment_slope": float("nan")}, "alignment_slope .* positive number, got nan"),
        ({"jitter_delta": -0.1}, "jitter_delta must be a finite number >= 0"),
        ({"alignment_loss_weight": float("inf")}, "alignment_loss_weight must be a finite number >= 0, got inf"),
        ({"drop_path_rate": 1.0}, r"drop_path_rate is a probability in \[0, 1\), got 1.0"),
        ({"classifier_dropout": -0.5}, "classifier_dropout is a probability"),
    ],
)
def test_config_validation_refuses_values_the_architecture_cannot_use(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        tiny_ila_config(**overrides)


def test_a_saved_config_with_an_invalid_value_is_refused_on_loading(tmp_path):
    tiny_ila_config(mit_layers=0).save_pretrained(tmp_path)  # 0 MIT layers is a valid (if unusual) model
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "mit_layers": -3}))
    with pytest.raises(StrictDataclassClassValidationError, match="mit_layers counts layers"):
        ILAVideoConfig.from_pretrained(tmp_path)


# ------------------------------------------------------------------------------------------------------ hub
HANGING_UPLOAD_SCRIPT = r"""
import sys, threading, time
from huggingface_hub import HfApi
from ila_hf.hub import push_to_hub_in_background

HfApi.create_repo = lambda self, *args, **kwargs: None
HfApi.upload_folder = lambda self, **kwargs: threading.Event().wait()  # a connection that never answers
status = push_to_hub_in_background(sys.argv[1], "someone/ila-tiny").result(timeout=0.5)
print("status:", status.ok, status.error, flush=True)
print("done at:", time.time(), flush=True)  # the process should exit right after this line
"""


@pytest.mark.slow
def test_a_hanging_upload_does_not_keep_a_finished_process_alive(tmp_path):
    (tmp_path / "model").mkdir()
    for name in ("config.json", "video_preprocessor_config.json", "model.safetensors"):  # what an upload requires
        (tmp_path / "model" / name).write_text("{}")
    script = tmp_path / "hanging_upload.py"
    script.write_text(HANGING_UPLOAD_SCRIPT)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(  # an exit that waited for the upload thread would run into this timeout
        [sys.executable, str(script), str(tmp_path / "model")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=60,
    )
    exited = time.time()
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "status: False upload still running after 0.5 s" in completed.stdout
    # From the script's last line to the end of the process: interpreter shutdown only, no wait for the thread
    # (start-up and imports, which vary with the machine's load, are not part of it).
    script_done = float(completed.stdout.split("done at:")[1])
    assert exited - script_done < 10


def test_training_waits_for_a_hanging_upload_no_longer_than_hub_upload_timeout(
    tiny_video_dataset, tiny_clip_dir, tmp_path, monkeypatch
):
    import threading

    from huggingface_hub import HfApi

    release, seen_files = threading.Event(), []

    def upload_folder(self, **kwargs):
        seen_files.append({path.name: path.stat().st_size for path in Path(kwargs["folder_path"]).iterdir()})
        release.wait(120)
        return "https://hub.example/commit/late"

    # The access check at the start (whoami, create_repo) passes; the upload at the end hangs.
    monkeypatch.setattr(HfApi, "whoami", lambda self: {"name": "someone", "auth": {"accessToken": {"role": "write"}}})
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    config = fault_config(
        tiny_video_dataset,
        tiny_clip_dir,
        tmp_path,
        train_data=str(tiny_video_dataset / "videos"),
        epochs=1,
        batch_size=4,
        checkpoint_every_steps=None,
        push_to_hub="someone/ila-tiny",
        hub_upload_timeout=0.5,
    )
    try:
        result = train(config)
    finally:
        release.set()
    assert not result.hub_upload.ok and result.hub_upload.error == "upload still running after 0.5 s"
    # The upload started only once the export was complete: it saw every file at its final size.
    final = {path.name: path.stat().st_size for path in Path(result.model_dir).iterdir()}
    assert seen_files == [final] and {"model.safetensors", "README.md", "modeling_ila.py"} <= set(final)
