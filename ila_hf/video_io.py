"""Video decoding with PyAV: exactly the frames a sampling plan asks for, nothing more.

Frame ``i`` of a video is the frame on screen at ``t_i = t_0 + i / fps`` (``t_0`` the first
frame's timestamp, ``fps`` the stream's average rate): the last frame whose timestamp rounds to
slot ``i`` or earlier. For constant-frame-rate video this is simply the ``i``-th frame; for
variable frame rate it is the frame shown at that time, the same whether it is reached by seeking
or by decoding forward (decoders that count frames, like decord, differ there).

Sparse plans seek: before each wanted frame the decoder jumps to the keyframe preceding it when
that keyframe lies ahead of the current position (found in the container's index), so 8 frames
of a 10-minute video cost 8 short GOP decodes, not the whole file. Dense plans decode forward.
Only the wanted frames are converted to RGB.

Only stdlib, numpy, av, huggingface_hub and transformers are imported: this module is shipped
next to ``video_processing_ila.py`` as Hub remote code.
"""

import bisect
import contextlib
import math
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlparse

import av
import numpy as np
from huggingface_hub.utils import httpx
from transformers.video_utils import VideoMetadata


DEFAULT_TIMEOUT = 30.0
"""Seconds allowed for opening a video and for each read (PyAV's interrupt timeout)."""

DEFAULT_TOTAL_TIMEOUT = 300.0
"""Seconds allowed for a whole call (download, opening, decoding). Reads each have `DEFAULT_TIMEOUT`, but a damaged
file can make the demuxer return packets without end; a clip of a normal video takes well under a second."""

MAX_FRAME_PIXELS = 8192 * 8192
"""Largest frame (width x height) decoded: a few kilobytes of compressed data can declare a frame of gigabytes."""

# Without a usable keyframe index (Matroska/WebM before their cues are loaded) a seek is blind:
# it only pays off when the gap is longer than a typical GOP (x264's default is 250 frames,
# 10 s at 25 fps; web video is usually 2-5 s).
_BLIND_SEEK_SECONDS = 5.0

_DOWNLOAD_CHUNK_BYTES = 1 << 20


class VideoDecodeError(Exception):
    """A video could not be read. The message starts with the file (or URL) and says why."""


def _error(source: str, reason: str) -> VideoDecodeError:
    return VideoDecodeError(f"{source}: {reason}")


class _Deadline:
    """The end of one call's time budget (`total_timeout` seconds from its start; None: no limit)."""

    def __init__(self, source: str, seconds: float | None):
        self.source = source
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def check(self, activity: str) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise _error(self.source, f"gave up after {self.seconds} s (total_timeout) while {activity}")


@dataclass
class VideoFileMetadata(VideoMetadata):
    """
    `transformers.video_utils.VideoMetadata` of a decoded file, plus what PyAV tells us about it.

    ``width``/``height`` are those of the upright frames (after ``rotation``), i.e. of the arrays
    `load_video` returns. ``total_num_frames`` is the container's frame count when it has one,
    else ``round(duration * fps)`` (then ``frame_count_is_estimate`` is True: Matroska/WebM).

    Extra fields:
        rotation (`int`): degrees counter-clockwise applied to decoded frames to make them upright
            (display-matrix side data, else the legacy ``rotate`` stream tag).
        frame_count_is_estimate (`bool`): whether ``total_num_frames`` was estimated.
        num_decoded_frames (`int`): frames the decoder produced for the call, wanted or not (a
            measure of the decoding work; set by `load_video`).
    """

    rotation: int = 0
    frame_count_is_estimate: bool = False
    num_decoded_frames: int | None = None


@contextlib.contextmanager
def _local_video_file(source: str | os.PathLike, timeout: float, deadline: _Deadline) -> Iterator[str]:
    """Yield a local path for ``source``; http(s) URLs are downloaded to a temporary file."""
    source = os.fspath(source)
    if urlparse(source).scheme not in ("http", "https"):
        yield source
        return
    suffix = os.path.splitext(urlparse(source).path)[1]
    with tempfile.TemporaryDirectory(prefix="ila_video_") as directory:
        path = os.path.join(directory, f"video{suffix}")
        try:
            with httpx.stream("GET", source, follow_redirects=True, timeout=timeout) as response:
                response.raise_for_status()
                with open(path, "wb") as file:
                    for chunk in response.iter_bytes(_DOWNLOAD_CHUNK_BYTES):
                        deadline.check("downloading")
                        file.write(chunk)
        except httpx.HTTPError as exc:
            raise _error(source, f"download failed ({exc})") from exc
        yield path


@contextlib.contextmanager
def _open_video(source: str, path: str, timeout: float) -> Iterator["av.container.InputContainer"]:
    """``av.open`` with every failure turned into a `VideoDecodeError` naming ``source``."""
    if not os.path.exists(path):
        raise _error(source, "no such file")
    if not os.path.isfile(path):
        raise _error(source, "not a regular file")
    if os.path.getsize(path) == 0:
        raise _error(source, "empty file (0 bytes)")
    try:
        # Tags are free text; a damaged or non-UTF-8 one must not make the frames unreadable.
        container = av.open(path, timeout=timeout, metadata_errors="replace")
    except av.error.ExitError as exc:
        raise _error(source, f"timed out after {timeout} s while opening") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise _error(source, f"not a readable video container ({exc})") from exc
    with container:
        yield container


def _rotation_of(first_frame: "av.VideoFrame", stream: "av.video.stream.VideoStream") -> int:
    """Counter-clockwise degrees (a multiple of 90) that make the frames upright."""
    rotation = first_frame.rotation
    if not rotation:
        # Files remuxed by old FFmpeg versions keep the clockwise "rotate" tag instead.
        tags = {key.lower(): value for key, value in stream.metadata.items()}
        with contextlib.suppress(KeyError, ValueError):
            rotation = -float(tags["rotate"])
    return int(90 * round(rotation / 90)) % 360


class _DecodedFrame(NamedTuple):
    frame: "av.VideoFrame"
    time: float  # presentation time in seconds


def _no_frames() -> Generator[_DecodedFrame]:
    yield from ()


class _FrameReader:
    """
    Serves the frames on screen at increasing slots of one video stream, seeking when that saves
    decoding work.

    The frame for slot ``i`` is the last good frame whose timestamp rounds to a slot ``<= i``
    (one frame of look-ahead tells when to stop). Packets that fail to decode and frames flagged
    corrupt are skipped and recorded in ``skipped`` (by timestamp), so a neighbouring good frame
    serves their slot. Streams without timestamps (raw elementary streams) are timed by counting
    frames and never seek.
    """

    def __init__(self, source: str, container, stream, timeout: float, deadline: _Deadline, allow_seek: bool):
        self.source = source
        self.container = container
        self.stream = stream
        self.timeout = timeout
        self.deadline = deadline
        self.allow_seek = allow_seek
        self.num_decoded = 0
        self.skipped: set[int | None] = set()
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise _error(source, "the video stream has no frame rate")
        self.fps = float(rate)
        stream.codec_context.thread_type = "AUTO"
        self._frames: Generator[_DecodedFrame] = _no_frames()
        self._restart_decoding()
        try:
            self.current = self._take_next()
        except BaseException:
            self.close()
            raise
        if self.current is None:
            self.close()
            raise _error(source, "no decodable video frames")
        if self.current.frame.pts is None:
            self.allow_seek = False
        self.start_time = self.current.time

    def close(self) -> None:
        """Drop the decoder state now: the generator refers back to this reader, and until the garbage collector
        breaks that cycle the codec context (with its decoding threads and frame buffers) stays alive."""
        self._frames.close()
        self._frames = _no_frames()
        self._lookahead.clear()
        self.current = None

    @property
    def ended(self) -> bool:
        """Whether the current frame is the last one of the stream."""
        return self._peek_next() is None

    def slot_of(self, decoded: _DecodedFrame) -> int:
        return math.floor((decoded.time - self.start_time) * self.fps + 0.5)

    def _restart_decoding(self) -> None:
        """Decode from the container's current position (after opening or seeking)."""
        self._frames.close()  # a suspended generator would keep this reader (and the codec) alive
        self._frames = self._decode_forward()
        self._lookahead: list[_DecodedFrame | None] = []

    def _decode_forward(self) -> Iterator[_DecodedFrame]:
        previous_time, time_base = None, self.stream.time_base
        try:
            for packet in self.container.demux(self.stream):
                self.deadline.check("decoding")
                try:
                    frames = packet.decode()
                except av.error.ExitError:
                    raise
                except av.error.FFmpegError:
                    self.skipped.add(packet.pts)
                    continue
                for frame in frames:
                    if frame.is_corrupt:
                        self.skipped.add(frame.pts)
                        continue
                    if frame.pts is not None:
                        time = float(frame.pts * time_base)
                    else:
                        time = 0.0 if previous_time is None else previous_time + 1 / self.fps
                    previous_time = time
                    self.num_decoded += 1
                    yield _DecodedFrame(frame, time)
        except av.error.ExitError as exc:
            raise _error(self.source, f"timed out after {self.timeout} s while reading") from exc
        except av.error.FFmpegError:
            # Unreadable data past this point (a truncated file): what was decoded stands.
            self.skipped.add(None)

    def _peek_next(self) -> _DecodedFrame | None:
        if not self._lookahead:
            self._lookahead.append(next(self._frames, None))
        return self._lookahead[0]

    def _take_next(self) -> _DecodedFrame | None:
        decoded = self._peek_next()
        if decoded is not None:
            self._lookahead.clear()
        return decoded

    def remaining_frames(self) -> list[_DecodedFrame]:
        """The current frame and every frame after it, decoding to the end of the stream."""
        frames = [self.current, *iter(self._take_next, None)]
        self.current = frames[-1]
        return frames

    def _keyframe_time_before(self, time: float) -> float | None:
        """Time of the last indexed keyframe at or before ``time`` (None if the index is unknown)."""
        entries = self.stream.index_entries
        if len(entries) < 2:
            return None
        time_base = self.stream.time_base
        position = bisect.bisect_right(entries, time, key=lambda entry: float(entry.timestamp * time_base))
        for index in range(position - 1, -1, -1):
            if entries[index].is_keyframe:
                return float(entries[index].timestamp * time_base)
        return None

    def _worth_seeking(self, target_time: float) -> bool:
        keyframe_time = self._keyframe_time_before(target_time)
        if keyframe_time is None:
            return target_time - self.current.time > _BLIND_SEEK_SECONDS
        # A seek lands on that keyframe: it helps only if the keyframe is ahead of us.
        return keyframe_time > self.current.time

    def _seek(self, slot: int, target_time: float) -> None:
        offset = math.floor(target_time / self.stream.time_base)
        landed_pts = None
        # With B-frames the keyframe found for a timestamp can be displayed after it; step back a
        # keyframe until the first decoded frame is not past the wanted slot (or cannot move back).
        for _ in range(4):
            try:
                self.container.seek(offset, stream=self.stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                self.allow_seek = False
                return
            self._restart_decoding()
            decoded = self._take_next()
            if decoded is None:
                return
            self.current = decoded
            frame = decoded.frame
            if self.slot_of(decoded) <= slot or (landed_pts is not None and frame.pts >= landed_pts):
                return
            landed_pts = frame.pts
            offset = min(frame.pts, frame.dts if frame.dts is not None else frame.pts) - 1

    def frame_at(self, slot: int) -> _DecodedFrame:
        """The frame on screen at ``slot``: the last good frame whose slot is ``<= slot``."""
        upcoming = self._peek_next()
        if upcoming is None or self.slot_of(upcoming) > slot:
            return self.current
        if self.allow_seek and self._worth_seeking(self.start_time + slot / self.fps):
            self._seek(slot, self.start_time + slot / self.fps)
        while (upcoming := self._peek_next()) is not None and self.slot_of(upcoming) <= slot:
            self.current = self._take_next()
        return self.current


def _to_upright_rgb(frame: "av.VideoFrame", rotation: int, width: int, height: int) -> np.ndarray:
    # Scaling to the first frame's coded size keeps one shape if the resolution changes mid-stream.
    array = frame.to_ndarray(format="rgb24", width=width, height=height)
    return np.rot90(array, rotation // 90) if rotation else array


def _metadata(container, stream, reader: _FrameReader) -> VideoFileMetadata:
    """Metadata from the container; ``total_num_frames`` is None when nothing tells the length."""
    rotation = _rotation_of(reader.current.frame, stream)
    if stream.duration is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    else:
        duration = None
    if stream.frames:
        total_num_frames = stream.frames
    elif duration is not None:
        total_num_frames = max(1, round(duration * reader.fps))
    else:
        total_num_frames = None
    width, height = reader.current.frame.width, reader.current.frame.height
    if rotation in (90, 270):
        width, height = height, width
    return VideoFileMetadata(
        total_num_frames=total_num_frames,
        fps=reader.fps,
        width=width,
        height=height,
        duration=duration,
        video_backend="pyav",
        rotation=rotation,
        frame_count_is_estimate=not stream.frames,
    )


def _count_frames_by_decoding(reader: _FrameReader, metadata: VideoFileMetadata) -> list[_DecodedFrame]:
    """Decode the rest of the stream to learn its length; returns every frame."""
    frames = reader.remaining_frames()
    metadata.total_num_frames = len(frames)
    metadata.frame_count_is_estimate = False
    if metadata.duration is None:
        metadata.duration = len(frames) / reader.fps
    return frames


@contextlib.contextmanager
def _video_reader(
    source: str | os.PathLike, timeout: float, total_timeout: float | None, max_frame_pixels: int, allow_seek: bool
):
    source_name = os.fspath(source)
    deadline = _Deadline(source_name, total_timeout)
    with _local_video_file(source, timeout, deadline) as path, _open_video(source_name, path, timeout) as container:
        if not container.streams.video:
            kinds = sorted({stream.type for stream in container.streams}) or ["none"]
            raise _error(source_name, f"no video stream (streams found: {', '.join(kinds)})")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise _error(
                source_name,
                "no decoder for the video codec (unknown to PyAV's FFmpeg build, or a damaged stream header)",
            )
        try:
            reader = _FrameReader(source_name, container, stream, timeout, deadline, allow_seek)
        except av.error.FFmpegError as exc:
            raise _error(source_name, f"cannot decode the video stream ({exc})") from exc
        try:
            width, height = reader.current.frame.width, reader.current.frame.height
            if width * height > max_frame_pixels:
                raise _error(
                    source_name,
                    f"frames of {width}x{height} pixels exceed the limit of {max_frame_pixels} pixels "
                    "(max_frame_pixels); a damaged header, or raise the limit for such video",
                )
            yield reader, _metadata(container, stream, reader)
        finally:
            reader.close()


def read_video_metadata(
    source: str | os.PathLike,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
) -> VideoFileMetadata:
    """
    Frame count, fps, duration, upright size and rotation of a video file (or http(s) URL).

    The first frame is decoded (to learn the rotation and to make sure the stream decodes). A
    stream with neither a frame count nor a duration (a raw elementary stream) is decoded to the
    end to count its frames. ``timeout``, ``total_timeout`` and ``max_frame_pixels`` are as in
    `load_video`.

    Raises:
        `VideoDecodeError`: the file is missing, empty, not a video, has no video stream, uses a
            codec PyAV cannot decode, yields no frame, has frames over ``max_frame_pixels``, or a
            read or the whole call times out.
    """
    with _video_reader(source, timeout, total_timeout, max_frame_pixels, allow_seek=False) as (reader, metadata):
        if metadata.total_num_frames is None:
            _count_frames_by_decoding(reader, metadata)
        return metadata


def load_video(
    source: str | os.PathLike,
    frame_indices: np.ndarray | list[int] | Callable[[VideoFileMetadata], np.ndarray] | None = None,
    *,
    seek: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
) -> tuple[np.ndarray, VideoFileMetadata]:
    """
    Decode the requested frames of a video file (or http(s) URL) as upright RGB.

    Args:
        source (`str` or `os.PathLike`): a local path, or an http(s) URL (downloaded to a
            temporary file, removed afterwards).
        frame_indices: integer indices of any shape (e.g. ``(T,)`` or ``(views, T)`` from
            ``sampling.sample_frame_indices``), or a callable ``metadata -> indices`` (so the plan
            can depend on the frame count without opening the file twice), or ``None`` for every
            frame. Indices must lie in ``[0, metadata.total_num_frames - 1]``; repeats are decoded
            once.
        seek (`bool`): seek to the keyframe before far-away frames (default). ``False`` decodes
            forward from the start up to the last wanted frame.
        timeout (`float`): seconds allowed for opening and for each read.
        total_timeout (`float`, *optional*): seconds allowed for the whole call, download included
            (checked between packets; None for no limit). Decoding every frame of a long video
            (``frame_indices=None``) may need more than the default.
        max_frame_pixels (`int`): larger frames (width x height) are refused rather than decoded.

    Returns:
        `tuple[np.ndarray, VideoFileMetadata]`: ``uint8`` frames of shape
        ``indices.shape + (height, width, 3)``, and the metadata with ``frames_indices`` (the
        indices) and ``num_decoded_frames`` set. If the stream ends before a wanted frame (an
        estimated frame count, or a truncated file), the last decoded frame is used, with a warning
        unless the count was an estimate off by one frame. Packets that fail to decode are skipped
        with a warning, and a neighbouring good frame is used.

    Raises:
        `VideoDecodeError`: as `read_video_metadata`.
        `ValueError`: indices that are not integers or fall outside ``[0, total_num_frames - 1]``.
    """
    source_name = os.fspath(source)
    with _video_reader(source, timeout, total_timeout, max_frame_pixels, allow_seek=seek) as (reader, metadata):
        every_frame = None
        if frame_indices is None or metadata.total_num_frames is None:
            every_frame = _count_frames_by_decoding(reader, metadata)
        if frame_indices is None:
            indices = np.arange(metadata.total_num_frames)
        else:
            indices = np.asarray(frame_indices(metadata) if callable(frame_indices) else frame_indices)
            _check_indices(indices, metadata.total_num_frames)
        slots, inverse = np.unique(indices, return_inverse=True)
        if every_frame is not None:
            wanted = [every_frame[slot] for slot in slots]
        else:
            wanted = [reader.frame_at(int(slot)) for slot in slots]
            _warn_if_short(source_name, reader, metadata, int(slots[-1]))
        first = wanted[0].frame
        rgb_by_frame = {}
        for decoded in wanted:
            if id(decoded) not in rgb_by_frame:
                rgb_by_frame[id(decoded)] = _to_upright_rgb(decoded.frame, metadata.rotation, first.width, first.height)
        video = np.stack([rgb_by_frame[id(decoded)] for decoded in wanted])[inverse.reshape(indices.shape)]
        if reader.skipped:
            warnings.warn(
                f"{source_name}: skipped {len(reader.skipped)} undecodable packet(s) or corrupt frame(s); "
                "neighbouring good frames were used instead.",
                stacklevel=2,
            )
        metadata.frames_indices = indices
        metadata.num_decoded_frames = reader.num_decoded
        return video, metadata


def _check_indices(indices: np.ndarray, total_num_frames: int) -> None:
    if indices.size == 0:
        raise ValueError("Expected at least one frame index, got an empty array.")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"Frame indices must be integers, got dtype {indices.dtype}.")
    low, high = int(indices.min()), int(indices.max())
    if low < 0 or high >= total_num_frames:
        raise ValueError(
            f"Frame indices must lie in [0, {total_num_frames - 1}] for this {total_num_frames}-frame video, "
            f"got values in [{low}, {high}]."
        )


def _warn_if_short(source: str, reader: _FrameReader, metadata: VideoFileMetadata, last_wanted: int) -> None:
    last_available = reader.slot_of(reader.current)
    missing = last_wanted - last_available
    if reader.ended and missing > (1 if metadata.frame_count_is_estimate else 0):
        count_kind = "estimated" if metadata.frame_count_is_estimate else "declared"
        warnings.warn(
            f"{source}: the stream ends at frame {last_available} but frame {last_wanted} was requested "
            f"({count_kind} frame count {metadata.total_num_frames}); used the last frame instead.",
            stacklevel=3,
        )
