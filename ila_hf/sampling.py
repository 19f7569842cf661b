"""Frame sampling plans: which frames of an ``n``-frame video a clip is made of.

Pure functions from the video length, the plan's parameters and (for random plans) a seeded
``numpy.random.Generator`` to ``int64`` frame indices. No I/O; decoding the indices is
``video_io.load_video``'s job.

Two plans, as in the released ILA recipe (see ``docs/computation.md``, "Notes on the released
evaluation"):

- ``"segment"`` (TSN): the video is cut into ``num_frames`` equal segments and one frame is taken
  from each. This is what every released checkpoint was trained and evaluated with.
- ``"dense"``: ``num_frames`` frames ``frame_interval`` apart, from one window of the video.

Both have a multi-view form (``num_clips`` temporal views, shape ``(num_clips, num_frames)``) for
the multi-view evaluation protocol. Short videos never fail: indices are clamped into
``[0, num_video_frames - 1]``, so frames repeat instead.

``sliding_window_indices`` covers a whole long video with equally long windows (a timeline), each
sampled like an evaluation clip.
"""

import math
from typing import Literal

import numpy as np


SAMPLING_STRATEGIES = ("segment", "dense")

SeedLike = np.random.Generator | int | None


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def _as_generator(generator: SeedLike) -> np.random.Generator:
    if isinstance(generator, np.random.Generator):
        return generator
    return np.random.default_rng(generator)


def _clamp(indices: np.ndarray, num_video_frames: int) -> np.ndarray:
    return np.clip(indices, 0, num_video_frames - 1).astype(np.int64)


def segment_indices(
    num_video_frames: int,
    num_frames: int,
    *,
    random: bool = False,
    generator: SeedLike = None,
) -> np.ndarray:
    """
    TSN segment sampling, single view, exactly as released.

    With ``seg = (n - 1) / T``, segment ``i`` spans frames ``start_i = round(seg * i)`` to
    ``end_i = round(seg * (i + 1))`` (numpy rounding, half to even; both ends inclusive).
    Evaluation takes ``(start_i + end_i) // 2``; training (``random=True``) takes a uniform random
    integer in ``[start_i, end_i]``.

    Args:
        num_video_frames (`int`): frames in the video, ``n >= 1``.
        num_frames (`int`): frames in the clip, ``T >= 1``.
        random (`bool`): draw a random frame per segment (training) instead of the middle one.
        generator (`np.random.Generator`, `int` or `None`): random source (or seed) when ``random``.

    Returns:
        `np.ndarray`: ``int64`` indices of shape ``(T,)``, non-decreasing, in ``[0, n - 1]``.
    """
    _check_positive("num_video_frames", num_video_frames)
    _check_positive("num_frames", num_frames)
    segment_length = (num_video_frames - 1) / num_frames
    segment_ids = np.arange(num_frames, dtype=np.float64)
    starts = np.round(segment_length * segment_ids).astype(np.int64)
    ends = np.round(segment_length * (segment_ids + 1)).astype(np.int64)
    if random:
        indices = _as_generator(generator).integers(starts, ends, endpoint=True)
    else:
        indices = (starts + ends) // 2
    return _clamp(indices, num_video_frames)


def multi_view_segment_indices(
    num_video_frames: int,
    num_frames: int,
    num_clips: int,
    *,
    random: bool = False,
    generator: SeedLike = None,
) -> np.ndarray:
    """
    TSN segment sampling for the multi-view protocol: ``num_clips`` temporal views.

    With ``avg = n // T``, view ``v`` of ``V`` takes frame ``i * avg + floor((v + 0.5) * avg / V)``
    of segment ``i`` (the views are evenly staggered inside every segment). ``random=True``
    reproduces the published protocol instead, where every view is an independent draw
    ``i * avg + randint(0, avg - 1)``. Videos shorter than ``T`` frames (``avg == 0``) use
    ``round(i * n / T)`` for every view.

    Args:
        num_video_frames (`int`): frames in the video, ``n >= 1``.
        num_frames (`int`): frames per view, ``T >= 1``.
        num_clips (`int`): temporal views, ``V >= 1``.
        random (`bool`): independent random draws per view (the released, noisy protocol).
        generator (`np.random.Generator`, `int` or `None`): random source (or seed) when ``random``.

    Returns:
        `np.ndarray`: ``int64`` indices of shape ``(V, T)`` in ``[0, n - 1]``.
    """
    _check_positive("num_video_frames", num_video_frames)
    _check_positive("num_frames", num_frames)
    _check_positive("num_clips", num_clips)
    average_duration = num_video_frames // num_frames
    segment_ids = np.arange(num_frames, dtype=np.int64)
    if average_duration == 0:
        indices = np.round(segment_ids * num_video_frames / num_frames).astype(np.int64)
        indices = np.broadcast_to(indices, (num_clips, num_frames))
    elif random:
        offsets = _as_generator(generator).integers(0, average_duration, size=(num_clips, num_frames))
        indices = segment_ids * average_duration + offsets
    else:
        view_ids = np.arange(num_clips, dtype=np.float64)[:, None]
        offsets = np.floor((view_ids + 0.5) * average_duration / num_clips).astype(np.int64)
        indices = segment_ids * average_duration + offsets
    return _clamp(indices, num_video_frames)


def dense_indices(
    num_video_frames: int,
    num_frames: int,
    frame_interval: int = 1,
    *,
    random: bool = False,
    generator: SeedLike = None,
) -> np.ndarray:
    """
    Dense sampling: ``T`` frames ``k`` apart from one window of ``(T - 1) * k + 1`` frames.

    The window starts at a uniform random frame in ``[0, max(0, n - window)]`` when ``random``,
    else it is centred: ``start = max(0, n - window) // 2``. Frames past the end of a short video
    repeat the last frame.

    Args:
        num_video_frames (`int`): frames in the video, ``n >= 1``.
        num_frames (`int`): frames in the clip, ``T >= 1``.
        frame_interval (`int`): step ``k >= 1`` between sampled frames.
        random (`bool`): random window start (training) instead of the centred window.
        generator (`np.random.Generator`, `int` or `None`): random source (or seed) when ``random``.

    Returns:
        `np.ndarray`: ``int64`` indices of shape ``(T,)``, non-decreasing, in ``[0, n - 1]``.
    """
    _check_positive("num_video_frames", num_video_frames)
    _check_positive("num_frames", num_frames)
    _check_positive("frame_interval", frame_interval)
    max_start = max(0, num_video_frames - ((num_frames - 1) * frame_interval + 1))
    start = _as_generator(generator).integers(0, max_start, endpoint=True) if random else max_start // 2
    return _clamp(start + frame_interval * np.arange(num_frames, dtype=np.int64), num_video_frames)


def multi_view_dense_indices(
    num_video_frames: int,
    num_frames: int,
    frame_interval: int,
    num_clips: int,
) -> np.ndarray:
    """
    Dense sampling with ``num_clips`` evenly spaced windows.

    The ``max(0, n - window) + 1`` possible window starts are cut into ``V`` equal parts and view
    ``v`` starts in the middle of part ``v``: ``floor((v + 0.5) * (max_start + 1) / V)``, the
    dense counterpart of :func:`multi_view_segment_indices`.

    Args:
        num_video_frames (`int`): frames in the video, ``n >= 1``.
        num_frames (`int`): frames per view, ``T >= 1``.
        frame_interval (`int`): step ``k >= 1`` between sampled frames.
        num_clips (`int`): temporal views, ``V >= 1``.

    Returns:
        `np.ndarray`: ``int64`` indices of shape ``(V, T)`` in ``[0, n - 1]``.
    """
    _check_positive("num_video_frames", num_video_frames)
    _check_positive("num_frames", num_frames)
    _check_positive("frame_interval", frame_interval)
    _check_positive("num_clips", num_clips)
    max_start = max(0, num_video_frames - ((num_frames - 1) * frame_interval + 1))
    view_ids = np.arange(num_clips, dtype=np.float64)
    starts = np.floor((view_ids + 0.5) * (max_start + 1) / num_clips).astype(np.int64)
    indices = starts[:, None] + frame_interval * np.arange(num_frames, dtype=np.int64)
    return _clamp(indices, num_video_frames)


def sample_frame_indices(
    num_video_frames: int,
    num_frames: int,
    sampling: Literal["segment", "dense"] = "segment",
    *,
    frame_interval: int = 1,
    num_clips: int = 1,
    random: bool = False,
    generator: SeedLike = None,
) -> np.ndarray:
    """
    One entry point for every plan above.

    ``num_clips == 1`` is the single-view plan (:func:`segment_indices` / :func:`dense_indices`),
    shape ``(T,)``; ``num_clips > 1`` is the multi-view plan, shape ``(V, T)``. Note that the two
    segment rules differ (the single-view rule is the released training/validation one, the
    multi-view rule the released test protocol), so ``num_clips=1`` is not a 1-view slice of the
    multi-view plan.

    Args:
        num_video_frames (`int`): frames in the video, ``n >= 1``.
        num_frames (`int`): frames per view, ``T >= 1``.
        sampling (`str`): ``"segment"`` or ``"dense"``.
        frame_interval (`int`): step between frames of a dense clip (ignored by ``"segment"``).
        num_clips (`int`): temporal views.
        random (`bool`): random plan (training; for multi-view segment sampling, the released
            random test protocol). Multi-view dense sampling has no random form.
        generator (`np.random.Generator`, `int` or `None`): random source (or seed) when ``random``.

    Returns:
        `np.ndarray`: ``int64`` indices, ``(T,)`` or ``(V, T)``.
    """
    _check_positive("num_clips", num_clips)
    if sampling == "segment":
        if num_clips == 1:
            return segment_indices(num_video_frames, num_frames, random=random, generator=generator)
        return multi_view_segment_indices(num_video_frames, num_frames, num_clips, random=random, generator=generator)
    if sampling == "dense":
        if num_clips == 1:
            return dense_indices(num_video_frames, num_frames, frame_interval, random=random, generator=generator)
        if random:
            raise ValueError("Multi-view dense sampling is deterministic; pass `random=False` or `num_clips=1`.")
        return multi_view_dense_indices(num_video_frames, num_frames, frame_interval, num_clips)
    raise ValueError(f"`sampling` must be one of {SAMPLING_STRATEGIES}, got {sampling!r}.")


def sliding_window_indices(
    num_video_frames: int,
    num_frames: int,
    window_length: int,
    stride: float,
) -> tuple[np.ndarray, np.ndarray]:
    """
    Clips of a window sliding over the whole video, each sampled like an evaluation clip.

    Window ``k`` covers frames ``[start_k, start_k + L)`` with ``start_k = round(k * stride)`` (a
    fractional stride, e.g. 1 s at 29.97 fps, does not drift), for every window that fits in the
    video. If the last of them ends before the video does, one more window ends exactly at the last
    frame, so every frame is covered by windows of one length (a shorter last window would play its
    motion faster than the model was trained on). A video of at most ``L`` frames is one window.
    Inside each window the ``T`` frames follow :func:`segment_indices` (the middle of each segment).

    Args:
        num_video_frames (`int`): frames in the video, ``n >= 1``.
        num_frames (`int`): frames per clip, ``T >= 1``.
        window_length (`int`): frames per window, ``L >= 1``.
        stride (`float`): frames from one window's start to the next, ``> 0``.

    Returns:
        `tuple[np.ndarray, np.ndarray]`: ``int64`` window bounds of shape ``(W, 2)`` (first frame,
        one past the last frame) with non-decreasing starts, and ``int64`` indices of shape ``(W, T)``.
    """
    _check_positive("num_video_frames", num_video_frames)
    _check_positive("num_frames", num_frames)
    _check_positive("window_length", window_length)
    if not (isinstance(stride, (int, float, np.integer, np.floating)) and np.isfinite(stride) and stride > 0):
        raise ValueError(f"`stride` must be a positive number of frames, got {stride!r}.")
    window_length = min(window_length, num_video_frames)
    last_start = num_video_frames - window_length
    starts = np.round(np.arange(math.floor(last_start / stride) + 1) * stride).astype(np.int64)
    if starts[-1] < last_start:
        starts = np.append(starts, last_start)
    bounds = np.stack([starts, starts + window_length], axis=1)
    indices = starts[:, None] + segment_indices(window_length, num_frames)
    return bounds, indices
