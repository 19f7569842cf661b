"""ila_hf.data sources and streaming: `datasets` objects, save_to_disk folders, load_dataset folders and files
(videofolder, parquet bytes, WebDataset tar shards), Hub ids up to the network call, and `VideoBatchStream`."""

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Value, Video

import ila_hf.data
from ila_hf.data import (
    VideoBatchStream,
    VideoClassificationCollator,
    VideoClipTransform,
    build_dataset,
    normalize_video_dataset,
    num_examples,
)
from ila_hf.sampling import segment_indices
from tests.conftest import TRAINING_CLASSES
from tests.helpers import tiny_video_files, write_tar_shards
from tests.videos import read_indices


NORMALISED = Features({"video": Video(decode=False), "label": ClassLabel(names=list(TRAINING_CLASSES))})


pytestmark = pytest.mark.usefixtures("datasets_cache")


@pytest.fixture(scope="module")
def videos(tiny_video_dataset) -> list[tuple[Path, int]]:
    """The 12 tiny videos as (path, label id), in class order."""
    return tiny_video_files(tiny_video_dataset)


def labels_by_content(dataset: Dataset) -> dict[bytes, int]:
    """File content -> label of every row (bytes when the row holds them, else the file at its path)."""
    return {
        row["video"]["bytes"] or Path(row["video"]["path"]).read_bytes(): row["label"] for row in dataset
    }


def expected_by_content(videos) -> dict[bytes, int]:
    return {path.read_bytes(): label for path, label in videos}


# ------------------------------------------------------------------------------------------------------ sources
def test_saved_dataset_with_a_video_feature_loads_its_embedded_bytes_without_decoding(videos, tmp_path):
    features = Features({"clip": Video(), "class": ClassLabel(names=list(TRAINING_CLASSES))})
    rows = {"clip": [str(path) for path, _ in videos], "class": [label for _, label in videos]}
    Dataset.from_dict(rows, features=features).save_to_disk(tmp_path / "saved")

    dataset = build_dataset(tmp_path / "saved")
    assert dataset.features == NORMALISED
    # save_to_disk embeds the files: the rows hold the bytes and only the file name
    assert dataset[3]["video"] == {"path": "bowling_1.mp4", "bytes": videos[3][0].read_bytes()}
    assert dataset["label"] == [label for _, label in videos]


def test_videofolder_with_metadata_gets_sorted_label_names_from_strings(videos, tmp_path):
    folder = tmp_path / "videofolder"
    folder.mkdir()
    lines = ["file_name,action"]
    for index, (path, label) in enumerate(videos):
        (folder / f"{index}.mp4").write_bytes(path.read_bytes())
        lines.append(f"{index}.mp4,{TRAINING_CLASSES[label]}")
    (folder / "metadata.csv").write_text("\n".join(lines) + "\n")

    dataset = build_dataset(folder, label_column="action")
    assert dataset.features == NORMALISED  # TRAINING_CLASSES are sorted already
    assert labels_by_content(dataset) == expected_by_content(videos)


def test_parquet_file_holding_only_bytes_loads_with_its_labels(videos, tmp_path):
    features = Features({"video": Video(), "labels": Value("string")})
    rows = {
        "video": [{"bytes": path.read_bytes(), "path": None} for path, _ in videos],
        "labels": [TRAINING_CLASSES[label] for _, label in videos],
    }
    Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "train.parquet")
    assert set(pq.read_table(tmp_path / "train.parquet")["video"].combine_chunks().field("path").to_pylist()) == {None}

    dataset = build_dataset(tmp_path / "train.parquet", label_names=list(TRAINING_CLASSES))
    assert dataset.features == NORMALISED
    assert all(row["video"]["path"] is None for row in dataset)
    assert labels_by_content(dataset) == expected_by_content(videos)


def test_webdataset_tar_shards_load_with_label_ids_and_given_names(videos, tmp_path):
    write_tar_shards(tmp_path / "shards", videos, num_shards=3)
    dataset = build_dataset(tmp_path / "shards", label_names=list(TRAINING_CLASSES))
    assert dataset.features == NORMALISED
    assert len(dataset) == 12
    assert any((tmp_path / "cache").rglob("*.arrow"))  # map-style: written to the cache
    assert labels_by_content(dataset) == expected_by_content(videos)


def test_webdataset_shards_stream_without_being_materialised(videos, tmp_path):
    write_tar_shards(tmp_path / "shards", videos, num_shards=3)
    dataset = build_dataset(tmp_path / "shards", label_names=list(TRAINING_CLASSES), streaming=True)
    assert dataset.num_shards == 3
    assert dataset.features == NORMALISED
    assert {row["video"]["bytes"]: row["label"] for row in dataset} == expected_by_content(videos)
    assert not any((tmp_path / "cache").rglob("*.arrow"))


def test_list_files_and_class_folders_keep_path_strings(tiny_video_dataset):
    dataset = build_dataset(tiny_video_dataset / "train.txt", label_names=tiny_video_dataset / "labels.csv")
    assert dataset.features == Features({"video": Value("string"), "label": ClassLabel(names=list(TRAINING_CLASSES))})
    assert build_dataset(tiny_video_dataset / "videos")["video"] == dataset["video"]


def test_hub_dataset_id_is_loaded_with_its_config_split_and_streaming(monkeypatch, videos):
    calls = []

    def fake_load_dataset(path, **kwargs):
        calls.append((path, kwargs))
        rows = {"video": [str(path) for path, _ in videos], "label": [label for _, label in videos]}
        features = Features({"video": Video(), "label": ClassLabel(names=list(TRAINING_CLASSES))})
        return Dataset.from_dict(rows, features=features).to_iterable_dataset(num_shards=2)

    monkeypatch.setattr(ila_hf.data, "load_dataset", fake_load_dataset)  # nothing is downloaded
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)  # and a call that slipped through would fail at once
    dataset = build_dataset("someone/kinetics-mini", dataset_config="8-frames", split="validation", streaming=True)
    assert calls == [("someone/kinetics-mini", {"name": "8-frames", "split": "validation", "streaming": True})]
    assert dataset.features == NORMALISED


def test_a_split_of_list_files_or_class_folders_is_refused(tiny_video_dataset):
    for source in (tiny_video_dataset / "train.txt", tiny_video_dataset / "videos"):
        with pytest.raises(ValueError, match=r"is one split \(class folders or a list file\); `split='validation'`"):
            build_dataset(source, label_names=tiny_video_dataset / "labels.csv", split="validation")


def test_missing_local_path_is_not_taken_for_a_hub_id(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset(tmp_path / "nothing-here")


# ------------------------------------------------------------------------------------------------------ columns
def test_columns_are_found_by_name_when_no_feature_type_decides():
    dataset = Dataset.from_dict({"video_path": ["a.mp4", "b.mp4"], "labels": [1, 0], "duration": [1.0, 2.0]})
    normalised = normalize_video_dataset(dataset, label_names=["x", "y"])
    assert normalised.features == Features({"video": Value("string"), "label": ClassLabel(names=["x", "y"])})
    assert normalised["label"] == [1, 0] and normalised["video"] == ["a.mp4", "b.mp4"]


def test_ambiguous_video_columns_are_refused_with_the_candidates():
    dataset = Dataset.from_dict({"path": ["a.mp4"], "file": ["b.mp4"], "label": ["x"]})
    message = r"Several video columns are possible \(\['path', 'file'\]\); name one with `video_column`"
    with pytest.raises(ValueError, match=message):
        normalize_video_dataset(dataset)
    assert normalize_video_dataset(dataset, video_column="file")["video"] == ["b.mp4"]


def test_missing_label_column_is_refused_with_the_columns():
    dataset = Dataset.from_dict({"video": ["a.mp4"], "category": ["x"]})
    with pytest.raises(ValueError, match=r"no label column among the dataset's columns \['video', 'category'\]"):
        normalize_video_dataset(dataset)


def test_integer_labels_without_names_are_refused():
    dataset = Dataset.from_dict({"video": ["a.mp4"], "label": [3]})
    with pytest.raises(ValueError, match="holds integer ids; give `label_names`"):
        normalize_video_dataset(dataset)


def test_string_labels_map_through_given_names_and_unknown_ones_are_refused():
    dataset = Dataset.from_dict({"video": ["a.mp4", "b.mp4"], "label": ["dog", "cat"]})
    assert normalize_video_dataset(dataset, label_names=["cat", "dog"])["label"] == [1, 0]
    with pytest.raises(ValueError, match="fish"):
        normalize_video_dataset(Dataset.from_dict({"video": ["a.mp4"], "label": ["fish"]}), label_names=["cat"])


def test_class_labels_are_remapped_by_name_to_given_names():
    features = Features({"video": Value("string"), "label": ClassLabel(names=["cat", "dog"])})
    dataset = Dataset.from_dict({"video": ["a.mp4", "b.mp4"], "label": [0, 1]}, features=features)
    remapped = normalize_video_dataset(dataset, label_names=["bird", "dog", "cat"])
    assert remapped.features["label"].names == ["bird", "dog", "cat"]
    assert remapped["label"] == [2, 1]
    with pytest.raises(ValueError, match=r"classes \['cat'\] that are not among"):
        normalize_video_dataset(dataset, label_names=["dog"])


def test_streamed_class_names_need_label_names():
    dataset = Dataset.from_dict({"video": ["a.mp4"], "label": ["x"]}).to_iterable_dataset()
    with pytest.raises(ValueError, match="cannot be scanned"):
        normalize_video_dataset(dataset)


def test_num_examples_is_known_for_map_style_and_unknown_for_plain_streams():
    dataset = Dataset.from_dict({"video": ["a.mp4"] * 5, "label": [0] * 5})
    assert num_examples(dataset) == 5
    assert num_examples(dataset.to_iterable_dataset()) is None


# ------------------------------------------------------------------------------------------------------ streaming
def keep_paths(rows):
    """A transform that decodes nothing: the stream's mechanics are what these tests check."""
    return {"video": rows["video"], "labels": rows["label"]}


def collate_paths(items):
    return {"videos": [item["video"] for item in items]}


@pytest.fixture(scope="module")
def stream_source():
    """30 examples in 6 shards."""
    dataset = Dataset.from_dict({"video": [f"v{index:02d}.mp4" for index in range(30)], "label": [0] * 30})
    return build_dataset(dataset, label_names=["only"], streaming=True, num_shards=6)


def read_stream(stream, stop_after=None):
    """The batches' videos; with `stop_after`, stop there and also return the stream's state."""
    batches = []
    for batch in stream:
        batches.append(batch["videos"])
        if len(batches) == stop_after:
            return batches, stream.state_dict()
    return batches, None


def make_stream(source, **kwargs):
    return VideoBatchStream(source, keep_paths, collate_paths, batch_size=4, seed=3, **kwargs)


def test_two_ranks_with_workers_see_every_example_exactly_once(stream_source):
    seen = []
    for rank in range(2):
        batches, _ = read_stream(make_stream(stream_source, rank=rank, world_size=2, num_workers=2))
        seen += [video for batch in batches for video in batch]
    assert sorted(seen) == [f"v{index:02d}.mp4" for index in range(30)]


def test_more_streams_than_shards_still_partition_the_examples(stream_source):
    seen = []
    for rank in range(8):  # 8 streams > 6 shards: one example in 8 each
        batches, _ = read_stream(make_stream(stream_source, rank=rank, world_size=8))
        seen += [video for batch in batches for video in batch]
    assert sorted(seen) == [f"v{index:02d}.mp4" for index in range(30)]


def test_set_epoch_reshuffles_reproducibly(stream_source):
    def order(epoch):
        stream = make_stream(stream_source, shuffle_buffer_size=8)
        stream.set_epoch(epoch)
        return [video for batch in read_stream(stream)[0] for video in batch]

    assert order(1) == order(1)
    assert order(1) != order(2)
    assert sorted(order(1)) == sorted(order(2))


@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("shuffle_buffer_size", [0, 8])
def test_resume_continues_with_exactly_the_remaining_batches(stream_source, num_workers, shuffle_buffer_size):
    def fresh():
        stream = make_stream(stream_source, num_workers=num_workers, shuffle_buffer_size=shuffle_buffer_size)
        stream.set_epoch(2)
        return stream

    uninterrupted, _ = read_stream(fresh())
    head, state = read_stream(fresh(), stop_after=3)
    resumed = fresh()
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    tail, _ = read_stream(resumed)
    assert head + tail == uninterrupted
    assert resumed.state_dict()["epoch"] == 3  # the epoch ended; the next one starts from the top


def test_resume_with_other_workers_is_refused(stream_source):
    _, state = read_stream(make_stream(stream_source, num_workers=2), stop_after=1)
    with pytest.raises(ValueError, match="num_workers=2, this run has 0"):
        make_stream(stream_source).load_state_dict(state)


def test_streamed_clips_are_decoded_and_undecodable_videos_skipped_and_reported(videos, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    rows = {"video": [str(path) for path, _ in videos[:3]] + [str(broken)], "label": [0, 0, 1, 1]}
    dataset = build_dataset(Dataset.from_dict(rows), label_names=list(TRAINING_CLASSES), streaming=True)

    def frames_as_tensor(frames, generator):  # keeps the pixels of 48x64 videos; the placeholder grows to that size
        clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        return torch.nn.functional.interpolate(clip, size=(48, 64), mode="nearest")

    transform = VideoClipTransform(frames_as_tensor, num_frames=4, training=False, skip_undecodable=True)
    stream = VideoBatchStream(dataset, transform, VideoClassificationCollator(), batch_size=4)
    (batch,) = list(stream)
    assert batch["decoded"].tolist() == [True, True, True, False]
    assert list(batch["skipped_videos"]) == [str(broken)]
    assert read_indices(batch["pixel_values"][0].permute(0, 2, 3, 1).numpy().astype(np.uint8)) == list(
        segment_indices(16, 4)
    )


# ------------------------------------------------------------------------------------------------------ decoding bytes
# These read rows that hold the videos' bytes ({"path", "bytes"} dicts), so they need `load_video` to take them.
def frames_of(clip: torch.Tensor) -> list[int]:
    return read_indices(clip.permute(0, 2, 3, 1).numpy().astype(np.uint8))


def keep_frames(frames, generator):
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


def test_parquet_bytes_decode_into_the_same_clips_as_the_files(videos, tmp_path):
    features = Features({"video": Video(), "label": ClassLabel(names=list(TRAINING_CLASSES))})
    rows = {
        "video": [{"bytes": path.read_bytes(), "path": None} for path, _ in videos],
        "label": [label for _, label in videos],
    }
    Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "train.parquet")
    from_bytes = build_dataset(tmp_path / "train.parquet")
    paths = Dataset.from_dict({"video": [str(path) for path, _ in videos], "label": rows["label"]})
    from_files = build_dataset(paths, label_names=list(TRAINING_CLASSES))

    evaluation = VideoClipTransform(keep_frames, num_frames=4, training=False)
    bytes_items, file_items = from_bytes.with_transform(evaluation)[:3], from_files.with_transform(evaluation)[:3]
    assert bytes_items["labels"] == file_items["labels"] == [0, 0, 1]
    for bytes_clip, file_clip in zip(bytes_items["pixel_values"], file_items["pixel_values"]):
        assert torch.equal(bytes_clip, file_clip)
        assert frames_of(bytes_clip) == list(segment_indices(16, 4))
    training = VideoClipTransform(keep_frames, num_frames=4, training=True, seed=5)
    segments = [(0, 4), (4, 8), (8, 11), (11, 15)]  # a random frame in each of 4 segments of 16 frames
    for clip in from_bytes.with_transform(training)[:3]["pixel_values"]:
        assert all(low <= index <= high for index, (low, high) in zip(frames_of(clip), segments))


def test_streamed_tar_shards_train_every_video_once_per_epoch(videos, tmp_path):
    write_tar_shards(tmp_path / "shards", videos, num_shards=4)
    dataset = build_dataset(tmp_path / "shards", label_names=list(TRAINING_CLASSES), streaming=True)
    transform = VideoClipTransform(keep_frames, num_frames=4, training=True, seed=1, skip_undecodable=True)
    stream = VideoBatchStream(
        dataset, transform, VideoClassificationCollator(), batch_size=2, num_workers=2, shuffle_buffer_size=4
    )
    labels = []
    for batch in stream:
        assert "skipped_videos" not in batch or not batch["skipped_videos"]
        assert batch["pixel_values"].shape[1:] == (4, 3, 48, 64)
        labels += batch["labels"].tolist()
    assert sorted(labels) == sorted(label for _, label in videos)
