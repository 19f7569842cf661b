"""The training loop on every kind of dataset source: a `save_to_disk` dataset with a `Video` feature, a parquet file
that holds only the videos' bytes, and WebDataset tar shards, streamed or not; resumed inside an epoch; evaluated on
two processes; with undecodable items. (The sources themselves are tested in test_datasets_sources.py.)"""

import json
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value, Video

from ila_hf.training import TrainingConfig, train
from tests.conftest import TRAINING_CLASSES
from tests.helpers import launch_two_processes, loop_settings, tiny_video_files, write_tar_shards


pytestmark = pytest.mark.usefixtures("one_torch_thread", "datasets_cache")

NOT_A_VIDEO = b"not a video"


def write_saved_dataset(folder: Path, videos) -> str:
    """A `save_to_disk` folder with a `Video` feature (the files embedded) and a `ClassLabel`, under other names."""
    features = Features({"clip": Video(), "action": ClassLabel(names=list(TRAINING_CLASSES))})
    rows = {"clip": [str(path) for path, _ in videos], "action": [label for _, label in videos]}
    Dataset.from_dict(rows, features=features).save_to_disk(folder)
    return str(folder)


def write_parquet_bytes(folder: Path, videos) -> str:
    """A parquet file whose video column holds only bytes (no paths) and whose labels are class names."""
    features = Features({"video": Video(), "labels": Value("string")})
    rows = {
        "video": [{"bytes": path.read_bytes(), "path": None} for path, _ in videos],
        "labels": [TRAINING_CLASSES[label] for _, label in videos],
    }
    folder.mkdir()
    Dataset.from_dict(rows, features=features).to_parquet(folder / "train.parquet")
    return str(folder / "train.parquet")


def write_shards(folder: Path, videos) -> str:
    write_tar_shards(folder, videos, num_shards=3)
    return str(folder)


def exported_weights(result) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(result.model_dir) / "model.safetensors")


# ------------------------------------------------------------------------------------------------------ resume
SOURCES = {
    # map-style: the DataLoader path
    "save_to_disk": (write_saved_dataset, dict(streaming=False)),
    # streamed without a shuffle buffer: resumed from `datasets`' own state
    "parquet_bytes": (write_parquet_bytes, dict(streaming=True, shuffle_buffer_size=0)),
    # streamed with a shuffle buffer and 2 data-loader workers: resumed by replaying the epoch's order
    "tar_shards": (write_shards, dict(streaming=True, shuffle_buffer_size=4, num_workers=2)),
}


@pytest.mark.parametrize("source", list(SOURCES))
def test_run_resumed_inside_an_epoch_ends_with_the_weights_of_an_uninterrupted_run(
    source, tiny_video_dataset, tiny_clip_dir, tmp_path
):
    """4 optimizer steps of the 6 in an epoch; the interrupted run stops after 2 (with a checkpoint) and resumes."""
    write, source_settings = SOURCES[source]
    train_data = write(tmp_path / source, tiny_video_files(tiny_video_dataset))

    def run(output_dir, **kwargs) -> object:
        settings = loop_settings(
            tiny_video_dataset,
            tiny_clip_dir,
            train_data=train_data,
            validation_data=None,
            max_steps=4,
            output_dir=str(tmp_path / output_dir),
            **{**source_settings, **kwargs},
        )
        return train(TrainingConfig(**settings))

    uninterrupted = run("uninterrupted")
    stopped = run("interrupted", stop_after_steps=2)
    assert stopped.stopped_early and stopped.global_step == 2 and stopped.model_dir is None
    resumed = run("interrupted", resume=True)
    assert (uninterrupted.global_step, uninterrupted.epoch) == (resumed.global_step, resumed.epoch) == (4, 1)
    expected, actual = exported_weights(uninterrupted), exported_weights(resumed)
    assert expected.keys() == actual.keys()
    assert [name for name in expected if not torch.equal(expected[name], actual[name])] == []


# ------------------------------------------------------------------------------------------------------ step count
def test_stream_stating_its_size_trains_its_epochs_without_max_steps(tiny_video_dataset, tiny_clip_dir, tmp_path):
    """A parquet folder whose dataset card states 12 examples: an epoch of 6 steps (batch 2)."""
    write_parquet_bytes(tmp_path / "parquet", tiny_video_files(tiny_video_dataset))
    (tmp_path / "parquet" / "README.md").write_text(
        "---\ndataset_info:\n  splits:\n  - name: train\n    num_bytes: 0\n    num_examples: 12\n---\n"
    )
    settings = loop_settings(
        tiny_video_dataset,
        tiny_clip_dir,
        train_data=str(tmp_path / "parquet"),
        validation_data=None,
        streaming=True,
        epochs=1,
        checkpoint_every_steps=None,
        output_dir=str(tmp_path / "run"),
    )
    result = train(TrainingConfig(**settings))
    assert (result.global_step, result.epoch) == (6, 1)


def test_stream_of_unknown_size_without_max_steps_is_refused(tiny_video_dataset, tiny_clip_dir, tmp_path):
    shards = write_shards(tmp_path / "shards", tiny_video_files(tiny_video_dataset))
    settings = loop_settings(
        tiny_video_dataset, tiny_clip_dir, train_data=shards, streaming=True, output_dir=str(tmp_path / "run")
    )
    message = r"shards does not state its number of examples.*give max_steps \(--max-steps\)"
    with pytest.raises(ValueError, match=message):
        train(TrainingConfig(**settings))


# ------------------------------------------------------------------------------------------------------ faults
def test_undecodable_items_of_streams_are_skipped_and_counted(tiny_video_dataset, tiny_clip_dir, tmp_path, capsys):
    """`ila-hf train --streaming`: one broken item among the training shards' 12 videos and the validation shards'
    7; every other validation video is evaluated once."""
    from ila_hf.cli import main

    videos = tiny_video_files(tiny_video_dataset)
    write_shards(tmp_path / "train", videos + [(NOT_A_VIDEO, 0)])
    write_shards(tmp_path / "validation", videos[::2] + videos[1:2] + [(NOT_A_VIDEO, 1)])
    arguments = {
        "--train-data": tmp_path / "train",
        "--validation-data": tmp_path / "validation",
        "--label-names": tiny_video_dataset / "labels.csv",
        "--clip-model": tiny_clip_dir,
        "--num-frames": 4,
        "--batch-size": 4,
        "--num-workers": 0,
        "--max-steps": 3,  # of the 4 batches of 13 items; the broken item (shard 0's last) is in the second
        "--shuffle-buffer-size": 0,
        "--max-bad-video-fraction": 0.2,  # 1 in 8 validation items
        "--export": "last",
        "--output-dir": tmp_path / "run",
    }
    assert main(["train", "--streaming", *(str(item) for pair in arguments.items() for item in pair)]) == 0
    assert "Final metrics: " in capsys.readouterr().out
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["global_step"] == 3
    for metrics in (summary["history"][-1], summary["final"]):
        assert (metrics["num_samples"], metrics["num_skipped"]) == (7, 1)
    # named by their WebDataset keys: the 13th training item (shard 0's fifth), the 8th validation item
    assert set(summary["undecodable_videos"]) == {"0_4.mp4", "1_2.mp4"}


# ------------------------------------------------------------------------------------------------------ processes
TRAIN_SCRIPT = """
import json, sys
from ila_hf.training import TrainingConfig, train
train(TrainingConfig(**json.loads(sys.argv[1])))
"""


@pytest.mark.slow
def test_two_processes_stream_train_and_evaluate_every_validation_video_once(
    tiny_video_dataset, tiny_clip_dir, tmp_path
):
    """2 processes (gloo) on 3 training shards hold 8 and 4 videos: each epoch ends for both after 2 steps. The
    validation shards (7 videos and a broken item, shared out unevenly) give exactly one process's numbers."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoVideoProcessor

    from ila_hf import ILAForVideoClassification
    from ila_hf.data import VideoClassificationCollator, VideoProcessorTransform, build_dataset
    from ila_hf.training import evaluate

    videos = tiny_video_files(tiny_video_dataset)
    write_shards(tmp_path / "train", videos)
    write_shards(tmp_path / "validation", videos[::2] + videos[1:2] + [(NOT_A_VIDEO, 1)])
    settings = loop_settings(
        tiny_video_dataset,
        tiny_clip_dir,
        train_data=str(tmp_path / "train"),
        validation_data=str(tmp_path / "validation"),
        streaming=True,
        max_steps=3,
        max_bad_video_fraction=0.2,  # 1 in 8 validation items
        cpu=True,
        output_dir=str(tmp_path / "run"),
    )
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    launch_two_processes(script, [json.dumps(settings)])
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["global_step"] == 3  # epoch 0: 2 steps, validated; epoch 1: the third, validated
    history = [(entry["epoch"], entry["num_samples"], entry["num_skipped"]) for entry in summary["history"]]
    assert history == [(0, 7, 1), (1, 7, 1)]

    model = ILAForVideoClassification.from_pretrained(tmp_path / "run" / "model")
    processor = AutoVideoProcessor.from_pretrained(tmp_path / "run" / "model", trust_remote_code=True)
    dataset = build_dataset(tiny_video_dataset / "val.txt", label_names=tiny_video_dataset / "labels.csv")
    loader = DataLoader(
        dataset.with_transform(VideoProcessorTransform(processor, num_clips=1, num_crops=1)),
        batch_size=2,
        collate_fn=VideoClassificationCollator(),
    )
    single = evaluate(model, loader, Accelerator(cpu=True))
    distributed = summary["final"]
    assert (single["num_samples"], single["top1"], single["top5"]) == (7, distributed["top1"], distributed["top5"])
    assert single["loss"] == pytest.approx(distributed["loss"], rel=1e-5)
