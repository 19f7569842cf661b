"""Video classification data: `datasets.Dataset`s of video paths and labels, decoded lazily into clips.

A dataset built here has two columns, `video` (an absolute path) and `label` (a `ClassLabel` holding the class
names). Nothing is decoded when it is built: `VideoClipTransform`, installed with `Dataset.with_transform`, samples
and decodes the frames of each item when it is read (random frame per segment and training augmentation for
training, the middle frame and the evaluation transform otherwise), and `VideoClassificationCollator` stacks the clips
into `pixel_values` (B, T, 3, H, W) with `labels`, mixing training batches with Mixup/CutMix.

Undecodable videos: with `skip_undecodable=True` the transforms mark an item whose video cannot be decoded (its
`decode_error` says why; its `pixel_values` are zeros of a clip's shape) instead of raising, and the collator reports it
in `skipped_videos` and leaves it out of training batches (evaluation batches keep it, flagged, so that every process
runs the same forward passes); the training loop counts, logs and limits them.

Randomness is a pure function of (seed, epoch, video path): the same run replays the same clips and mixes after a
resume, on any number of processes or data-loader workers.
"""

import csv
import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Value

from .sampling import segment_indices
from .video_io import VideoDecodeError, VideoSource, load_video, video_name


VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")

# frames (T, H, W, 3) uint8, a seeded generator or None -> pixel values (T, 3, H, W) float
ClipTransform = Callable[[np.ndarray, torch.Generator | None], torch.Tensor]


# ------------------------------------------------------------------------------------------------------ datasets
def read_label_names(path: str | os.PathLike) -> list[str]:
    """
    Class names in label-id order, from an `id,name` CSV (the released label lists; a header row is optional) or a
    text file with one name per line.
    """
    path = Path(path)
    if path.suffix.lower() != ".csv":
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with path.open(newline="", encoding="utf-8") as file:
        rows = [row for row in csv.reader(file) if row]
    if rows and [cell.strip().lower() for cell in rows[0]] == ["id", "name"]:
        rows = rows[1:]
    names = {}
    for line_number, row in enumerate(rows, start=1):
        if len(row) != 2 or not row[0].strip().isdigit():
            raise ValueError(f"{path}: expected `id,name` rows, got {row!r} (data row {line_number}).")
        names[int(row[0])] = row[1].strip()
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{path}: label ids must be 0..{len(names) - 1} without gaps, got {sorted(names)[:10]}...")
    return [names[index] for index in range(len(names))]


def read_video_list(
    list_file: str | os.PathLike, video_root: str | os.PathLike | None = None
) -> tuple[list[str], list[int]]:
    """
    Parse a list file in the released format: `relative/path.mp4 label_id` per line (the last whitespace-separated
    field is the label, so paths may contain spaces). Relative paths are resolved against `video_root` (default:
    the list file's folder).

    Returns:
        (absolute video paths, label ids)
    """
    list_file = Path(list_file)
    root = Path(video_root) if video_root is not None else list_file.parent
    paths, labels = [], []
    for line_number, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{line_number}: expected `path label_id`, got {line!r}.")
        paths.append(str((root / parts[0]).resolve()))
        labels.append(int(parts[1]))
    return paths, labels


def _video_dataset(paths: Sequence[str], labels: Sequence[int], label_names: Sequence[str]) -> Dataset:
    bad = sorted({label for label in labels if not 0 <= label < len(label_names)})
    if bad:
        raise ValueError(f"Label ids {bad[:10]} are outside [0, {len(label_names) - 1}] ({len(label_names)} classes).")
    features = Features({"video": Value("string"), "label": ClassLabel(names=list(label_names))})
    return Dataset.from_dict({"video": list(paths), "label": list(labels)}, features=features)


def dataset_from_video_list(
    list_file: str | os.PathLike,
    label_names: Sequence[str] | str | os.PathLike,
    video_root: str | os.PathLike | None = None,
) -> Dataset:
    """
    A dataset from a released-format list file (see `read_video_list`).

    Args:
        list_file: `relative/path.mp4 label_id` lines.
        label_names: class names in id order, or a file for `read_label_names`.
        video_root: folder the paths are relative to (default: the list file's folder).
    """
    if isinstance(label_names, (str, os.PathLike)):
        label_names = read_label_names(label_names)
    paths, labels = read_video_list(list_file, video_root)
    return _video_dataset(paths, labels, label_names)


def dataset_from_class_folders(
    root: str | os.PathLike,
    class_names: Sequence[str] | None = None,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
) -> Dataset:
    """
    A dataset from a folder-per-class layout, `root/<class name>/<video>`, searched recursively below each class
    folder. Classes are the sorted folder names unless `class_names` fixes them (and their ids), e.g. to give a
    validation split the training split's ids.
    """
    root = Path(root)
    folders = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    if class_names is None:
        class_names = folders
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
        raise ValueError(f"{root} has class folders {unknown} that are not among the given class names.")
    extensions = tuple(extension.lower() for extension in extensions)
    paths, labels = [], []
    for label, name in enumerate(class_names):
        class_dir = root / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in extensions:
                paths.append(str(path.resolve()))
                labels.append(label)
    if not paths:
        raise ValueError(f"No videos ({', '.join(extensions)}) found in the class folders of {root}.")
    return _video_dataset(paths, labels, class_names)


def build_dataset(
    source: str | os.PathLike,
    *,
    label_names: Sequence[str] | str | os.PathLike | None = None,
    video_root: str | os.PathLike | None = None,
) -> Dataset:
    """
    A dataset from either layout: a folder is read as one folder per class, a file as a released-format list
    (which then needs `label_names`).
    """
    source = Path(source)
    if source.is_dir():
        if isinstance(label_names, (str, os.PathLike)):
            label_names = read_label_names(label_names)
        return dataset_from_class_folders(source, class_names=label_names)
    if not source.is_file():
        raise FileNotFoundError(f"{source} is neither a list file nor a folder of class folders.")
    if label_names is None:
        raise ValueError(f"{source} is a list file of label ids; give `label_names` (an `id,name` CSV or a list).")
    return dataset_from_video_list(source, label_names, video_root)


# ------------------------------------------------------------------------------------------------------ clips
def clip_seed(seed: int, epoch: int, video: VideoSource) -> int:
    """
    The seed of one training clip: a function of the run's seed, the epoch and the video only: its path (a
    `datasets` dict's path when it has one), else its encoded bytes, else `video_io.video_name`.
    """
    if isinstance(video, dict) and video.get("path"):
        video = video["path"]
    elif isinstance(video, dict) and video.get("bytes") is not None:
        video = video["bytes"]
    if isinstance(video, (bytes, bytearray, memoryview)):
        key = zlib.crc32(video)
    else:
        key = zlib.crc32(video_name(video).encode("utf-8"))
    sequence = np.random.SeedSequence([seed, epoch, key])
    return int(sequence.generate_state(1, dtype=np.uint64)[0] >> 1)


class VideoClipTransform:
    """
    `Dataset.with_transform` callable: decodes a batch of rows `{"video": [...], "label": [...]}` into
    `{"pixel_values": [(T, 3, H, W) tensors], "labels": [ints]}`, plus `"clip_seed": [ints]` in training. A video is
    any input `video_io.load_video` reads: a path or URL, encoded bytes, a binary file object, a `datasets` video
    dict `{"path", "bytes"}` (what a `Video(decode=False)` column holds) or a torchcodec decoder.

    Training: TSN segment sampling with a random frame per segment, then `clip_transform` (augmentation), both
    seeded by `clip_seed(seed, epoch, path)`; call `set_epoch` before every epoch. Evaluation: the middle frame of
    every segment and a deterministic `clip_transform`.

    Args:
        clip_transform: frames (T, H, W, 3) uint8 and a `torch.Generator` (training) or None -> (T, 3, H, W) float.
        num_frames: frames per clip, T.
        training: random sampling and a seeded generator (True) or deterministic evaluation clips (False).
        seed: the run's seed.
        skip_undecodable: mark items whose video raises `VideoDecodeError` (the error in `decode_error`, the
            video's name (`video_io.video_name`: its path) in `video`, zeros as `pixel_values`) for
            `VideoClassificationCollator`, instead of raising.
    """

    def __init__(
        self,
        clip_transform: ClipTransform,
        num_frames: int,
        *,
        training: bool,
        seed: int = 0,
        skip_undecodable: bool = False,
    ):
        self.clip_transform = clip_transform
        self.num_frames = num_frames
        self.training = training
        self.seed = seed
        self.skip_undecodable = skip_undecodable
        self.epoch = 0
        self._placeholder: torch.Tensor | None = None

    def placeholder(self) -> torch.Tensor:
        """Zeros of a clip's shape, standing in for an undecodable video (made once, from a black clip)."""
        if self._placeholder is None:
            black = np.zeros((self.num_frames, 16, 16, 3), dtype=np.uint8)
            generator = torch.Generator().manual_seed(0) if self.training else None
            self._placeholder = torch.zeros_like(self.clip_transform(black, generator))
        return self._placeholder

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clip(self, video: VideoSource) -> tuple[torch.Tensor, int]:
        """One video -> (pixel values (T, 3, H, W), its clip seed)."""
        seed = clip_seed(self.seed, self.epoch, video)
        rng = np.random.default_rng(seed) if self.training else None
        frames, _ = load_video(
            video,
            lambda metadata: segment_indices(
                metadata.total_num_frames, self.num_frames, random=self.training, generator=rng
            ),
        )
        generator = torch.Generator().manual_seed(seed) if self.training else None
        return self.clip_transform(frames, generator), seed

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        clips, seeds, errors = [], [], []
        for video in batch["video"]:
            try:
                clip, seed = self.clip(video)
                error = None
            except VideoDecodeError as decode_error:
                if not self.skip_undecodable:
                    raise
                clip, seed, error = self.placeholder(), clip_seed(self.seed, self.epoch, video), str(decode_error)
            clips.append(clip)
            seeds.append(seed)
            errors.append(error)
        items = {"pixel_values": clips, "labels": list(batch["label"])}
        if self.training:  # marks training clips: the collator mixes only these
            items["clip_seed"] = seeds
        if self.skip_undecodable:
            items.update(video=[video_name(video) for video in batch["video"]], decode_error=errors)
        return items


class VideoProcessorTransform:
    """
    `Dataset.with_transform` callable running a video processor (e.g. `ILAVideoProcessor`) on the batch's paths:
    `{"pixel_values": [(T, 3, H, W) or (V, T, 3, H, W) tensors], "labels": [ints]}`. With `num_clips` / `num_crops`
    processor kwargs this gives the multi-view evaluation protocol, exactly as the exported processor computes it.
    With `skip_undecodable=True`, undecodable videos are marked as `VideoClipTransform` marks them.
    """

    def __init__(self, video_processor, *, skip_undecodable: bool = False, **processor_kwargs):
        self.video_processor = video_processor
        self.skip_undecodable = skip_undecodable
        self.processor_kwargs = processor_kwargs

    def _process(self, videos: list[str]) -> list[torch.Tensor]:
        return list(self.video_processor(videos, return_tensors="pt", **self.processor_kwargs)["pixel_values"])

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        videos = list(batch["video"])
        try:
            clips, errors = self._process(videos), [None] * len(videos)
        except VideoDecodeError:
            if not self.skip_undecodable:
                raise
            clips, errors = [], []
            for video in videos:  # the whole batch failed: one video at a time finds the undecodable ones
                try:
                    clips.append(self._process([video])[0])
                    errors.append(None)
                except VideoDecodeError as decode_error:
                    clips.append(torch.zeros_like(self._process([np.zeros((1, 16, 16, 3), dtype=np.uint8)])[0]))
                    errors.append(str(decode_error))
        items = {"pixel_values": clips, "labels": list(batch["label"])}
        if self.skip_undecodable:
            items.update(video=[video_name(video) for video in videos], decode_error=errors)
        return items


# ------------------------------------------------------------------------------------------------------ mixing
def smooth_one_hot(labels: torch.Tensor, num_labels: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class ids (B,) -> soft targets (B, K): 1 - smoothing + smoothing / K on the class, smoothing / K elsewhere."""
    off_value = smoothing / num_labels
    targets = torch.full((labels.shape[0], num_labels), off_value, dtype=torch.float32)
    return targets.scatter_(1, labels.long().view(-1, 1), 1.0 - smoothing + off_value)


def cutmix_box(height: int, width: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A box covering about 1 - lam of the frame, centred uniformly at random, clipped: (top, bottom, left, right)."""
    ratio = math.sqrt(1.0 - lam)
    box_height, box_width = int(height * ratio), int(width * ratio)
    centre_y, centre_x = int(rng.integers(height)), int(rng.integers(width))
    top, bottom = np.clip([centre_y - box_height // 2, centre_y + box_height // 2], 0, height)
    left, right = np.clip([centre_x - box_width // 2, centre_x + box_width // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


@dataclass
class MixupCutmix:
    """
    Batch-level Mixup / CutMix with label smoothing, as in the released recipe. Each video is mixed with the video
    at the mirrored batch position (`flip(0)`); the same weight, and for CutMix the same box, applies to every frame
    of a clip.

    Per batch: with probability `mix_prob` mix at all; then CutMix with probability `switch_prob` (when both are
    enabled), else Mixup. Mixup: lam ~ Beta(mixup_alpha, mixup_alpha), x = lam x + (1 - lam) x_flipped. CutMix:
    lam ~ Beta(cutmix_alpha, cutmix_alpha), a box of about (1 - lam) of the frame is pasted from the flipped batch
    and lam is corrected to the box's real area. Targets: lam y + (1 - lam) y_flipped of the smoothed one-hot y.
    """

    num_labels: int
    mixup_alpha: float = 0.8
    cutmix_alpha: float = 1.0
    switch_prob: float = 0.5
    label_smoothing: float = 0.1
    mix_prob: float = 1.0

    def __call__(
        self, pixel_values: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """pixel_values (B, T, 3, H, W), labels (B,) class ids -> mixed pixel values, soft targets (B, K)."""
        targets = smooth_one_hot(labels, self.num_labels, self.label_smoothing)
        use_mixup, use_cutmix = self.mixup_alpha > 0, self.cutmix_alpha > 0
        if not (use_mixup or use_cutmix) or rng.random() >= self.mix_prob:
            return pixel_values, targets
        cutmix = use_cutmix and (not use_mixup or rng.random() < self.switch_prob)
        flipped = pixel_values.flip(0)
        if cutmix:
            lam = float(rng.beta(self.cutmix_alpha, self.cutmix_alpha))
            height, width = pixel_values.shape[-2:]
            top, bottom, left, right = cutmix_box(height, width, lam, rng)
            pixel_values = pixel_values.clone()
            pixel_values[..., top:bottom, left:right] = flipped[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        else:
            lam = float(rng.beta(self.mixup_alpha, self.mixup_alpha))
            pixel_values = pixel_values * lam + flipped * (1.0 - lam)
        return pixel_values, targets * lam + targets.flip(0) * (1.0 - lam)


class VideoClassificationCollator:
    """
    Stacks `VideoClipTransform` items into `{"pixel_values": (B, T, 3, H, W), "labels": ...}`.

    Training items (those carrying a `clip_seed`) get the recipe's targets: with `mixup`, a `MixupCutmix` mixes the
    batch, seeded by the items' clip seeds, so a batch is mixed the same way whichever process or worker collates
    it; without, labels are smoothed soft targets (B, K) when `label_smoothing` > 0. Evaluation items are never
    mixed and keep class ids (B,), so one collator serves both (as the `Trainer` needs).

    Items from transforms with `skip_undecodable=True` add `skipped_videos` ({path: reason} of the undecodable ones)
    to the batch. Undecodable training items are left out: the batch holds the decodable ones (maybe none: then
    `pixel_values` and `labels` are empty and the batch has nothing to train on). Evaluation batches keep every item,
    undecodable ones with their zero placeholders, and add `decoded` (B,) bool: every process runs the same forward
    passes and gathers the same number of rows, and metrics leave the undecodable ones out exactly.
    """

    def __init__(self, mixup: MixupCutmix | None = None, label_smoothing: float = 0.0, num_labels: int | None = None):
        if label_smoothing and num_labels is None and mixup is None:
            raise ValueError("Label smoothing needs `num_labels` to build soft targets.")
        self.mixup = mixup
        self.label_smoothing = label_smoothing
        self.num_labels = num_labels

    def __call__(self, examples: list[dict]) -> dict[str, Any]:
        if not any("decode_error" in example for example in examples):
            return self._stack(examples)
        decoded = [example.get("decode_error") is None for example in examples]
        if not all("clip_seed" in example for example in examples):  # evaluation
            batch = self._stack(examples)
            batch["decoded"] = torch.tensor(decoded)
        elif any(decoded):
            batch = self._stack([example for example, ok in zip(examples, decoded) if ok])
        else:
            batch = {"pixel_values": torch.empty(0), "labels": torch.empty(0, dtype=torch.long)}
        batch["skipped_videos"] = {
            example["video"]: example["decode_error"] for example, ok in zip(examples, decoded) if not ok
        }
        return batch

    def _stack(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        pixel_values = torch.stack([example["pixel_values"] for example in examples])
        labels = torch.tensor([example["labels"] for example in examples], dtype=torch.long)
        if not all("clip_seed" in example for example in examples):
            return {"pixel_values": pixel_values, "labels": labels}
        if self.mixup is not None:
            seeds = [example["clip_seed"] for example in examples]
            pixel_values, labels = self.mixup(pixel_values, labels, np.random.default_rng(seeds))
        elif self.label_smoothing:
            labels = smooth_one_hot(labels, self.num_labels, self.label_smoothing)
        return {"pixel_values": pixel_values, "labels": labels}


__all__ = [
    "VIDEO_EXTENSIONS",
    "MixupCutmix",
    "VideoClassificationCollator",
    "VideoClipTransform",
    "VideoProcessorTransform",
    "build_dataset",
    "clip_seed",
    "cutmix_box",
    "dataset_from_class_folders",
    "dataset_from_video_list",
    "read_label_names",
    "read_video_list",
    "smooth_one_hot",
]
