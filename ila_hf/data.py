"""Video classification data: `datasets` datasets of videos and labels, decoded lazily into clips.

Every source (`build_dataset`: list files, class folders, `datasets` objects, `save_to_disk` folders, anything
`load_dataset` reads, Hub ids, streamed or not) gives the same form: two columns, `video` (a path, or a
`Video(decode=False)` `{"path", "bytes"}` dict, passed to `load_video` as it is) and `label` (a `ClassLabel` holding
the class names). Nothing is decoded when it is built: `VideoClipTransform`, installed with `Dataset.with_transform`,
samples and decodes the frames of each item when it is read (random frame per segment and training augmentation for
training, the middle frame and the evaluation transform otherwise), and `VideoClassificationCollator` stacks the clips
into `pixel_values` (B, T, 3, H, W) with `labels`, mixing training batches with Mixup/CutMix.

Undecodable videos: with `skip_undecodable=True` the transforms mark an item whose video cannot be decoded (its
`decode_error` says why; its `pixel_values` are zeros of a clip's shape) instead of raising, and the collator reports it
in `skipped_videos` and leaves it out of training batches (evaluation batches keep it, flagged, so that every process
runs the same forward passes); the training loop counts, logs and limits them.

Randomness is a pure function of (seed, epoch, video path): the same run replays the same clips and mixes after a
resume, on any number of processes or data-loader workers.

Streamed datasets (`IterableDataset`) go through `VideoBatchStream`: the same transform and collator, the streams
shared out across processes and data-loader workers, reshuffled per epoch and resumable in the middle of one.
"""

import copy
import csv
import io
import itertools
import logging
import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    Value,
    Video,
    load_dataset,
    load_from_disk,
)
from datasets.distributed import split_dataset_by_node

from .sampling import segment_indices
from .video_io import VideoDecodeError, VideoSource, load_video, video_name


logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp")

# frames (T, H, W, 3) uint8, a seeded generator or None -> pixel values (T, 3, H, W) float
ClipTransform = Callable[[np.ndarray, torch.Generator | None], torch.Tensor]


# ------------------------------------------------------------------------------------------------------ datasets
def read_label_names(path: str | os.PathLike) -> list[str]:
    """
    Class names in label-id order, from an `id,name` CSV (the released label lists; a header row is optional) or a
    text file with one name per line. A repeated id or name, a gap in the ids or an empty file is refused, naming
    the line.
    """
    path = Path(path)
    text = _read_utf8(path)
    if path.suffix.lower() != ".csv":
        numbered = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
        rows = [(reader.line_num, row) for row in reader if row]  # line_num: the file line the row ends on
        if rows and [cell.strip().lower() for cell in rows[0][1]] == ["id", "name"]:
            rows = rows[1:]
        by_id: dict[int, tuple[int, str]] = {}
        for line_number, row in rows:
            if len(row) != 2 or not row[0].strip().isdigit():
                raise ValueError(f"{path}:{line_number}: expected an `id,name` row, got {row!r}.")
            label = int(row[0])
            if label in by_id:
                raise ValueError(
                    f"{path}:{line_number}: label id {label} again (first on line {by_id[label][0]}); each id names "
                    "one class."
                )
            by_id[label] = (line_number, row[1].strip())
        if sorted(by_id) != list(range(len(by_id))):
            raise ValueError(f"{path}: label ids must be 0..{len(by_id) - 1} without gaps, got {sorted(by_id)[:10]}...")
        numbered = [by_id[label] for label in range(len(by_id))]
    if not numbered:
        raise ValueError(f"{path} holds no label names; expected `id,name` rows or one name per line.")
    first_line: dict[str, int] = {}
    for line_number, name in numbered:
        if name in first_line:
            raise ValueError(
                f"{path}:{line_number}: class name {name!r} again (first on line {first_line[name]}); class names must "
                "be distinct."
            )
        first_line[name] = line_number
    return [name for _, name in numbered]


def _read_utf8(path: Path) -> str:
    """A text file's contents; a file that is not UTF-8 is refused naming the line of its first invalid byte."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8."
        ) from None


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
    for line_number, line in enumerate(_read_utf8(list_file).splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise ValueError(f"{list_file}:{line_number}: expected `path label_id`, got {line!r}.")
        paths.append(str((root / parts[0]).resolve()))
        labels.append(int(parts[1]))
    if not paths:
        raise ValueError(f"{list_file} lists no videos; expected `path label_id` lines.")
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
    folders = sorted(_utf8_text(entry.name, entry) for entry in root.iterdir() if entry.is_dir())
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
                paths.append(_utf8_text(str(path.resolve()), path))
                labels.append(label)
    if not paths:
        raise ValueError(f"No videos ({', '.join(extensions)}) found in the class folders of {root}.")
    return _video_dataset(paths, labels, class_names)


def _utf8_text(text: str, path: Path) -> str:
    """`text` (a name or path of `path`, read from the file system) when it is UTF-8, else a ValueError naming `path`.
    Refused rather than skipped: a dataset silently smaller than its folders is worse than one rename, and Arrow
    stores only UTF-8 strings."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(path).decode("utf-8", errors="backslashreplace")
        raise ValueError(f"{shown}: the file name is not UTF-8; rename it (e.g. with `convmv`).") from None
    return text


# ------------------------------------------------------------------------------------------------------ sources
# Column names searched, in this order, when the caller names none and no feature type decides.
VIDEO_COLUMN_NAMES = ("video", "path", "video_path", "file")
LABEL_COLUMN_NAMES = ("label", "labels", "cls")  # `cls`: the WebDataset convention for a class id
# Files a folder of `load_dataset` data holds (a folder without them is read as one folder per class).
DATA_FILE_SUFFIXES = (".parquet", ".arrow", ".tar", ".jsonl", ".json", ".csv")
METADATA_FILE_NAMES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")


def _find_column(features: Features, wanted: str, matches_type: Callable[[Any], bool], names: Sequence[str]) -> str:
    """The one column whose feature `matches_type`, else the one named like `names`; a clear error otherwise."""
    typed = [name for name, feature in features.items() if matches_type(feature)]
    candidates = typed or [name for name in names if name in features]
    if len(candidates) == 1:
        return candidates[0]
    argument = f"{wanted}_column"
    if not candidates:
        raise ValueError(
            f"Found no {wanted} column among the dataset's columns {list(features)}; name it with `{argument}`."
        )
    raise ValueError(f"Several {wanted} columns are possible ({candidates}); name one with `{argument}`.")


class _RenumberLabels:
    """Batched `map` function: a `ClassLabel` column's ids -> the ids of the same class names in `names`."""

    def __init__(self, given: Sequence[str], names: Sequence[str]):
        position = {name: index for index, name in enumerate(names)}
        unknown = sorted(set(given) - set(position))
        if unknown:
            raise ValueError(
                f"The dataset has classes {unknown[:10]} that are not among the {len(names)} label names."
            )
        self.table = [position[name] for name in given]

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        return {"label": [self.table[label] for label in batch["label"]]}


def normalize_video_dataset(
    dataset: Dataset | IterableDataset,
    *,
    video_column: str | None = None,
    label_column: str | None = None,
    label_names: Sequence[str] | str | os.PathLike | None = None,
) -> Dataset | IterableDataset:
    """
    Any `datasets.Dataset` / `IterableDataset` of videos and labels -> the form the rest of ila_hf reads: exactly
    two columns, `video` and `label` (a `ClassLabel`).

    Columns: `video_column` / `label_column`, or by default the one `Video` feature or else the one column named
    video/path/video_path/file, and the one `ClassLabel` or else the one column named label/labels/cls; a
    `ValueError` lists the columns when none or several fit.

    Videos: a `Video` feature is cast to `Video(decode=False)`, so rows hold `{"path", "bytes"}` dicts and nothing
    needs torchcodec; a string column holds paths. Either is passed to `load_video` unchanged.

    Labels: a `ClassLabel` keeps its names (remapped by name when `label_names` orders them differently, e.g. a
    validation split taking the training split's ids); integer ids need `label_names`; strings are mapped through
    `label_names`, or (map-style datasets only) the sorted distinct strings become the names, which is logged.
    """
    if isinstance(label_names, (str, os.PathLike)):
        label_names = read_label_names(label_names)
    if isinstance(dataset, IterableDataset) and dataset.features is None:
        # Streamed CSV / JSON state no types: infer them from the first rows (datasets' own inference; no public
        # spelling of it exists in datasets 5.2).
        dataset = dataset._resolve_features()
    features = dataset.features
    video_column = video_column or _find_column(
        features, "video", lambda feature: isinstance(feature, Video), VIDEO_COLUMN_NAMES
    )
    label_column = label_column or _find_column(
        features, "label", lambda feature: isinstance(feature, ClassLabel), LABEL_COLUMN_NAMES
    )
    for argument, column in (("video_column", video_column), ("label_column", label_column)):
        if column not in features:
            raise ValueError(f"`{argument}={column!r}` is not a column of the dataset: {list(features)}.")
    video_feature, label_feature = features[video_column], features[label_column]
    if not (isinstance(video_feature, Video) or video_feature == Value("string")):
        raise ValueError(
            f"The video column {video_column!r} must be a `Video` feature or strings (paths), got {video_feature}."
        )

    if isinstance(video_feature, Video):  # first: a streamed dataset's renaming would decode with the old feature
        dataset = dataset.cast_column(video_column, Video(decode=False))
    dataset = dataset.select_columns([video_column, label_column])
    renames = {old: new for old, new in ((video_column, "video"), (label_column, "label")) if old != new}
    if renames:  # through temporary names: the two columns may swap names
        dataset = dataset.rename_columns({old: f"__ila_{new}" for old, new in renames.items()})
        dataset = dataset.rename_columns({f"__ila_{new}": new for new in renames.values()})

    if isinstance(label_feature, ClassLabel):
        if label_names is None or list(label_names) == label_feature.names:
            return dataset
        renumber = _RenumberLabels(label_feature.names, label_names)
        features = Features({"video": dataset.features["video"], "label": ClassLabel(names=list(label_names))})
        return dataset.map(renumber, batched=True, features=features)
    if label_feature == Value("string") or label_feature == Value("large_string"):
        if label_names is None:
            if isinstance(dataset, IterableDataset):
                raise ValueError(
                    f"The label column {label_column!r} holds class names; a streamed dataset cannot be scanned for "
                    "them first: give `label_names`."
                )
            label_names = sorted(dataset.unique("label"))
            logger.info(f"Label names collected from the {label_column!r} column, sorted: {label_names}")
    elif not (isinstance(label_feature, Value) and label_feature.dtype.startswith(("int", "uint"))):
        raise ValueError(
            f"The label column {label_column!r} must be a `ClassLabel`, integer ids or class names, "
            f"got {label_feature}."
        )
    elif label_names is None:
        raise ValueError(f"The label column {label_column!r} holds integer ids; give `label_names` for them.")
    return dataset.cast_column("label", ClassLabel(names=list(label_names)))


def _is_saved_dataset(folder: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def _holds_data_files(folder: Path) -> bool:
    """A folder `load_dataset` reads (parquet, arrow, tar shards, or videos with a metadata file)."""
    return any(
        path.is_file() and (path.suffix.lower() in DATA_FILE_SUFFIXES or path.name in METADATA_FILE_NAMES)
        for path in folder.rglob("*")
    )


def _pick_split(datasets: DatasetDict | IterableDatasetDict, split: str | None, source: Any):
    if split is not None:
        if split not in datasets:
            raise ValueError(f"{source} has no split {split!r}; its splits are {list(datasets)}.")
        return datasets[split]
    if len(datasets) == 1:
        return next(iter(datasets.values()))
    raise ValueError(f"{source} has the splits {list(datasets)}; choose one with `split`.")


def build_dataset(
    source: str | os.PathLike | Dataset | IterableDataset,
    *,
    label_names: Sequence[str] | str | os.PathLike | None = None,
    video_root: str | os.PathLike | None = None,
    video_column: str | None = None,
    label_column: str | None = None,
    dataset_config: str | None = None,
    split: str | None = None,
    streaming: bool = False,
    num_shards: int = 64,
) -> Dataset | IterableDataset:
    """
    A video classification dataset in the normalised form (`video` and `label` columns, see
    `normalize_video_dataset`) from any of:

    - a released-format list file (`path label_id` lines; needs `label_names`; `video_root` for relative paths);
    - a folder of class folders (`root/<class>/<video>`, classes from `label_names` or the sorted folder names);
    - a `datasets.Dataset` or `IterableDataset` object;
    - a folder written by `save_to_disk`;
    - what `load_dataset` reads: a local folder or file of parquet / arrow / WebDataset tar shards, a videofolder
      with a metadata file, or a Hub dataset id, with `dataset_config` (its config name) and `split`.

    Args:
        video_column, label_column, label_names: see `normalize_video_dataset`.
        split: the split to take when the source has several (a `DatasetDict`, or `load_dataset` splits).
        streaming: return an `IterableDataset`: `load_dataset` sources stream their files without materialising
            them; map-style sources are wrapped with `to_iterable_dataset(num_shards)` so that processes and
            data-loader workers can share them out (see `VideoBatchStream`).
    """
    if isinstance(source, (Dataset, IterableDataset, DatasetDict, IterableDatasetDict)):
        dataset = source
    else:
        dataset = _load_source(source, label_names, video_root, dataset_config, split, streaming)
    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        dataset = _pick_split(dataset, split, "The dataset")
    dataset = normalize_video_dataset(
        dataset, video_column=video_column, label_column=label_column, label_names=label_names
    )
    if streaming and isinstance(dataset, Dataset):
        dataset = dataset.to_iterable_dataset(num_shards=max(1, min(num_shards, len(dataset))))
    return dataset


def _load_source(source, label_names, video_root, dataset_config, split, streaming):
    """A path or Hub id -> a `Dataset`, `IterableDataset` or dict of them (not yet normalised)."""
    path = Path(source)
    if path.is_dir() and _is_saved_dataset(path):
        return load_from_disk(str(path))
    is_class_folders = path.is_dir() and not _holds_data_files(path)
    is_list_file = path.is_file() and path.suffix.lower() not in DATA_FILE_SUFFIXES
    if (is_class_folders or is_list_file) and split is not None:  # would be ignored: e.g. validate on training data
        raise ValueError(f"{source} is one split (class folders or a list file); `split={split!r}` cannot apply to it.")
    if is_class_folders:
        if isinstance(label_names, (str, os.PathLike)):
            label_names = read_label_names(label_names)
        return dataset_from_class_folders(path, class_names=label_names)
    if is_list_file:
        if label_names is None:
            raise ValueError(f"{path} is a list file of label ids; give `label_names` (an `id,name` CSV or a list).")
        return dataset_from_video_list(path, label_names, video_root)
    if path.is_file():
        builder = {".tar": "webdataset", ".jsonl": "json"}.get(path.suffix.lower(), path.suffix.lower()[1:])
        return load_dataset(builder, data_files=str(path), split=split or "train", streaming=streaming)
    if path.is_dir():
        return load_dataset(str(path), name=dataset_config, split=split, streaming=streaming)
    if path.is_absolute() or os.fspath(source).startswith((".", "~")):
        raise FileNotFoundError(f"{source} does not exist (expected a list file, a folder or a Hub dataset id).")
    return load_dataset(os.fspath(source), name=dataset_config, split=split, streaming=streaming)


def num_examples(dataset: Dataset | IterableDataset) -> int | None:
    """
    Examples in a dataset: `len` for a map-style one; for a streamed one the split's count in its `DatasetInfo`
    when the source states it (Hub datasets with metadata usually do), else None (then train for `max_steps`).
    """
    if isinstance(dataset, Dataset):
        return len(dataset)
    splits = dataset.info.splits or {}
    split_info = splits.get(str(dataset.split)) if dataset.split is not None else None
    return split_info.num_examples if split_info is not None and split_info.num_examples else None


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

    Not torchvision's `v2.MixUp` / `v2.CutMix`, although on a `tv_tensors.Video` batch (B, T, C, H, W) they do mix
    every frame of a clip alike (one lam and one box per batch, applied over all leading dimensions): they draw from
    torch's global random generator and take none of their own, while this draws from the `rng` the collator seeds
    with the batch's clip seeds, so that a batch is mixed the same way in any worker or process and after a resume;
    and they pair each video with its neighbour (`roll(1, 0)`) where the release pairs it with the mirrored one.
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



# ------------------------------------------------------------------------------------------------------ streaming
class _StreamBatches(torch.utils.data.IterableDataset):
    """
    What one data-loader worker (or the main process, without workers) runs: its own stream of the dataset,
    resumed where the checkpoint left it, turned into collated batches, each tagged with the stream's position.
    """

    def __init__(self, stream: "VideoBatchStream", epoch: int, positions: dict[int, dict], rotation: int):
        self.stream = stream
        self.epoch = epoch
        self.positions = positions
        self.rotation = rotation

    def __iter__(self):
        worker = torch.utils.data.get_worker_info()
        num_workers, worker_id = (worker.num_workers, worker.id) if worker is not None else (1, 0)
        # The worker that takes the next batch after a resume continues the stream that was due next.
        index = (worker_id + self.rotation) % num_workers
        owner = self.stream
        streams = owner.world_size * num_workers
        part = split_dataset_by_node(
            owner.dataset,
            rank=owner.rank * num_workers + index,
            world_size=streams,
            # whole shards when there are enough of them (no example is read twice); else every stream reads all
            # examples and keeps one in `streams`
            strategy="shards" if owner.dataset.num_shards >= streams else "examples",
        )
        part.set_epoch(self.epoch)
        position = self.positions.get(index)
        consumed = position["examples"] if position else 0
        if position and not owner.shuffle_buffer_size:
            part.load_state_dict(position["state"])
        rows = part.iter(batch_size=owner.batch_size)  # `iter` leaves worker sharding to us
        if position and owner.shuffle_buffer_size:
            # `load_state_dict` would drop the shuffle buffer's content (datasets refills it with new examples):
            # replay the stream's order instead, skipping the rows already trained on without decoding them.
            rows = itertools.islice(rows, consumed // owner.batch_size, None)
        for rows_batch in rows:
            items = owner.transform(rows_batch)  # {column: [value per item]}
            batch = owner.collator([dict(zip(items, values)) for values in zip(*items.values())])
            consumed += len(rows_batch["label"])
            batch["stream_position"] = {"stream": index, "examples": consumed, "state": part.state_dict()}
            yield batch


class VideoBatchStream:
    """
    Batches of a streamed (`IterableDataset`) video dataset for one process, resumable in the middle of an epoch.

    The dataset (normalised, see `build_dataset(..., streaming=True)`) is cut into `world_size * max(1,
    num_workers)` streams with `datasets.distributed.split_dataset_by_node`: whole shards when the dataset has at
    least that many, else one example in `world_size * num_workers` each. Each data-loader worker reads its own
    stream and runs `transform` (e.g. `VideoClipTransform`, the same per-clip transform as the map-style path) and
    `collator` (`VideoClassificationCollator`) on `batch_size` rows at a time, so undecodable videos are skipped and
    reported in `skipped_videos` exactly as in the map-style path. Streams never share an example, so the processes
    together see every example of an epoch exactly once (evaluation with shuffling off counts each once); they may
    see different numbers of batches.

    Contract for a training loop:
        stream = VideoBatchStream(dataset, transform, collator, batch_size, rank=accelerator.process_index,
                                  world_size=accelerator.num_processes, num_workers=..., shuffle_buffer_size=...)
        accelerator.register_for_checkpointing(stream)    # state_dict / load_state_dict below
        for epoch in ...:
            stream.set_epoch(epoch); transform.set_epoch(epoch)
            for batch in stream:                           # after a resume: the rest of the checkpoint's epoch
                ...  move the tensors to the device; do not `accelerator.prepare` the stream (it would shard again)

    Every process must take the same number of optimizer steps: end an epoch on every process when the first runs
    out (gather a flag per micro-batch), and size the schedule from `num_examples(dataset)` or `max_steps`.

    Resume: `state_dict()` holds, per stream, how many examples it has handed out and `datasets`' own state after
    them, plus how many batches this process has taken. `load_state_dict` then restarts each stream there: without a
    shuffle buffer from `datasets`' state (no re-reading); with one, by replaying the epoch's order and skipping
    the consumed rows undecoded (`datasets` would otherwise lose the buffer's content). The data-loader's round
    robin is rotated so that the resumed run takes its batches in the uninterrupted run's order, exact while every
    stream is still running at the checkpoint. Resume with the same `world_size`, `num_workers` and `batch_size`.

    Randomness: the stream's shard order and shuffle buffer come from `seed` and the epoch (`set_epoch`), the clips'
    sampling and augmentation from the transform's (seed, epoch, video).
    """

    def __init__(
        self,
        dataset: IterableDataset,
        transform: Callable[[dict[str, list]], dict[str, list]],
        collator: Callable[[list[dict]], dict[str, Any]],
        batch_size: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 0,
        shuffle_buffer_size: int = 0,
        seed: int = 0,
        pin_memory: bool = False,
    ):
        if not isinstance(dataset, IterableDataset):
            raise TypeError(f"VideoBatchStream streams a datasets.IterableDataset, got {type(dataset).__name__}.")
        self.dataset = dataset.shuffle(seed=seed, buffer_size=shuffle_buffer_size) if shuffle_buffer_size else dataset
        self.transform = transform
        self.collator = collator
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.num_workers = num_workers
        self.shuffle_buffer_size = shuffle_buffer_size
        self.seed = seed
        self.pin_memory = pin_memory
        self.epoch = 0
        self._position = self._start(0)
        self._resume: dict | None = None

    def _start(self, epoch: int) -> dict:
        return {
            "epoch": epoch,
            "batches": 0,
            "streams": {},
            "world_size": self.world_size,
            "num_workers": self.num_workers,
            "batch_size": self.batch_size,
        }

    def set_epoch(self, epoch: int) -> None:
        """Call before every epoch: reseeds the shard order and the shuffle buffer."""
        self.epoch = epoch

    def __iter__(self):
        position = self._start(self.epoch)
        if self._resume is not None and self._resume["epoch"] == self.epoch:
            position = copy.deepcopy(self._resume)
        self._resume = None
        self._position = position
        producer = _StreamBatches(
            self, self.epoch, dict(position["streams"]), rotation=position["batches"] % max(1, self.num_workers)
        )
        loader = torch.utils.data.DataLoader(
            producer,
            batch_size=None,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            # Its workers' seeds from its own generator: a draw from the global one (which a training loop restores
            # from a checkpoint) would change the dropout of a resumed run.
            generator=torch.Generator().manual_seed(self.seed),
        )
        for batch in loader:
            stream_position = batch.pop("stream_position")
            position["streams"][stream_position.pop("stream")] = stream_position
            position["batches"] += 1
            yield batch
        self._position = self._start(self.epoch + 1)

    def state_dict(self) -> dict:
        """Where this process is: the epoch, batches taken, and each stream's position (see the class docstring)."""
        return copy.deepcopy(self._position)

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict()`: the next iteration over the state's epoch continues where it stopped."""
        for key in ("world_size", "num_workers", "batch_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"The stream's checkpoint was taken with {key}={state[key]}, this run has {getattr(self, key)}; "
                    f"resume with {key}={state[key]} to continue the epoch exactly."
                )
        self._resume = copy.deepcopy(state)
        self.epoch = state["epoch"]


__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoBatchStream",
    "MixupCutmix",
    "VideoClassificationCollator",
    "VideoClipTransform",
    "VideoProcessorTransform",
    "build_dataset",
    "normalize_video_dataset",
    "num_examples",
    "clip_seed",
    "cutmix_box",
    "dataset_from_class_folders",
    "dataset_from_video_list",
    "read_label_names",
    "read_video_list",
    "smooth_one_hot",
]
