"""Real test videos written with PyAV, whose frames say which frame they are.

Frame ``i`` shows ``i`` as a 4 x 3 grid of black/white blocks (12 bits, row-major, most
significant bit first), which survives lossy codecs and chroma subsampling; `read_index` reads it
back from decoded pixels. So a test can check *which* frames a decoder returned, not only how many.
"""

import fractions
import io
import os
import subprocess
import sys
import types
from pathlib import Path

import av
import numpy as np


GRID_ROWS, GRID_COLUMNS = 3, 4
MAX_INDEX = 2 ** (GRID_ROWS * GRID_COLUMNS) - 1

# Container -> (codec, pixel format) used by `write_video` when no codec is given.
DEFAULT_CODECS = {
    ".mp4": ("libx264", "yuv420p"),
    ".mov": ("libx264", "yuv420p"),
    ".mkv": ("libx264", "yuv420p"),
    ".webm": ("libvpx-vp9", "yuv420p"),
    ".avi": ("mpeg4", "yuv420p"),
}


def _block_edges(length: int, parts: int) -> np.ndarray:
    return np.linspace(0, length, parts + 1).round().astype(int)


def index_frame(index: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 frame showing ``index`` in the block code."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index must be in [0, {MAX_INDEX}], got {index}")
    bits = (index >> np.arange(GRID_ROWS * GRID_COLUMNS)[::-1]) & 1
    grid = (bits.reshape(GRID_ROWS, GRID_COLUMNS) * 255).astype(np.uint8)
    rows = np.searchsorted(_block_edges(height, GRID_ROWS), np.arange(height), side="right") - 1
    columns = np.searchsorted(_block_edges(width, GRID_COLUMNS), np.arange(width), side="right") - 1
    return np.repeat(grid[rows][:, columns][..., None], 3, axis=2)


def read_index(frame: np.ndarray) -> int:
    """Recover the index from a decoded (H, W, 3) frame: the mean of each block's centre."""
    height, width = frame.shape[:2]
    row_edges, column_edges = _block_edges(height, GRID_ROWS), _block_edges(width, GRID_COLUMNS)
    luma = frame.astype(np.float64).mean(axis=2)
    bits = []
    for top, bottom in zip(row_edges[:-1], row_edges[1:]):
        for left, right in zip(column_edges[:-1], column_edges[1:]):
            margin_y, margin_x = (bottom - top) // 4, (right - left) // 4
            block = luma[top + margin_y : bottom - margin_y, left + margin_x : right - margin_x]
            bits.append(int(block.mean() > 127.5))
    return int("".join(map(str, bits)), 2)


def read_indices(frames: np.ndarray) -> list[int]:
    """`read_index` of every frame of a (..., H, W, 3) array, flattened in order."""
    return [read_index(frame) for frame in frames.reshape(-1, *frames.shape[-3:])]


def grey_frame(level: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 frame of one grey level."""
    return np.full((height, width, 3), level, dtype=np.uint8)


def write_video(
    path: str | os.PathLike,
    num_frames: int = 30,
    *,
    width: int = 64,
    height: int = 48,
    fps: int = 25,
    codec: str | None = None,
    pixel_format: str | None = None,
    gop_size: int | None = None,
    frame_times_ms: list[int] | None = None,
    rotation: int | None = None,
    rotate_tag: int | None = None,
    stream_tags: dict[str, str] | None = None,
    audio: bool = False,
    container_options: dict[str, str] | None = None,
    frames: np.ndarray | None = None,
    noise: int = 0,
) -> Path:
    """
    Write a video whose frame ``i`` is ``index_frame(i)`` (or ``frames[i]``) and return its path.

    Args:
        gop_size: a fixed keyframe interval (scene-cut keyframes disabled for libx264).
        frame_times_ms: presentation times in milliseconds, for variable-frame-rate video.
        rotation: display-matrix rotation in degrees counter-clockwise. The stored frames are
            the upright ones rotated the other way, as a phone camera writes them, so a decoder
            that honours the matrix gets ``index_frame(i)`` of size ``(height, width)`` back.
        rotate_tag: the legacy clockwise ``rotate`` stream tag instead (Matroska keeps it).
        stream_tags: free-text tags of the video stream, written as given (e.g. ``{"rotate": "nan"}``).
        audio: add a silent AAC/Opus/MP3 track after the video track.
        frames: (N, H, W, 3) uint8 frames to write instead of the index pattern.
        noise: add seeded uniform noise in ``[-noise, noise]`` (incompressible, so packets are
            large, as in real video; the index pattern still reads back for ``noise <= 60``).
    """
    path = Path(path)
    default_codec, default_pixel_format = DEFAULT_CODECS.get(path.suffix, ("libx264", "yuv420p"))
    codec = codec or default_codec
    upright = frames if frames is not None else np.stack([index_frame(i, height, width) for i in range(num_frames)])
    if noise:
        offsets = np.random.default_rng(0).integers(-noise, noise, size=upright.shape, endpoint=True)
        upright = np.clip(upright.astype(np.int16) + offsets, 0, 255).astype(np.uint8)
    quarter_turns = 0
    if rotation is not None:
        quarter_turns = round(rotation / 90) % 4
    elif rotate_tag is not None:
        quarter_turns = round(-rotate_tag / 90) % 4
    stored = np.rot90(upright, -quarter_turns, axes=(1, 2))
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = stored.shape[1:3]
        stream.pix_fmt = pixel_format or default_pixel_format
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
            if codec == "libx264":
                stream.codec_context.options = {"x264-params": f"keyint={gop_size}:min-keyint={gop_size}:scenecut=0"}
        if frame_times_ms is not None:
            stream.codec_context.time_base = fractions.Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if rotate_tag is not None:
            stream.metadata["rotate"] = str(rotate_tag)
        stream.metadata.update(stream_tags or {})
        audio_stream = _add_audio_stream(container, path.suffix) if audio else None
        for i, image in enumerate(stored):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if frame_times_ms is not None:
                frame.pts, frame.time_base = frame_times_ms[i], fractions.Fraction(1, 1000)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
        if audio_stream is not None:
            _write_silence(container, audio_stream, seconds=len(stored) / fps)
    return path


def _add_audio_stream(container, suffix: str):
    codec = {".webm": "libopus", ".avi": "mp3", ".mp3": "mp3"}.get(suffix, "aac")
    return container.add_stream(codec, rate=48000)


def _write_silence(container, stream, seconds: float) -> None:
    samples_per_frame = stream.codec_context.frame_size or 1024
    sample_format = stream.codec_context.format.name
    dtype = {"u8": np.uint8, "s16": np.int16, "s32": np.int32, "flt": np.float32, "dbl": np.float64}[
        sample_format.removesuffix("p")
    ]
    for index in range(max(1, round(seconds * stream.rate / samples_per_frame))):
        samples = np.zeros((1, samples_per_frame), dtype=dtype)  # mono: same layout planar or packed
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout="mono")
        frame.rate, frame.pts = stream.rate, index * samples_per_frame
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> Path:
    """An .m4a (AAC) or .mp3 file without any video stream."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = _add_audio_stream(container, path.suffix)
        _write_silence(container, stream, seconds)
    return path


def write_random_bytes(path: str | os.PathLike, num_bytes: int = 4096, seed: int = 0) -> Path:
    path = Path(path)
    path.write_bytes(np.random.default_rng(seed).bytes(num_bytes))
    return path


def truncate_copy(source: str | os.PathLike, target: str | os.PathLike, fraction: float) -> Path:
    """Copy the first ``fraction`` of ``source``'s bytes (a download cut short)."""
    data = Path(source).read_bytes()
    target = Path(target)
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def write_mjpeg_with_corrupt_frames(path: str | os.PathLike, num_frames: int, corrupt_indices: list[int]) -> Path:
    """An MJPEG .avi whose frames ``corrupt_indices`` are zeroed out (the decoder rejects those packets)."""
    path = write_video(path, num_frames, codec="mjpeg", pixel_format="yuvj420p")
    data = bytearray(path.read_bytes())
    raw = np.frombuffer(bytes(data), dtype=np.uint8)
    starts = np.flatnonzero((raw[:-1] == 0xFF) & (raw[1:] == 0xD8)).tolist()  # JPEG start-of-image markers
    assert len(starts) == num_frames, f"expected one JPEG per frame, found {len(starts)}"
    ends = [start - 8 for start in starts[1:]] + [len(data) - 8]  # stop before the next chunk header
    for index in corrupt_indices:
        data[starts[index] : ends[index]] = bytes(ends[index] - starts[index])
    path.write_bytes(bytes(data))
    return path


def replace_codec_tag(source: str | os.PathLike, target: str | os.PathLike, old: bytes, new: bytes) -> Path:
    """Copy an AVI with its FourCC replaced, e.g. by one no FFmpeg decoder knows."""
    data = Path(source).read_bytes()
    assert old in data, f"{old!r} not found in {source}"
    target = Path(target)
    target.write_bytes(data.replace(old, new))
    return target


def jpeg_bytes(frame: np.ndarray) -> bytes:
    """One baseline JPEG (full-range 4:2:0) of an (H, W, 3) uint8 frame."""
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.height, encoder.width = frame.shape[:2]
    encoder.pix_fmt, encoder.time_base = "yuvj420p", fractions.Fraction(1, 25)
    rgb = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
    return bytes(encoder.encode(rgb.reformat(format="yuvj420p"))[0])


def declare_jpeg_size(jpeg: bytes, height: int, width: int) -> bytes:
    """The same JPEG with its frame header (SOF0) claiming ``height`` x ``width``: a few KB declaring gigabytes."""
    sof = jpeg.index(b"\xff\xc0")
    return jpeg[: sof + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[sof + 9 :]


def write_mjpeg_packets(path: str | os.PathLike, jpegs: list[bytes], fps: int = 25) -> Path:
    """A Matroska (or AVI) file with one MJPEG packet per given JPEG, as they are: sizes may change from frame to
    frame (the stream header states the first frame's)."""
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mjpeg", rate=fps)
        first = av.CodecContext.create("mjpeg", "r").decode(av.Packet(jpegs[0]))[0]
        stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuvj420p"
        for index, jpeg in enumerate(jpegs):
            packet = av.Packet(jpeg)
            packet.stream, packet.pts, packet.dts = stream, index, index
            packet.time_base, packet.is_keyframe = fractions.Fraction(1, fps), True
            container.mux(packet)
    return path


def write_raw_h264(path: str | os.PathLike, num_frames: int, *, width: int = 64, height: int = 48) -> Path:
    """An Annex B ``.h264`` elementary stream of index frames: no container, so no frame count, duration or index."""
    return write_video(Path(path).with_suffix(".h264"), num_frames, width=width, height=height, codec="libx264")


def write_repeated_h264_frame(path: str | os.PathLike, num_frames: int, *, width: int, height: int) -> Path:
    """A raw ``.h264`` stream of one intra-coded index frame written ``num_frames`` times: large decoded frames at
    almost no encoding cost (each copy decodes on its own)."""
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base, encoder.options = fractions.Fraction(1, 25), {"preset": "ultrafast", "tune": "zerolatency"}
    frame = av.VideoFrame.from_ndarray(index_frame(1, height, width), format="rgb24").reformat(format="yuv420p")
    packets = encoder.encode(frame) + encoder.encode(None)
    path = Path(path)
    path.write_bytes(b"".join(bytes(packet) for packet in packets) * num_frames)
    return path


def peak_rss_growth_mb(script: str, *args: str, address_space_gb: float = 4.0, timeout: float = 120) -> float:
    """
    Run ``script`` in a fresh Python (``sys.argv[1:]`` = ``args``) and return how far its peak RSS rose, in MiB,
    during the part after the line ``MEASURE_FROM_HERE`` (imports and warm-up before it are not counted). The child's
    address space is capped ``address_space_gb`` above its size at that line, so a runaway allocation fails there
    (the script's exit status is then non-zero) instead of exhausting a shared machine.
    """
    prologue, body = script.split("MEASURE_FROM_HERE\n")
    child = f"""{prologue}
import resource
_vm = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
_cap = _vm + int({address_space_gb} * 1024**3)
resource.setrlimit(resource.RLIMIT_AS, (_cap, _cap))
_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
{body}
print("PEAK_RSS_GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - _before)
"""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", child, *args], capture_output=True, text=True, timeout=timeout, env=environment
    )
    assert result.returncode == 0, f"the measured script failed:\n{result.stdout}\n{result.stderr[-3000:]}"
    growth_kb = int(result.stdout.split("PEAK_RSS_GROWTH_KB")[-1])
    return growth_kb / 1024


INPUT_FORMS = (
    "str",
    "Path",
    "bytes",
    "bytearray",
    "memoryview",
    "BytesIO",
    "open file",
    "datasets dict with bytes",
    "datasets dict with a path",
)


def video_in_form(path: Path, form: str):
    """The video at ``path`` as one of `INPUT_FORMS` (a fresh object each call: file objects are consumed). An open
    file is closed when the garbage collector takes it."""
    if form == "str":
        return str(path)
    if form == "Path":
        return path
    if form == "open file":
        return path.open("rb")
    data = path.read_bytes()
    return {
        "bytes": data,
        "bytearray": bytearray(data),
        "memoryview": memoryview(data),
        "BytesIO": io.BytesIO(data),
        "datasets dict with bytes": {"path": path.name, "bytes": data},
        "datasets dict with a path": {"path": str(path), "bytes": None},
    }[form]


class FakeFrameDecoder:
    """The part of torchcodec's ``VideoDecoder`` that ila_hf uses (torchcodec is not installed here): ``metadata``
    (num_frames, average_fps, width, height, duration_seconds) and ``get_frames_at(indices=...)`` returning an
    object whose ``data`` is (N, 3, H, W) uint8. Serves the given (N, H, W, 3) frames; records the requests."""

    def __init__(self, frames: np.ndarray, fps: float):
        self.frames = np.ascontiguousarray(frames.transpose(0, 3, 1, 2))
        count, height, width = frames.shape[:3]
        self.metadata = types.SimpleNamespace(
            num_frames=count, average_fps=fps, width=width, height=height, duration_seconds=count / fps
        )
        self.requests = []

    def get_frames_at(self, indices):
        self.requests.append(list(indices))
        return types.SimpleNamespace(data=self.frames[list(indices)])


class ContainerProxy:
    """Wraps a PyAV container, passing everything through; subclasses override what a test watches or breaks."""

    def __init__(self, container):
        self._container = container

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return self._container.__exit__(*exc_info)
