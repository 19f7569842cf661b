"""ila_hf.data: datasets from list files and class folders, lazy clip decoding, collation, Mixup/CutMix."""

import os
import types

import numpy as np
import pytest
import torch
from datasets import Dataset

from ila_hf.data import (
    MixupCutmix,
    VideoClassificationCollator,
    VideoClipTransform,
    VideoProcessorTransform,
    build_dataset,
    clip_seed,
    cutmix_box,
    dataset_from_class_folders,
    dataset_from_video_list,
    read_label_names,
    read_video_list,
    smooth_one_hot,
)
from ila_hf.sampling import segment_indices
from ila_hf.video_io import load_video
from tests.conftest import TRAINING_CLASSES
from tests.videos import INPUT_FORMS, FakeFrameDecoder, read_indices, video_in_form


def frames_as_tensor(frames, generator):
    """A clip transform that keeps the decoded pixels, so tests can read the frame indices back."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()


def decoded_indices(clip: torch.Tensor) -> list[int]:
    return read_indices(clip.permute(0, 2, 3, 1).numpy().astype(np.uint8))


# ------------------------------------------------------------------------------------------------------ files
def test_label_names_from_released_csv_keep_commas_in_quoted_names(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text('id,name\n0,Approaching something\n1,"Laying something on its side, not upright"\n')
    assert read_label_names(path) == ["Approaching something", "Laying something on its side, not upright"]


def test_label_names_from_text_file_one_per_line(tmp_path):
    path = tmp_path / "classes.txt"
    path.write_text("abseiling\nair drumming\n\n")
    assert read_label_names(path) == ["abseiling", "air drumming"]


def test_label_names_csv_with_gap_in_ids_is_refused(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("0,a\n2,b\n")
    with pytest.raises(ValueError, match="without gaps"):
        read_label_names(path)


def test_label_names_with_a_repeated_id_or_name_are_refused_naming_the_line(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("id,name\n0,archery\n1,bowling\n1,cycling\n")
    with pytest.raises(ValueError, match=r"labels.csv:4: label id 1 again \(first on line 3\)"):
        read_label_names(path)
    path.write_text('0,archery\n1,"bowling"\n2,bowling\n')
    with pytest.raises(ValueError, match=r"labels.csv:3: class name 'bowling' again \(first on line 2\)"):
        read_label_names(path)
    classes = tmp_path / "classes.txt"
    classes.write_text("archery\n\narchery\n")
    with pytest.raises(ValueError, match=r"classes.txt:3: class name 'archery' again \(first on line 1\)"):
        read_label_names(classes)


def test_an_empty_label_file_or_list_file_is_refused_naming_it(tmp_path):
    (tmp_path / "labels.csv").write_text("id,name\n")
    with pytest.raises(ValueError, match=r"labels.csv holds no label names"):
        read_label_names(tmp_path / "labels.csv")
    (tmp_path / "train.txt").write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match=r"train.txt lists no videos; expected `path label_id` lines"):
        build_dataset(tmp_path / "train.txt", label_names=["archery"])


def test_a_list_file_that_is_not_utf8_is_refused_naming_the_line(tmp_path):
    (tmp_path / "train.txt").write_bytes(b"a.mp4 0\ncaf\xe9.mp4 0\n")
    with pytest.raises(ValueError, match=r"train.txt:2: not UTF-8 text"):
        read_video_list(tmp_path / "train.txt")


def test_a_class_folder_file_name_that_is_not_utf8_is_refused_naming_it(tiny_video_dataset, tmp_path):
    """Arrow holds only UTF-8 paths; the file is named (not skipped: a dataset silently smaller is worse)."""
    root = tmp_path / "videos"
    (root / "archery").mkdir(parents=True)
    (root / "archery" / "good.mp4").write_bytes((tiny_video_dataset / "videos/archery/archery_0.mp4").read_bytes())
    (root / "archery" / os.fsdecode(b"caf\xe9.mp4")).write_bytes(b"")
    with pytest.raises(ValueError, match=r"archery/caf\\xe9.mp4: the file name is not UTF-8; rename it"):
        build_dataset(root)


def test_video_list_resolves_paths_against_video_root_and_allows_spaces(tmp_path):
    list_file = tmp_path / "lists" / "train.txt"
    list_file.parent.mkdir()
    list_file.write_text("a/clip one.mp4 3\n# comment\n\nb/two.mp4 0\n")
    paths, labels = read_video_list(list_file, video_root=tmp_path / "root")
    assert paths == [
        str((tmp_path / "root" / "a" / "clip one.mp4").resolve()),
        str((tmp_path / "root/b/two.mp4").resolve()),
    ]
    assert labels == [3, 0]


def test_video_list_line_without_label_is_refused(tmp_path):
    list_file = tmp_path / "train.txt"
    list_file.write_text("a.mp4 1\nb.mp4\n")
    with pytest.raises(ValueError, match="train.txt:2"):
        read_video_list(list_file)


def test_dataset_from_list_file_has_path_and_class_label_columns(tiny_video_dataset):
    dataset = dataset_from_video_list(tiny_video_dataset / "train.txt", tiny_video_dataset / "labels.csv")
    assert len(dataset) == 12
    assert dataset.features["label"].names == list(TRAINING_CLASSES)
    assert dataset[3]["label"] == 1
    assert dataset[3]["video"] == str(tiny_video_dataset / "videos" / "bowling" / "bowling_1.mp4")


def test_dataset_from_list_file_refuses_label_ids_beyond_the_names(tiny_video_dataset):
    with pytest.raises(ValueError, match="outside"):
        dataset_from_video_list(tiny_video_dataset / "train.txt", ["only", "two"])


def test_dataset_from_class_folders_uses_sorted_folder_names(tiny_video_dataset):
    dataset = dataset_from_class_folders(tiny_video_dataset / "videos")
    assert dataset.features["label"].names == sorted(TRAINING_CLASSES)
    assert len(dataset) == 12
    assert all(f"/{TRAINING_CLASSES[row['label']]}/" in row["video"] for row in dataset)


def test_dataset_from_class_folders_takes_given_class_ids(tiny_video_dataset):
    names = list(reversed(TRAINING_CLASSES))
    dataset = dataset_from_class_folders(tiny_video_dataset / "videos", class_names=names)
    assert dataset.features["label"].names == names
    assert {row["label"] for row in dataset if "/archery/" in row["video"]} == {5}


def test_dataset_from_class_folders_refuses_folders_outside_the_class_names(tiny_video_dataset):
    with pytest.raises(ValueError, match="not among"):
        dataset_from_class_folders(tiny_video_dataset / "videos", class_names=["archery"])


def test_build_dataset_reads_a_folder_as_classes_and_a_file_as_a_list(tiny_video_dataset):
    assert len(build_dataset(tiny_video_dataset / "videos")) == 12
    assert len(build_dataset(tiny_video_dataset / "val.txt", label_names=tiny_video_dataset / "labels.csv")) == 7
    with pytest.raises(ValueError, match="label_names"):
        build_dataset(tiny_video_dataset / "val.txt")


# ------------------------------------------------------------------------------------------------------ clips
def test_evaluation_clips_take_the_middle_frame_of_every_segment(tiny_video_dataset):
    dataset = build_dataset(tiny_video_dataset / "videos")
    dataset = dataset.with_transform(VideoClipTransform(frames_as_tensor, num_frames=4, training=False))
    item = dataset[0]
    assert item["pixel_values"].shape == (4, 3, 48, 64)
    assert decoded_indices(item["pixel_values"]) == segment_indices(16, 4).tolist() == [2, 6, 9, 13]


def test_training_clips_are_random_per_segment_and_reproducible_from_seed_epoch_and_path(tiny_video_dataset):
    plain = build_dataset(tiny_video_dataset / "videos")
    path = plain[0]["video"]
    transform = VideoClipTransform(frames_as_tensor, num_frames=4, training=True, seed=7)
    dataset = plain.with_transform(transform)

    def indices_at(epoch):
        transform.set_epoch(epoch)
        return decoded_indices(dataset[0]["pixel_values"])

    first = indices_at(0)
    expected = segment_indices(16, 4, random=True, generator=np.random.default_rng(clip_seed(7, 0, path)))
    assert first == expected.tolist()
    assert indices_at(0) == first
    assert any(indices_at(epoch) != first for epoch in range(1, 6))
    starts_ends = [(0, 4), (4, 8), (8, 11), (11, 15)]  # seg = 15 / 4, rounded half to even
    for epoch in range(6):
        assert all(low <= index <= high for index, (low, high) in zip(indices_at(epoch), starts_ends))


def test_training_clip_transform_gets_a_generator_seeded_by_the_clip_seed(tiny_video_dataset):
    seen = []

    def record(frames, generator):
        seen.append(generator.initial_seed() if generator is not None else None)
        return frames_as_tensor(frames, generator)

    dataset = build_dataset(tiny_video_dataset / "videos")
    training = VideoClipTransform(record, num_frames=4, training=True, seed=3)
    item = dataset.with_transform(training)[5]
    assert seen == [item["clip_seed"]] == [clip_seed(3, 0, dataset[5]["video"])]
    evaluation_item = dataset.with_transform(VideoClipTransform(record, num_frames=4, training=False))[5]
    assert seen[-1] is None
    assert "clip_seed" not in evaluation_item


def test_processor_transform_gives_every_view_of_the_exported_protocol(tiny_video_dataset):
    from ila_hf.video_processing_ila import ILAVideoProcessor

    processor = ILAVideoProcessor(num_frames=4, crop_size={"height": 32, "width": 32})
    dataset = build_dataset(tiny_video_dataset / "videos")
    single = dataset.with_transform(VideoProcessorTransform(processor))[0]
    views = dataset.with_transform(VideoProcessorTransform(processor, num_clips=2, num_crops=3))[0]
    assert single["pixel_values"].shape == (4, 3, 32, 32) and single["labels"] == 0
    assert views["pixel_values"].shape == (6, 4, 3, 32, 32)


def test_evaluation_clips_are_the_same_from_every_input_form(tiny_video_dataset):
    path = tiny_video_dataset / "videos" / "archery" / "archery_0.mp4"
    transform = VideoClipTransform(frames_as_tensor, num_frames=4, training=False)
    expected = transform({"video": [str(path)], "label": [0]})["pixel_values"][0]
    assert decoded_indices(expected) == [2, 6, 9, 13]
    every_frame, _ = load_video(path)
    forms = [video_in_form(path, form) for form in INPUT_FORMS] + [FakeFrameDecoder(every_frame, fps=25.0)]
    clips = transform({"video": forms, "label": [0] * len(forms)})["pixel_values"]
    for form, clip in zip([*INPUT_FORMS, "torchcodec decoder"], clips):
        assert torch.equal(clip, expected), form


def test_training_clips_from_bytes_are_seeded_by_their_content(tiny_video_dataset):
    path = tiny_video_dataset / "videos" / "archery" / "archery_0.mp4"
    data = path.read_bytes()
    transform = VideoClipTransform(frames_as_tensor, num_frames=4, training=True, seed=5)
    videos = [data, {"path": None, "bytes": data}, {"path": str(path), "bytes": data}]
    items = transform({"video": videos, "label": [0] * 3})
    assert items["clip_seed"][:2] == [clip_seed(5, 0, data)] * 2 and items["clip_seed"][2] == clip_seed(5, 0, str(path))
    expected = segment_indices(16, 4, random=True, generator=np.random.default_rng(clip_seed(5, 0, data)))
    assert decoded_indices(items["pixel_values"][0]) == expected.tolist()
    assert torch.equal(items["pixel_values"][0], items["pixel_values"][1])


def test_a_datasets_video_column_of_bytes_trains_and_names_undecodable_videos(tiny_video_dataset):
    paths = sorted((tiny_video_dataset / "videos").rglob("*.mp4"))[:2]
    rows = [{"path": path.name, "bytes": path.read_bytes()} for path in paths] + [{"path": "bad.mp4", "bytes": b"junk"}]
    dataset = Dataset.from_dict({"video": rows, "label": [0, 0, 1]})  # the layout of a `Video(decode=False)` column
    transform = VideoClipTransform(frames_as_tensor, num_frames=4, training=True, skip_undecodable=True)
    batch = VideoClassificationCollator()([dataset.with_transform(transform)[index] for index in range(3)])
    assert batch["pixel_values"].shape == (2, 4, 3, 48, 64)
    assert list(batch["skipped_videos"]) == ["bad.mp4"]
    assert batch["skipped_videos"]["bad.mp4"].startswith("bad.mp4: not a readable video container")


@pytest.mark.parametrize("size", [32, 64])
def test_evaluation_clip_transform_equals_the_video_processor_single_view(tiny_video_dataset, size):
    """Training clips without augmentation (`augment=False`) are preprocessed as the processor's evaluation clips:
    the same frames, resize, crop and normalisation (up to float rounding of the two resize implementations)."""
    from ila_hf.transforms import EvalClipTransform
    from ila_hf.video_processing_ila import ILAVideoProcessor

    dataset = build_dataset(tiny_video_dataset / "videos")  # 64x48 videos: the short side is resized in both paths
    processor = ILAVideoProcessor.for_config(types.SimpleNamespace(num_frames=4, image_size=size))
    by_processor = dataset.with_transform(VideoProcessorTransform(processor))[:3]["pixel_values"]
    by_transform = dataset.with_transform(VideoClipTransform(EvalClipTransform(size), 4, training=False))[:3]
    for processed, transformed in zip(by_processor, by_transform["pixel_values"]):
        torch.testing.assert_close(processed, transformed, rtol=0, atol=1e-5)


def test_clip_seed_depends_on_seed_epoch_and_video():
    seeds = {clip_seed(0, 0, "a.mp4"), clip_seed(1, 0, "a.mp4"), clip_seed(0, 1, "a.mp4"), clip_seed(0, 0, "b.mp4")}
    assert len(seeds) == 4
    assert clip_seed(0, 0, "a.mp4") == clip_seed(0, 0, "a.mp4")


# ------------------------------------------------------------------------------------------------------ collation
def test_collator_stacks_clips_and_class_ids():
    examples = [{"pixel_values": torch.full((4, 3, 8, 8), float(i)), "labels": i, "clip_seed": i} for i in range(3)]
    batch = VideoClassificationCollator()(examples)
    assert batch["pixel_values"].shape == (3, 4, 3, 8, 8)
    assert batch["labels"].tolist() == [0, 1, 2]
    assert batch["labels"].dtype == torch.long


def test_collator_with_label_smoothing_only_gives_smoothed_targets():
    examples = [{"pixel_values": torch.zeros(2, 3, 4, 4), "labels": 1, "clip_seed": 0}]
    batch = VideoClassificationCollator(label_smoothing=0.1, num_labels=4)(examples)
    assert torch.allclose(batch["labels"], torch.tensor([[0.025, 0.925, 0.025, 0.025]]))


def test_smooth_one_hot_rows_sum_to_one():
    targets = smooth_one_hot(torch.tensor([0, 3]), 5, 0.1)
    assert torch.allclose(targets.sum(-1), torch.ones(2))
    assert targets[0, 0].item() == pytest.approx(0.92)
    assert targets[0, 1].item() == pytest.approx(0.02)


def test_mixup_matches_a_manual_computation():
    mix = MixupCutmix(num_labels=3, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=0.1)
    pixel_values = torch.randn(4, 2, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 1])
    mixed, targets = mix(pixel_values, labels, np.random.default_rng(11))

    rng = np.random.default_rng(11)
    assert rng.random() < 1.0  # the mix_prob draw
    lam = rng.beta(0.8, 0.8)
    smoothed = torch.full((4, 3), 0.1 / 3)
    smoothed[torch.arange(4), labels] = 0.9 + 0.1 / 3
    assert torch.allclose(mixed, lam * pixel_values + (1 - lam) * pixel_values.flip(0))
    assert torch.allclose(targets, lam * smoothed + (1 - lam) * smoothed.flip(0))
    assert torch.allclose(targets.sum(-1), torch.ones(4))


def test_cutmix_pastes_one_box_into_every_frame_and_weights_labels_by_its_area():
    mix = MixupCutmix(num_labels=2, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=0.0)
    pixel_values = torch.stack([torch.zeros(3, 3, 16, 16), torch.ones(3, 3, 16, 16)])
    mixed, targets = mix(pixel_values, torch.tensor([0, 1]), np.random.default_rng(5))

    rng = np.random.default_rng(5)
    rng.random()
    lam = rng.beta(1.0, 1.0)
    top, bottom, left, right = cutmix_box(16, 16, lam, rng)
    area = (bottom - top) * (right - left)
    assert area > 0
    box = torch.zeros(16, 16, dtype=torch.bool)
    box[top:bottom, left:right] = True
    for frame in mixed[0]:  # video 0 got video 1's pixels inside the box, in every frame and channel
        assert torch.equal(frame == 1, box.expand(3, -1, -1))
    corrected = 1 - area / 256
    assert torch.allclose(targets, torch.tensor([[corrected, 1 - corrected], [1 - corrected, corrected]]))


def test_mixup_and_cutmix_alternate_by_switch_probability_and_targets_always_sum_to_one():
    mix = MixupCutmix(num_labels=5)
    pixel_values = torch.randn(6, 2, 3, 8, 8)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    kinds = set()
    for seed in range(20):
        mixed, targets = mix(pixel_values, labels, np.random.default_rng(seed))
        assert torch.allclose(targets.sum(-1), torch.ones(6))
        assert targets.min() > 0  # smoothing leaves no zero
        changed = (mixed != pixel_values).flatten(2)  # (B, T, ...)
        # Mixup changes every pixel, CutMix only a box; either way, all frames of a clip alike.
        kinds.add("cutmix" if not changed.all() else "mixup")
        assert torch.equal(changed[:, 0], changed[:, 1])
    assert kinds == {"mixup", "cutmix"}


def test_collator_mixes_deterministically_from_the_clip_seeds():
    collator = VideoClassificationCollator(MixupCutmix(num_labels=3))
    examples = [{"pixel_values": torch.randn(2, 3, 8, 8), "labels": i % 3, "clip_seed": 100 + i} for i in range(4)]
    first, second = collator(examples), collator(examples)
    assert torch.equal(first["pixel_values"], second["pixel_values"])
    assert torch.equal(first["labels"], second["labels"])
    assert first["labels"].shape == (4, 3)
    reseeded = collator([{**example, "clip_seed": example["clip_seed"] + 1} for example in examples])
    assert not torch.equal(first["labels"], reseeded["labels"])


def test_collator_never_mixes_evaluation_items():
    collator = VideoClassificationCollator(MixupCutmix(num_labels=3), label_smoothing=0.1, num_labels=3)
    examples = [{"pixel_values": torch.randn(2, 3, 8, 8), "labels": i} for i in range(3)]
    batch = collator(examples)
    assert batch["labels"].tolist() == [0, 1, 2]
    assert torch.equal(batch["pixel_values"], torch.stack([example["pixel_values"] for example in examples]))
