"""Classify a long video window by window: which action happens when.

A window of ``window`` seconds slides over the whole video every ``stride`` seconds
(`sampling.sliding_window_indices`); each window is one clip of the model's ``num_frames`` frames, sampled inside it
with the evaluation rule. The video is decoded once, front to back (`video_io.iter_video_frames`); each decoded frame
is preprocessed once by the model's `ILAVideoProcessor` (resize, crop, normalise) and kept only while a window not yet
classified needs it, so memory depends on the window, the stride and the batch size, never on the video's length.
Complete windows are classified in batches.

The result is a `Timeline`: per-window top-k classes with start and end times, segments (runs of windows with the same
top class), and a picture (`Timeline.save_image`). Class names are the model's ``config.id2label``, whichever head
produced the logits.
"""

import json
import logging
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from tqdm.auto import tqdm

from .inference import view_probabilities
from .sampling import sliding_window_indices
from .video_io import (
    StreamedFrame,
    VideoDecodeError,
    VideoFileMetadata,
    VideoSource,
    iter_video_frames,
    video_name,
)


logger = logging.getLogger(__name__)


@dataclass
class TimelineWindow:
    """
    One window of a timeline.

    Attributes:
        start (`float`): seconds from the video's first frame to the window's first frame.
        end (`float`): seconds to the end of the window's last frame (``start + window``, or the video's end).
        labels (`list[str]`): the top-k classes, most probable first.
        scores (`list[float]`): their probabilities.
        probabilities (`np.ndarray`): (num_labels,) ``float32`` softmax over every class, in ``id2label`` order.
    """

    start: float
    end: float
    labels: list[str]
    scores: list[float]
    probabilities: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "predictions": [{"label": label, "score": score} for label, score in zip(self.labels, self.scores)],
        }


@dataclass
class TimelineSegment:
    """
    Consecutive windows with the same top class, over the part of the video they stand for.

    Each window stands for the time closer to its centre than to its neighbours' centres (the first from 0 s, the last
    to the video's end), so segments tile the video without overlapping although windows overlap.

    Attributes:
        start (`float`), end (`float`): seconds.
        label (`str`): the windows' top class.
        score (`float`): its mean probability over the windows.
        num_windows (`int`): windows in the segment.
    """

    start: float
    end: float
    label: str
    score: float
    num_windows: int

    def to_dict(self) -> dict:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "label": self.label,
            "score": self.score,
            "num_windows": self.num_windows,
        }


@dataclass
class Timeline:
    """
    The windows of one video, in time order, and what follows from them.

    Attributes:
        video (`str`): the video's name (`video_io.video_name`).
        class_names (`list[str]`): every class, in ``id2label`` order.
        windows (`list[TimelineWindow]`): in time order; together they cover the whole video.
    """

    video: str
    class_names: list[str]
    windows: list[TimelineWindow]

    @property
    def duration(self) -> float:
        """Seconds covered: the end of the last window (the video's length)."""
        return self.windows[-1].end

    @property
    def probabilities(self) -> np.ndarray:
        """(num_windows, num_labels) ``float32``."""
        return np.stack([window.probabilities for window in self.windows])

    def window_spans(self) -> np.ndarray:
        """(num_windows, 2) seconds each window stands for: from the midpoint between its centre and the previous
        window's centre to the midpoint with the next one (0 s and the video's end at the ends)."""
        centres = np.array([(window.start + window.end) / 2 for window in self.windows])
        midpoints = (centres[1:] + centres[:-1]) / 2
        return np.stack([np.concatenate([[0.0], midpoints]), np.concatenate([midpoints, [self.duration]])], axis=1)

    def segments(self) -> list[TimelineSegment]:
        """Runs of consecutive windows with the same top class, in time order (see `TimelineSegment`)."""
        probabilities = self.probabilities
        top_classes = probabilities.argmax(axis=1)
        spans = self.window_spans()
        # First window of each run: where the top class differs from the previous window's.
        run_starts = np.flatnonzero(np.diff(top_classes, prepend=-1))
        run_ends = np.append(run_starts[1:], len(top_classes))
        return [
            TimelineSegment(
                start=float(spans[first, 0]),
                end=float(spans[last - 1, 1]),
                label=self.class_names[top_classes[first]],
                score=float(probabilities[first:last, top_classes[first]].mean()),
                num_windows=int(last - first),
            )
            for first, last in zip(run_starts, run_ends)
        ]

    def save_image(self, path: str | os.PathLike, **kwargs) -> None:
        """Write `draw_timeline(self, **kwargs)` to ``path`` (PNG for a ``.png`` name)."""
        draw_timeline(self, **kwargs).save(path)


def _window_plan(metadata: VideoFileMetadata, num_frames: int, window: float, stride: float):
    window_length = max(1, round(window * metadata.fps))
    frame_stride = stride * metadata.fps
    bounds, indices = sliding_window_indices(metadata.total_num_frames, num_frames, window_length, frame_stride)
    return bounds / metadata.fps, indices


def _check_seconds(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive number of seconds, got {value!r}.")


def iter_timeline(
    model,
    video_processor,
    video: VideoSource,
    *,
    window: float = 2.0,
    stride: float = 1.0,
    top_k: int = 5,
    batch_size: int = 8,
    progress: bool = False,
) -> Iterator[TimelineWindow]:
    """
    Classify every window of a video, yielding each as soon as its batch is classified (see the module docstring).

    Args:
        model: an `ILAForVideoClassification` (either head) in eval mode; clips have ``model.config.num_frames``
            frames and classes are named by ``model.config.id2label``.
        video_processor: its `ILAVideoProcessor` (resize, crop and normalisation of the decoded frames).
        video: any input `video_io.load_video` reads (path, URL, bytes, file object, `datasets` video dict).
        window (`float`): seconds per window. A video shorter than that is one window.
        stride (`float`): seconds from one window's start to the next; the last window ends at the video's end.
        top_k (`int`): classes reported per window (clipped to the number of classes).
        batch_size (`int`): windows per forward pass; memory holds the preprocessed frames of about this many
            windows (plus one window's decoded frames), however long the video.
        progress (`bool`): show a progress bar with the time left (on stderr).

    Yields:
        `TimelineWindow`, in time order.

    Raises:
        `VideoDecodeError`: the video cannot be read (windows before the failure have been yielded by then).
        `ValueError`: ``window`` or ``stride`` is not a positive number of seconds.
    """
    _check_seconds("window", window)
    _check_seconds("stride", stride)
    num_frames = model.config.num_frames
    class_names = [model.config.id2label[index] for index in range(model.config.num_labels)]
    top_k = min(top_k, len(class_names))
    plan = {}
    progress_bar = tqdm(disable=not progress, unit="window", desc=video_name(video), dynamic_ncols=True)

    def plan_windows(metadata: VideoFileMetadata) -> np.ndarray:
        plan["times"], plan["indices"] = _window_plan(metadata, num_frames, window, stride)
        return plan["indices"]

    def classify(first: int, last: int) -> Iterator[TimelineWindow]:
        """Windows ``first`` to ``last - 1``, whose frames are all in ``processed``."""
        clips = torch.stack([processed[index] for index in plan["indices"][first:last].ravel().tolist()])
        clips = clips.unflatten(0, (last - first, num_frames))  # (B, T, 3, H, W)
        probabilities = view_probabilities(model, clips.to(model.device, model.dtype), max_batch_size=batch_size).cpu()
        scores, classes = probabilities.topk(top_k)
        for offset, (start, end) in enumerate(plan["times"][first:last].tolist()):
            yield TimelineWindow(
                start=start,
                end=end,
                labels=[class_names[index] for index in classes[offset].tolist()],
                scores=scores[offset].tolist(),
                probabilities=probabilities[offset].numpy(),
            )
        progress_bar.update(last - first)

    decoded: list[StreamedFrame] = []  # decoded frames not preprocessed yet: those since the last complete window
    processed: dict[int, torch.Tensor] = {}  # frame index -> (3, H, W), while a window not yet classified needs it
    first_pending = num_complete = 0  # windows [first_pending, num_complete) are complete and not yet classified
    with progress_bar:
        for frame in iter_video_frames(video, plan_windows):
            indices = plan["indices"]  # (num_windows, T), planned when the first frame was decoded
            if progress_bar.total is None:
                progress_bar.total = len(indices)
                progress_bar.refresh()
            decoded.append(frame)
            # A window is complete once its last frame has arrived; last frames increase from window to window.
            previously_complete = num_complete
            while num_complete < len(indices) and indices[num_complete, -1] <= frame.index:
                num_complete += 1
            if num_complete == previously_complete:
                continue
            _preprocess_into(processed, decoded, video_processor)  # shrinks them to the model's input size
            decoded.clear()
            if num_complete - first_pending >= batch_size or num_complete == len(indices):
                yield from classify(first_pending, num_complete)
                first_pending = num_complete
                if first_pending < len(indices):
                    for index in [index for index in processed if index < indices[first_pending, 0]]:
                        del processed[index]


def _preprocess_into(processed: dict[int, torch.Tensor], frames: list[StreamedFrame], video_processor) -> None:
    """Resize, crop and normalise ``frames`` (one processor call) into ``processed`` by frame index."""
    pixel_values = video_processor(
        np.stack([frame.image for frame in frames]),
        do_sample_frames=False,
        num_clips=1,
        num_crops=1,
        return_tensors="pt",
    ).pixel_values[0]  # (N, 3, H, W)
    processed.update(zip([frame.index for frame in frames], pixel_values))


def predict_timeline(model, video_processor, video: VideoSource, **kwargs) -> Timeline:
    """
    The `Timeline` of a video: `iter_timeline` (same arguments) with its windows collected.

    Example:

    ```python
    timeline = predict_timeline(model, processor, "match.mp4", window=2.0, stride=1.0, progress=True)
    for segment in timeline.segments():
        print(f"{segment.start:7.1f} - {segment.end:7.1f} s  {segment.label}")
    timeline.save_image("match_timeline.png")
    ```
    """
    class_names = [model.config.id2label[index] for index in range(model.config.num_labels)]
    return Timeline(video_name(video), class_names, list(iter_timeline(model, video_processor, video, **kwargs)))


# Class colours of the top-class band (matplotlib's "tab10") and the probability colour map (viridis, 5 stops).
_CLASS_COLOURS = np.array(
    [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
     (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
)  # fmt: skip
_OTHER_CLASS_COLOUR = (200, 200, 200)
_VIRIDIS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)


def _colour_map(values: np.ndarray) -> np.ndarray:
    """(...,) values in [0, 1] -> (..., 3) ``uint8`` viridis colours."""
    position = np.clip(values, 0.0, 1.0) * (len(_VIRIDIS) - 1)
    low = np.minimum(position.astype(int), len(_VIRIDIS) - 2)
    weight = (position - low)[..., None]
    return ((1 - weight) * _VIRIDIS[low] + weight * _VIRIDIS[low + 1]).round().astype(np.uint8)


def _fitted(text: str, font, max_width: float) -> str:
    """``text``, shortened with an ellipsis to fit ``max_width`` pixels ("" if nothing fits)."""
    if font.getlength(text) <= max_width:
        return text
    while text and font.getlength(text + "…") > max_width:
        text = text[:-1]
    return text + "…" if text else ""


def _tick_step(duration: float, max_ticks: int = 10) -> float:
    """A round step (1, 2 or 5 times a power of ten) giving at most ``max_ticks`` ticks over ``duration``."""
    magnitude = 10 ** math.floor(math.log10(duration / max_ticks))
    return next(factor * magnitude for factor in (1, 2, 5, 10) if duration / (factor * magnitude) <= max_ticks)


def _shown_classes(timeline: Timeline, spans: np.ndarray, max_classes: int) -> list[int]:
    """Classes that are some window's top class, longest total time first, then the most probable on average."""
    probabilities = timeline.probabilities
    time_on_top = np.zeros(len(timeline.class_names))
    np.add.at(time_on_top, probabilities.argmax(axis=1), spans[:, 1] - spans[:, 0])
    order = np.lexsort((-probabilities.mean(axis=0), -time_on_top))  # last key sorts first
    return order[:max_classes].tolist()


def draw_timeline(timeline: Timeline, width: int = 1200, max_classes: int = 8, font_size: int = 14) -> Image.Image:
    """
    A picture of the timeline: a band naming the top class of each segment, under it a heat strip of the class
    probabilities over time (one row per class, viridis: dark 0, yellow 1), and a time axis in seconds.

    The rows are the classes that are some window's top class (longest first), then the most probable others, up to
    ``max_classes``. The picture's height depends on the number of rows and the font size, not on the video's length.

    Returns:
        `PIL.Image.Image`: RGB, ``width`` pixels wide.
    """
    font = ImageFont.load_default(size=font_size)
    spans = timeline.window_spans()
    rows = _shown_classes(timeline, spans, max_classes)
    padding, line = font_size, round(font_size * 1.6)  # line: the height of one row of text
    label_width = min(width // 3, max(font.getlength(timeline.class_names[index]) for index in rows + [0]))
    label_width = round(max(label_width, font.getlength("top class")))
    left, right = padding + label_width + padding, width - padding
    title_top, band_top = padding, padding + line + padding // 2
    heat_top = band_top + line + padding // 2
    axis_top = heat_top + len(rows) * line
    height = axis_top + 2 * line + padding
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    def x_of(seconds: float) -> int:
        return round(left + seconds / timeline.duration * (right - left))

    duration_text = f"  ({timeline.duration:.1f} s, {len(timeline.windows)} windows)"
    title = _fitted(timeline.video, font, right - padding - font.getlength(duration_text)) + duration_text
    draw.text((padding, title_top), title, fill="black", font=font)

    # Top-class band: one box per segment, named where the name fits.
    draw.text((padding, band_top + line // 2), "top class", fill="black", font=font, anchor="lm")
    colour_of = {index: tuple(_CLASS_COLOURS[rank % len(_CLASS_COLOURS)]) for rank, index in enumerate(rows)}
    for segment in timeline.segments():
        index = timeline.class_names.index(segment.label)
        colour = colour_of.get(index, _OTHER_CLASS_COLOUR)
        x0, x1 = x_of(segment.start), x_of(segment.end)
        draw.rectangle((x0, band_top, max(x0, x1 - 1), band_top + line - 1), fill=colour)
        name = _fitted(segment.label, font, x1 - x0 - 4)
        if name:
            text_colour = "black" if np.dot(colour, (0.299, 0.587, 0.114)) > 140 else "white"
            draw.text(((x0 + x1) / 2, band_top + line / 2), name, fill=text_colour, font=font, anchor="mm")

    # Heat strip: each pixel column shows the window that stands for its time.
    column_times = (np.arange(left, right) + 0.5 - left) / (right - left) * timeline.duration
    column_windows = np.minimum(np.searchsorted(spans[:, 1], column_times, side="right"), len(spans) - 1)
    heat = _colour_map(timeline.probabilities[column_windows][:, rows].T)  # (rows, columns, 3)
    strip = Image.fromarray(np.repeat(heat, line, axis=0))
    image.paste(strip, (left, heat_top))
    for row, index in enumerate(rows):
        y = heat_top + row * line
        draw.line((left, y, right - 1, y), fill="white")  # separates the rows
        name = _fitted(timeline.class_names[index], font, label_width)
        draw.text((padding, y + line / 2), name, fill="black", font=font, anchor="lm")

    # Time axis, and the colour scale under the class names.
    step = _tick_step(timeline.duration)
    for tick in np.arange(0, timeline.duration + step / 1000, step):
        x = min(x_of(tick), right - 1)
        draw.line((x, axis_top, x, axis_top + padding // 2), fill="black")
        draw.text((x, axis_top + padding // 2), f"{tick:g}", fill="black", font=font, anchor="mt")
    draw.text(((left + right) / 2, axis_top + line + padding // 2), "time (s)", fill="black", font=font, anchor="mt")
    scale_width = label_width - 2 * round(font.getlength("0 "))
    if scale_width > 8:
        scale = Image.fromarray(np.repeat(_colour_map(np.linspace(0, 1, scale_width))[None], padding, axis=0))
        scale_left = padding + round(font.getlength("0 "))
        image.paste(scale, (scale_left, axis_top + padding // 2))
        middle = axis_top + padding
        draw.text((scale_left - 2, middle), "0", fill="black", font=font, anchor="rm")
        draw.text((scale_left + scale_width + 2, middle), "1", fill="black", font=font, anchor="lm")
    return image


def print_timelines(
    model,
    video_processor,
    videos: list[VideoSource],
    *,
    window: float,
    stride: float,
    top_k: int,
    as_json: bool,
    image_path: str | os.PathLike | None = None,
) -> int:
    """
    ``ila-hf predict --timeline``: print each video's timeline on stdout and return the exit status (1 if a video
    could not be read; it is reported on stderr and the others are still processed).

    With ``as_json``, one JSON object per window as it is classified (``video``, ``start``, ``end``,
    ``predictions``), then one per video with its ``segments``; otherwise one tab-separated line per segment (video,
    start, end, score, label). ``image_path``: where to write the picture of the (single) video's timeline.
    """
    failures = 0
    for video in videos:
        name = video_name(video)
        windows = []
        try:
            for timeline_window in iter_timeline(
                model, video_processor, video, window=window, stride=stride, top_k=top_k, progress=True
            ):
                windows.append(timeline_window)
                if as_json:
                    print(json.dumps({"video": name, **timeline_window.to_dict()}), flush=True)
        except VideoDecodeError as error:
            failures += 1
            print(f"ila-hf predict: {error}", file=sys.stderr)
            if as_json:
                print(json.dumps({"video": name, "error": str(error)}), flush=True)
            continue
        timeline = Timeline(name, [model.config.id2label[index] for index in range(model.config.num_labels)], windows)
        segments = timeline.segments()
        if as_json:
            print(json.dumps({"video": name, "segments": [segment.to_dict() for segment in segments]}), flush=True)
        else:
            for segment in segments:
                row = (name, f"{segment.start:.2f}", f"{segment.end:.2f}", f"{segment.score:.4f}", segment.label)
                print("\t".join(row), flush=True)
        if image_path is not None:
            timeline.save_image(image_path)
            logger.info("Wrote the timeline picture of %s to %s", name, image_path)
    return 1 if failures else 0
