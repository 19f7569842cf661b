"""Video decoding with PyAV: exactly the frames a sampling plan asks for, nothing more.

Frame ``i`` of a video is the frame on screen at ``t_i = t_0 + i / fps`` (``t_0`` the first
frame's timestamp, ``fps`` the stream's average rate): the last frame whose timestamp rounds to
slot ``i`` or earlier. For constant-frame-rate video this is simply the ``i``-th frame; for
variable frame rate it is the frame shown at that time, the same whether it is reached by seeking
or by decoding forward (decoders that count frames, like decord, differ there).

Sparse plans seek: before each wanted frame the decoder jumps to the keyframe preceding it when
that keyframe lies ahead of the current position (found in the container's index), so 8 frames
of a 10-minute video cost 8 short GOP decodes, not the whole file. Dense plans decode forward.
Only the wanted frames are converted to RGB. `load_video` returns the wanted frames together;
`iter_video_frames` yields them one at a time in a single pass, keeping none (a whole film, a
timeline of clips).

Inputs (`VideoSource`): a path, an http(s) URL, the encoded bytes (``bytes``, ``bytearray``,
``memoryview``), a binary file object, a `datasets` video dict ``{"path": ..., "bytes": ...}``, or
a torchcodec ``VideoDecoder`` (what `datasets` returns for decoded ``Video()`` columns; used
through its ``metadata`` and ``get_frames_at``, torchcodec itself is never imported). Memory and
file objects are decoded in place, with seeking; nothing is written to disk.

Hostile input stays bounded: only the container formats in `VIDEO_DEMUXERS` are opened, so a
playlist or concat script (HLS ``.m3u8``, ffconcat) cannot make FFmpeg open other files or URLs;
every frame is checked against ``max_frame_pixels`` (by the decoder, before it allocates); time is
bounded per read (``timeout``) and per call (``total_timeout``), downloads by
``max_download_bytes``. Whatever goes wrong while reading one video is a `VideoDecodeError`
naming it.

Only stdlib, numpy, av, huggingface_hub and transformers are imported: this module is shipped
next to ``video_processing_ila.py`` as Hub remote code.
"""

import bisect
import contextlib
import io
import math
import os
import re
import tempfile
import time
import warnings
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, NamedTuple, Union
from urllib.parse import urlparse

import av
import numpy as np
from huggingface_hub.utils import httpx
from transformers.video_utils import VideoMetadata


DEFAULT_TIMEOUT = 30.0
"""Seconds allowed for opening a video and for each read (PyAV's interrupt timeout; each network read)."""

DEFAULT_TOTAL_TIMEOUT = 300.0
"""Seconds allowed for a whole call (download, opening, decoding). Reads each have `DEFAULT_TIMEOUT`, but a damaged
file can make the demuxer return packets without end; a clip of a normal video takes well under a second."""

MAX_FRAME_PIXELS = 8192 * 8192
"""Largest frame (width x height) decoded, checked on every frame before the decoder allocates it: a few kilobytes
of compressed data can declare a frame of gigabytes."""

DEFAULT_MAX_DOWNLOAD_BYTES = 2 * 1024**3
"""Largest download of a video URL (2 GiB): the declared Content-Length is checked first, then the bytes received."""

VIDEO_DEMUXERS = (
    "mov,matroska,avi,flv,asf,mpeg,mpegts,mpegvideo,m4v,h264,hevc,obu,ivf,mjpeg,ogg,nut,gif,yuv4mpegpipe,mxf,dv,rm"
)
"""FFmpeg demuxers opened (FFmpeg's ``format_whitelist``): video containers and raw video streams. Left out on
purpose: those that open further files or URLs named inside the input (``hls``, ``dash``, ``concat``, ``image2``,
...), whose header is never parsed."""

# Without a usable keyframe index (Matroska/WebM before their cues are loaded) a seek is blind:
# it only pays off when the gap is longer than a typical GOP (x264's default is 250 frames,
# 10 s at 25 fps; web video is usually 2-5 s).
_BLIND_SEEK_SECONDS = 5.0

# Frames requested from a torchcodec decoder at once by `iter_video_frames`: few, to hold little memory.
_DECODER_CHUNK = 16

# FFmpeg's `max_pixels` is a C int.
_FFMPEG_MAX_PIXELS = 2**31 - 1

VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO, dict, Any]
"""What `load_video` and `read_video_metadata` read (see the module docstring)."""


class VideoDecodeError(Exception):
    """A video could not be read. The message starts with the input (file, URL or in-memory video) and says why."""


def _error(source: str, reason: str) -> VideoDecodeError:
    return VideoDecodeError(f"{source}: {reason}")


@contextlib.contextmanager
def _reading(source: str, timeout: float) -> Iterator[None]:
    """Whatever goes wrong inside (FFmpeg errors of any class, allocation failures, OS errors, values PyAV cannot
    convert) becomes a `VideoDecodeError` naming ``source``."""
    try:
        yield
    except (VideoDecodeError, Warning):  # a warning raised as an error (warnings filter) stays what it is
        raise
    except av.error.ExitError as exc:
        raise _error(source, f"timed out after {timeout} s while reading") from exc
    except (MemoryError, av.error.MemoryError) as exc:
        raise _error(source, "ran out of memory while decoding") from exc
    except Exception as exc:
        raise _error(source, f"cannot be read ({type(exc).__name__}: {exc})") from exc


class _Deadline:
    """The end of one call's time budget (`total_timeout` seconds from its start; None: no limit)."""

    def __init__(self, source: str, seconds: float | None):
        self.source = source
        self.seconds = seconds
        self.end = None if seconds is None else time.monotonic() + seconds

    def check(self, activity: str) -> None:
        if self.end is not None and time.monotonic() > self.end:
            raise _error(self.source, f"gave up after {self.seconds} s (total_timeout) while {activity}")


@dataclass(frozen=True)
class _Limits:
    timeout: float
    total_timeout: float | None
    max_frame_pixels: int
    max_download_bytes: int


@dataclass
class VideoFileMetadata(VideoMetadata):
    """
    `transformers.video_utils.VideoMetadata` of a decoded file, plus what PyAV tells us about it.

    ``width``/``height`` are those of the upright frames (after ``rotation``), i.e. of the arrays
    `load_video` returns. ``total_num_frames`` is the container's frame count when it has one,
    else ``round(duration * fps)`` (then ``frame_count_is_estimate`` is True: Matroska/WebM), else
    (raw elementary streams) the frames counted by decoding.

    Extra fields:
        rotation (`int`): degrees counter-clockwise applied to decoded frames to make them upright
            (display-matrix side data, else the legacy ``rotate`` stream tag; values that are not
            finite numbers are ignored).
        frame_count_is_estimate (`bool`): whether ``total_num_frames`` was estimated.
        num_decoded_frames (`int`): frames the decoder produced for the call, wanted or not (a
            measure of the decoding work; set by `load_video`).
    """

    rotation: int = 0
    frame_count_is_estimate: bool = False
    num_decoded_frames: int | None = None


def _is_frame_decoder(source) -> bool:
    """A torchcodec ``VideoDecoder`` (or anything with its ``metadata`` and ``get_frames_at``)."""
    return callable(getattr(source, "get_frames_at", None)) and hasattr(source, "metadata")


def is_video_source(video) -> bool:
    """Whether ``video`` is an encoded video `load_video` reads (not decoded frames): a path or URL, bytes, a binary
    file object, a `datasets` video dict or a torchcodec decoder."""
    if isinstance(video, dict):
        return "path" in video or "bytes" in video
    return (
        isinstance(video, (str, os.PathLike, bytes, bytearray, memoryview))
        or callable(getattr(video, "read", None))
        or _is_frame_decoder(video)
    )


def video_name(source: VideoSource) -> str:
    """How messages name a video: its path or URL, a `datasets` dict's path, else a short description."""
    if isinstance(source, dict):
        path = source.get("path")
        if path:
            return os.fspath(path)
        encoded = source.get("bytes")
        return f"<{len(encoded)} bytes>" if encoded is not None else "<video dict without path or bytes>"
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{memoryview(source).nbytes} bytes>"
    name = getattr(source, "name", None)
    if isinstance(name, str) and name:
        return name
    return f"<{type(source).__name__}>"


class _Input(NamedTuple):
    """One video opened for PyAV as often as needed: ``open()`` gives a path or a file object at the video's start."""

    name: str
    open: Callable[[], str | BinaryIO]
    protocols: str  # FFmpeg's protocol_whitelist: "file" for a path; none at all for memory and file objects


# Matches no FFmpeg protocol: custom I/O needs none, and nothing named inside the input may be opened.
_NO_PROTOCOL = "none"


def _short_suffix(url: str) -> str:
    """The URL's file extension when it looks like one (a hint for FFmpeg's probe), else nothing."""
    suffix = os.path.splitext(urlparse(url).path)[1]
    return suffix if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""


def _download(url: str, path: str, limits: _Limits, deadline: _Deadline) -> None:
    """Write ``url``'s body to ``path``: Content-Length checked first, then every read against the size cap and the
    deadline (a server trickling bytes must not outlive ``total_timeout``)."""
    cap = limits.max_download_bytes
    headers = {"Accept-Encoding": "identity"}  # counted bytes are the bytes written: no decompression bombs
    try:
        with httpx.stream("GET", url, headers=headers, follow_redirects=True, timeout=limits.timeout) as response:
            response.raise_for_status()
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > cap:
                raise _error(url, f"the server announces {declared} bytes, over max_download_bytes={cap}")
            received = 0
            with open(path, "wb") as file:
                for chunk in response.iter_bytes():  # as each network read returns
                    deadline.check("downloading")
                    received += len(chunk)
                    if received > cap:
                        raise _error(url, f"download exceeds max_download_bytes={cap}")
                    file.write(chunk)
    except httpx.HTTPError as exc:
        raise _error(url, f"download failed ({exc})") from exc


@contextlib.contextmanager
def _video_input(source: VideoSource, limits: _Limits, deadline: _Deadline) -> Iterator[_Input]:
    """``source`` as an `_Input`; http(s) URLs are downloaded to a temporary file, removed afterwards."""
    name = video_name(source)
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            source = source["bytes"]
        elif source.get("path"):
            source = source["path"]
        else:
            raise _error(name, "expected a `datasets` video dict with `path` or `bytes`")
    if isinstance(source, (bytes, bytearray, memoryview)):
        # One copy at most (of a bytearray or memoryview); BytesIO shares the buffer of `bytes`.
        encoded = source if isinstance(source, bytes) else memoryview(source).tobytes()
        if not encoded:
            raise _error(name, "empty input (0 bytes)")
        yield _Input(name, lambda: io.BytesIO(encoded), _NO_PROTOCOL)
        return
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with contextlib.ExitStack() as cleanup:
            with _reading(name, limits.timeout):
                if urlparse(path).scheme in ("http", "https"):
                    directory = cleanup.enter_context(
                        tempfile.TemporaryDirectory(prefix="ila_video_", ignore_cleanup_errors=True)
                    )
                    path = os.path.join(directory, f"video{_short_suffix(name)}")
                    _download(name, path, limits, deadline)
                elif not os.path.exists(path):
                    raise _error(name, "no such file")
                elif not os.path.isfile(path):
                    raise _error(name, "not a regular file")
                elif os.path.getsize(path) == 0:
                    raise _error(name, "empty file (0 bytes)")
            yield _Input(name, lambda: path, "file")
        return
    if not callable(getattr(source, "read", None)):
        raise _error(
            name,
            "expected a path, URL, bytes, binary file object, `datasets` video dict or torchcodec VideoDecoder, "
            f"got {type(source).__name__}",
        )
    with _reading(name, limits.timeout):
        position = source.tell() if source.seekable() else None

    def from_the_start() -> BinaryIO:
        if position is not None:
            source.seek(0)
        return source

    try:
        yield _Input(name, from_the_start, _NO_PROTOCOL)
    finally:
        if position is not None:
            with _reading(name, limits.timeout):
                source.seek(position)


@contextlib.contextmanager
def _open_video(video: _Input, limits: _Limits) -> Iterator["av.container.InputContainer"]:
    """``av.open`` restricted to `VIDEO_DEMUXERS`, every failure a `VideoDecodeError` naming the input."""
    options = {"format_whitelist": VIDEO_DEMUXERS, "protocol_whitelist": video.protocols}
    try:
        # Tags are free text; a damaged or non-UTF-8 one must not make the frames unreadable.
        container = av.open(
            video.open(), timeout=limits.timeout, metadata_errors="replace", container_options=options
        )
    except av.error.ExitError as exc:
        raise _error(video.name, f"timed out after {limits.timeout} s while opening") from exc
    except av.error.ArgumentError as exc:
        # The format whitelist refuses what it does not list with EINVAL.
        raise _error(
            video.name, f"not a readable video container, or a format refused here such as a playlist ({exc})"
        ) from exc
    except Exception as exc:
        raise _error(video.name, f"not a readable video container ({type(exc).__name__}: {exc})") from exc
    with container:
        yield container


def _rotation_of(first_frame: "av.VideoFrame", stream: "av.video.stream.VideoStream") -> int:
    """Counter-clockwise degrees (a multiple of 90) that make the frames upright; 0 for values that are no number."""
    rotation = first_frame.rotation
    if not rotation or not math.isfinite(rotation):
        # Files remuxed by old FFmpeg versions keep the clockwise "rotate" tag instead.
        tags = {key.lower(): value for key, value in stream.metadata.items()}
        try:
            rotation = -float(tags["rotate"])
        except (KeyError, ValueError):
            rotation = 0.0
    return int(90 * round(rotation / 90)) % 360 if math.isfinite(rotation) else 0


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

    def __init__(self, source: str, container, stream, limits: _Limits, deadline: _Deadline, allow_seek: bool):
        self.source = source
        self.container = container
        self.stream = stream
        self.timeout = limits.timeout
        self.max_frame_pixels = limits.max_frame_pixels
        self.deadline = deadline
        self.allow_seek = allow_seek
        self.num_decoded = 0
        self.skipped: set[int | None] = set()
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        if not rate:
            raise _error(source, "the video stream has no frame rate")
        self.fps = float(rate)
        stream.codec_context.thread_type = "AUTO"
        # The decoder refuses a larger frame before allocating it (a frame size may change in any packet).
        stream.codec_context.options = {"max_pixels": str(min(self.max_frame_pixels, _FFMPEG_MAX_PIXELS))}
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
                except (av.error.ExitError, av.error.MemoryError):
                    raise
                except av.error.ArgumentError as exc:
                    # EINVAL: what `max_pixels` answers for a frame over the limit (damaged data is EINVALIDDATA).
                    raise _error(
                        self.source,
                        f"the decoder refused a frame (over the limit of {self.max_frame_pixels} pixels, "
                        f"max_frame_pixels, or of invalid size: {exc})",
                    ) from exc
                except av.error.FFmpegError:
                    self.skipped.add(packet.pts)
                    continue
                for frame in frames:
                    _check_frame_size(self.source, frame.width, frame.height, self.max_frame_pixels)
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
        except av.error.MemoryError:
            raise
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

    def count_remaining(self) -> int:
        """Decode to the end of the stream keeping only the last frame; returns the count, the current frame included."""
        count = 1
        while (decoded := self._take_next()) is not None:
            self.current = decoded
            count += 1
        return count

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


def _to_upright_rgb(
    frame: "av.VideoFrame", rotation: int, width: int, height: int, reformatter: "av.video.reformatter.VideoReformatter"
) -> np.ndarray:
    # Scaling to the first frame's coded size keeps one shape if the resolution changes mid-stream.
    array = reformatter.reformat(frame, format="rgb24", width=width, height=height).to_ndarray()
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


def _check_frame_size(source: str, width: int, height: int, max_frame_pixels: int) -> None:
    if width * height > max_frame_pixels:
        raise _error(
            source,
            f"frames of {width}x{height} pixels exceed the limit of {max_frame_pixels} pixels "
            "(max_frame_pixels); a damaged header, or raise the limit for such video",
        )


def _set_counted_length(metadata: VideoFileMetadata, num_frames: int, fps: float) -> None:
    metadata.total_num_frames = num_frames
    metadata.frame_count_is_estimate = False
    if metadata.duration is None:
        metadata.duration = num_frames / fps


@contextlib.contextmanager
def _video_reader(video: _Input, limits: _Limits, deadline: _Deadline, allow_seek: bool):
    """A `_FrameReader` on the first video stream of ``video`` and its metadata; closed (decoder state dropped) on
    exit. Failures while opening are `VideoDecodeError`s; exceptions of the caller's block pass through."""
    with _open_video(video, limits) as container:
        with _reading(video.name, limits.timeout):
            if not container.streams.video:
                kinds = sorted({stream.type for stream in container.streams}) or ["none"]
                raise _error(video.name, f"no video stream (streams found: {', '.join(kinds)})")
            stream = container.streams.video[0]
            if stream.codec_context is None:
                raise _error(
                    video.name,
                    "no decoder for the video codec (unknown to PyAV's FFmpeg build, or a damaged stream header)",
                )
            _check_frame_size(
                video.name, stream.codec_context.width, stream.codec_context.height, limits.max_frame_pixels
            )
            try:
                reader = _FrameReader(video.name, container, stream, limits, deadline, allow_seek)
            except av.error.FFmpegError as exc:
                if isinstance(exc, (av.error.ExitError, av.error.MemoryError)):
                    raise
                raise _error(video.name, f"cannot decode the video stream ({exc})") from exc
        try:
            with _reading(video.name, limits.timeout):
                metadata = _metadata(container, stream, reader)
            yield reader, metadata
        finally:
            reader.close()


def _limits_and_deadline(source, timeout, total_timeout, max_frame_pixels, max_download_bytes):
    limits = _Limits(timeout, total_timeout, max_frame_pixels, max_download_bytes)
    return limits, _Deadline(video_name(source), total_timeout)


def _decoder_metadata(decoder, max_frame_pixels: int) -> VideoFileMetadata:
    """Metadata of a torchcodec ``VideoDecoder`` (its ``metadata``: num_frames, average_fps, width, height,
    duration_seconds)."""
    name = video_name(decoder)
    with _reading(name, DEFAULT_TIMEOUT):
        stream = decoder.metadata
        width, height = int(stream.width), int(stream.height)
        _check_frame_size(name, width, height, max_frame_pixels)
        num_frames, fps = stream.num_frames, stream.average_fps
        if not num_frames or not fps:
            raise _error(name, f"the decoder reports no frame count or frame rate ({num_frames}, {fps})")
        return VideoFileMetadata(
            total_num_frames=int(num_frames),
            fps=float(fps),
            width=width,
            height=height,
            duration=stream.duration_seconds,
            video_backend="torchcodec",
        )


def read_video_metadata(
    source: VideoSource,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> VideoFileMetadata:
    """
    Frame count, fps, duration, upright size and rotation of a video (any `VideoSource`).

    The first frame is decoded (to learn the rotation and to make sure the stream decodes). A
    stream with neither a frame count nor a duration (a raw elementary stream such as ``.h264``)
    is decoded to the end to count its frames, keeping one frame at a time. ``timeout``,
    ``total_timeout``, ``max_frame_pixels`` and ``max_download_bytes`` are as in `load_video`.

    Raises:
        `VideoDecodeError`: the input is missing, empty, not a video (or a playlist), has no video
            stream, uses a codec PyAV cannot decode, yields no frame, has frames over
            ``max_frame_pixels``, a download fails or exceeds ``max_download_bytes``, a read or the
            whole call times out, or anything else fails while reading it.
    """
    if _is_frame_decoder(source):
        return _decoder_metadata(source, max_frame_pixels)
    limits, deadline = _limits_and_deadline(source, timeout, total_timeout, max_frame_pixels, max_download_bytes)
    with _video_input(source, limits, deadline) as video:
        with _video_reader(video, limits, deadline, allow_seek=False) as (reader, metadata):
            if metadata.total_num_frames is None:
                with _reading(video.name, timeout):
                    _set_counted_length(metadata, reader.count_remaining(), reader.fps)
            return metadata


def load_video(
    source: VideoSource,
    frame_indices: np.ndarray | list[int] | Callable[[VideoFileMetadata], np.ndarray] | None = None,
    *,
    seek: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> tuple[np.ndarray, VideoFileMetadata]:
    """
    Decode the requested frames of a video as upright RGB.

    Args:
        source (`VideoSource`): a local path; an http(s) URL (downloaded to a temporary file,
            removed afterwards); the encoded bytes (``bytes``, ``bytearray``, ``memoryview``); a
            binary file object (a seekable one is read from its start and left at its position; a stream
            is read once); a `datasets`
            video dict ``{"path": ..., "bytes": ...}`` (the bytes when present, else the path); or
            a torchcodec ``VideoDecoder`` (frames by index through its ``get_frames_at``).
        frame_indices: integer indices of any shape (e.g. ``(T,)`` or ``(views, T)`` from
            ``sampling.sample_frame_indices``), or a callable ``metadata -> indices`` (so the plan
            can depend on the frame count without opening the file twice), or ``None`` for every
            frame. Indices must lie in ``[0, metadata.total_num_frames - 1]``; repeats are decoded
            once.
        seek (`bool`): seek to the keyframe before far-away frames (default). ``False`` decodes
            forward from the start up to the last wanted frame.
        timeout (`float`): seconds allowed for opening and for each read (of the file or the network).
        total_timeout (`float`, *optional*): seconds allowed for the whole call, download included
            (checked between packets and network reads; None for no limit). Decoding every frame of a
            long video (``frame_indices=None``) may need more than the default.
        max_frame_pixels (`int`): larger frames (width x height) are refused rather than decoded,
            whether the first or any later frame.
        max_download_bytes (`int`): larger downloads are refused (the announced size first).

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
    if _is_frame_decoder(source):
        return _load_with_decoder(source, frame_indices, max_frame_pixels)
    limits, deadline = _limits_and_deadline(source, timeout, total_timeout, max_frame_pixels, max_download_bytes)
    with _video_input(source, limits, deadline) as video:
        with _video_reader(video, limits, deadline, allow_seek=seek) as (reader, metadata):
            every_frame = None
            with _reading(video.name, timeout):
                if frame_indices is None:
                    every_frame = reader.remaining_frames()
                    _set_counted_length(metadata, len(every_frame), reader.fps)
                elif metadata.total_num_frames is None:
                    # Count first, keeping no frames (a raw stream cannot seek back: it is read again below).
                    _set_counted_length(metadata, reader.count_remaining(), reader.fps)
                    reader.close()
            indices = _plan_indices(frame_indices, metadata)
            slots, inverse = np.unique(indices, return_inverse=True)
            with _reading(video.name, timeout):
                if every_frame is not None:
                    wanted = [every_frame[slot] for slot in slots]
                    num_decoded = reader.num_decoded
                elif reader.current is not None:
                    wanted, num_decoded = _frames_at(reader, slots, metadata), reader.num_decoded
                else:
                    with _video_reader(video, limits, deadline, allow_seek=False) as (second_reader, _):
                        wanted = _frames_at(second_reader, slots, metadata)
                        num_decoded = reader.num_decoded + second_reader.num_decoded
                video_frames = _upright_rgb_frames(wanted, metadata.rotation)[inverse.reshape(indices.shape)]
            _warn_if_skipped(reader, stacklevel=3)
            metadata.frames_indices = indices
            metadata.num_decoded_frames = num_decoded
            return video_frames, metadata


class StreamedFrame(NamedTuple):
    """One frame from `iter_video_frames`."""

    index: int
    """The frame's index (slot) in the video."""
    time: float
    """Seconds from the first frame: ``index / fps``."""
    image: np.ndarray
    """(H, W, 3) ``uint8`` upright RGB."""


def iter_video_frames(
    source: VideoSource,
    frame_indices: np.ndarray | list[int] | Callable[[VideoFileMetadata], np.ndarray] | None = None,
    *,
    seek: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
    max_frame_pixels: int = MAX_FRAME_PIXELS,
    max_download_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES,
) -> Iterator[StreamedFrame]:
    """
    Decode a video once from start to end, yielding the requested frames one at a time, in increasing order.

    Same inputs, frame rule, limits and errors as `load_video`, but nothing is kept: memory holds the decoder's state
    and the frame being yielded however long the video is, so a whole film can be processed in one pass. Frames
    between the requested ones are decoded (later frames depend on them) but not converted to RGB; gaps longer than a
    keyframe interval are skipped by seeking when ``seek`` is set.

    Args:
        source (`VideoSource`): as in `load_video`.
        frame_indices: integer indices (any shape, any order, repeats allowed: each distinct index is yielded once,
            in increasing order), a callable ``metadata -> indices`` (so the plan can depend on the frame count and
            fps; a raw stream without either is counted first, by an extra decoding pass), or ``None`` for every
            frame.
        total_timeout (`float`, *optional*): seconds allowed for the download, and then for reaching each requested
            frame (decoding time only, not the time the caller spends between frames; a whole long video may take
            much longer). None for no limit.
        seek, timeout, max_frame_pixels, max_download_bytes: as in `load_video`.

    Yields:
        `StreamedFrame`: ``(index, time, image)``.

    Raises:
        `VideoDecodeError` and `ValueError`: as `load_video`, raised when reached (frames before a failure have been
        yielded by then).
    """
    if _is_frame_decoder(source):
        yield from _stream_with_decoder(source, frame_indices, max_frame_pixels)
        return
    limits, deadline = _limits_and_deadline(source, timeout, total_timeout, max_frame_pixels, max_download_bytes)
    with _video_input(source, limits, deadline) as video:
        with _video_reader(video, limits, deadline, allow_seek=seek) as (reader, metadata):
            if metadata.total_num_frames is not None:
                yield from _stream_frames(reader, metadata, frame_indices, limits)
                return
            with _reading(video.name, timeout):
                _set_counted_length(metadata, reader.count_remaining(), reader.fps)
            reader.close()
        # A raw stream cannot seek back: it is read again.
        with _video_reader(video, limits, deadline, allow_seek=False) as (reader, _):
            yield from _stream_frames(reader, metadata, frame_indices, limits)


def _stream_frames(
    reader: _FrameReader, metadata: VideoFileMetadata, frame_indices, limits: _Limits
) -> Iterator[StreamedFrame]:
    slots = np.unique(_plan_indices(frame_indices, metadata))
    converted, size = None, None  # (decoded frame, its RGB): a frame serving several slots is converted once
    reformatter = av.video.reformatter.VideoReformatter()  # one swscale context for the whole pass
    for slot in slots.tolist():
        with _reading(reader.source, limits.timeout):
            reader.deadline = _Deadline(reader.source, limits.total_timeout)
            decoded = reader.frame_at(slot)
            if converted is None or converted[0] is not decoded:
                size = size or (decoded.frame.width, decoded.frame.height)
                converted = (decoded, _to_upright_rgb(decoded.frame, metadata.rotation, *size, reformatter))
        yield StreamedFrame(slot, slot / metadata.fps, converted[1])
    _warn_if_short(reader, metadata, int(slots[-1]))
    _warn_if_skipped(reader, stacklevel=4)


def _stream_with_decoder(decoder, frame_indices, max_frame_pixels: int) -> Iterator[StreamedFrame]:
    """`iter_video_frames` through a torchcodec ``VideoDecoder``: its frames by index, a few at a time."""
    metadata = _decoder_metadata(decoder, max_frame_pixels)
    slots = np.unique(_plan_indices(frame_indices, metadata))
    for chunk in np.split(slots, range(_DECODER_CHUNK, len(slots), _DECODER_CHUNK)):
        frames, _ = _load_with_decoder(decoder, chunk, max_frame_pixels)
        for slot, image in zip(chunk.tolist(), frames):
            yield StreamedFrame(slot, slot / metadata.fps, image)


def _plan_indices(frame_indices, metadata: VideoFileMetadata) -> np.ndarray:
    if frame_indices is None:
        return np.arange(metadata.total_num_frames)
    indices = np.asarray(frame_indices(metadata) if callable(frame_indices) else frame_indices)
    _check_indices(indices, metadata.total_num_frames)
    return indices


def _frames_at(reader: _FrameReader, slots: np.ndarray, metadata: VideoFileMetadata) -> list[_DecodedFrame]:
    wanted = [reader.frame_at(int(slot)) for slot in slots]
    _warn_if_short(reader, metadata, int(slots[-1]))
    return wanted


def _upright_rgb_frames(wanted: list[_DecodedFrame], rotation: int) -> np.ndarray:
    """(N, H, W, 3) RGB of the wanted frames (each distinct frame converted once)."""
    first = wanted[0].frame
    # One converter for all frames: `VideoFrame.to_ndarray(format=...)` sets up a new swscale context per frame,
    # which costs ~0.5 ms, 12x the conversion itself for small frames (measured on 36 x 36 H.264 frames).
    reformatter = av.video.reformatter.VideoReformatter()
    rgb_by_frame = {}
    for decoded in wanted:
        if id(decoded) not in rgb_by_frame:
            rgb_by_frame[id(decoded)] = _to_upright_rgb(decoded.frame, rotation, first.width, first.height, reformatter)
    return np.stack([rgb_by_frame[id(decoded)] for decoded in wanted])


def _load_with_decoder(decoder, frame_indices, max_frame_pixels: int) -> tuple[np.ndarray, VideoFileMetadata]:
    """`load_video` through a torchcodec ``VideoDecoder``: frames by index (``get_frames_at(indices=...)``, whose
    ``.data`` is (N, 3, H, W) or, with ``dimension_order="NHWC"``, (N, H, W, 3) uint8); torchcodec counts frames, so
    variable-frame-rate video follows its rule."""
    name = video_name(decoder)
    metadata = _decoder_metadata(decoder, max_frame_pixels)
    indices = _plan_indices(frame_indices, metadata)
    slots, inverse = np.unique(indices, return_inverse=True)
    with _reading(name, DEFAULT_TIMEOUT):
        frames = np.asarray(decoder.get_frames_at(indices=slots.tolist()).data)
        if frames.ndim != 4 or 3 not in (frames.shape[1], frames.shape[-1]):
            raise _error(name, f"expected frames (N, 3, H, W) or (N, H, W, 3) from the decoder, got {frames.shape}")
        if frames.shape[-1] != 3 or (frames.shape[1] == 3 and frames.shape[2:] == (metadata.height, metadata.width)):
            frames = frames.transpose(0, 2, 3, 1)
        frames = np.ascontiguousarray(frames, dtype=np.uint8)[inverse.reshape(indices.shape)]
    metadata.frames_indices = indices
    metadata.num_decoded_frames = len(slots)
    return frames, metadata


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


def _warn_if_skipped(reader: _FrameReader, stacklevel: int) -> None:
    if reader.skipped:
        warnings.warn(
            f"{reader.source}: skipped {len(reader.skipped)} undecodable packet(s) or corrupt frame(s); "
            "neighbouring good frames were used instead.",
            stacklevel=stacklevel,
        )


def _warn_if_short(reader: _FrameReader, metadata: VideoFileMetadata, last_wanted: int) -> None:
    last_available = reader.slot_of(reader.current)
    missing = last_wanted - last_available
    if reader.ended and missing > (1 if metadata.frame_count_is_estimate else 0):
        count_kind = "estimated" if metadata.frame_count_is_estimate else "declared"
        warnings.warn(
            f"{reader.source}: the stream ends at frame {last_available} but frame {last_wanted} was requested "
            f"({count_kind} frame count {metadata.total_num_frames}); used the last frame instead.",
            stacklevel=4,
        )
