"""Hostile video files: every decode gives frames or a `VideoDecodeError`, in bounded time, and leaves no file
handle, thread or process behind.

The fuzz test mutates real files of every container we read (byte flips, truncations, duplicated and removed chunks,
overwritten headers, spliced random bytes) and adds pure random bytes; hypothesis draws the inputs deterministically
(`derandomize=True`) so CI runs are repeatable, within a wall-clock budget. The count of inputs tried is printed in
the test output.
"""

import collections
import contextlib
import gc
import itertools
import os
import time
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ila_hf import video_io
from ila_hf.video_io import VideoDecodeError, load_video, read_video_metadata
from ila_hf.video_processing_ila import ILAVideoProcessor

from .videos import (
    ContainerProxy,
    index_frame,
    jpeg_bytes,
    read_indices,
    write_mjpeg_packets,
    write_raw_h264,
    write_video,
)


FUZZ_BUDGET_SECONDS = 20.0
FUZZ_MAX_EXAMPLES = 3000
PER_INPUT_SECONDS = 10.0  # generous for a busy 2-core machine; a clean decode of these files takes milliseconds
INPUT_TOTAL_TIMEOUT = 5.0  # `total_timeout` given to the decoder for each fuzzed input


# ------------------------------------------------------------------------------------------------------ resources
def open_file_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


# Allocator housekeeping that starts and ends threads on its own schedule (pyarrow's jemalloc, loaded with datasets).
HOUSEKEEPING_THREADS = {"jemalloc_bg_thd"}


def per_thread(file_name: str) -> list[str]:
    """
    The contents of /proc/self/task/<tid>/<file_name> for each thread still alive when it is read: a thread that
    ends between the listing and the read gives FileNotFoundError or ProcessLookupError (ESRCH) depending on how far
    its exit has got, and is left out.
    """
    contents = []
    for task in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            contents.append(Path(f"/proc/self/task/{task}/{file_name}").read_text())
    return contents


def thread_names() -> list[str]:
    """Names of this process's threads as the kernel sees them (FFmpeg's decoding threads are not Python threads)."""
    return sorted(name.strip() for name in per_thread("comm"))


def os_threads() -> int:
    return sum(name not in HOUSEKEEPING_THREADS for name in thread_names())


def child_processes() -> int:
    return sum(len(children.split()) for children in per_thread("children"))


def resources() -> tuple[int, int, int]:
    return open_file_descriptors(), os_threads(), child_processes()


def assert_released(baseline: tuple[int, int, int], grace_seconds: float = 2.0) -> None:
    """
    (file descriptors, threads, child processes) are back to `baseline` within `grace_seconds`: a thread that is
    ending as the call returns (the kernel lists it until it has exited) is not a leak; one still there after the
    grace period is.
    """
    give_up = time.monotonic() + grace_seconds
    while True:
        now = resources()
        if all(count <= before for count, before in zip(now, baseline)):
            return
        if time.monotonic() > give_up:
            raise AssertionError(
                f"(file descriptors, threads, child processes) went from {baseline} to {now}; "
                f"threads now: {thread_names()}"
            )
        time.sleep(0.01)


@contextlib.contextmanager
def garbage_collector_paused():
    """Resources must be released when a call returns, not whenever the garbage collector next runs."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# ------------------------------------------------------------------------------------------------------ inputs
@pytest.fixture(scope="module")
def seed_videos(tmp_path_factory) -> dict[str, bytes]:
    """
    Real files to mutate: each container with its usual codec, plus audio tracks and a fixed GOP; and the hostile
    forms met so far: rotation tags that are no number, extreme aspect ratios, a raw .h264 stream (no index, no
    count), MJPEG whose frame size changes, and playlists (HLS, ffconcat) naming a local file.
    """
    folder = tmp_path_factory.mktemp("fuzz_seeds")
    paths = [write_video(folder / f"seed{suffix}", 24) for suffix in (".mp4", ".webm", ".mkv", ".avi", ".mov")]
    paths.append(write_video(folder / "with_audio.mp4", 40, gop_size=8, audio=True))
    paths.append(write_video(folder / "with_audio.webm", 30, audio=True))
    paths.append(write_video(folder / "mjpeg.avi", 12, codec="mjpeg", pixel_format="yuvj420p"))
    for tag in ("nan", "1e400"):
        paths.append(write_video(folder / f"rotate_{tag}.mkv", 12, stream_tags={"rotate": tag}))
    mjpeg = dict(codec="mjpeg", pixel_format="yuvj420p")
    paths.append(write_video(folder / "wide.mkv", 6, width=16384, height=4, **mjpeg))
    paths.append(write_video(folder / "tall.avi", 6, width=8, height=8192, **mjpeg))
    paths.append(write_raw_h264(folder / "raw.h264", 24))
    jpegs = [jpeg_bytes(index_frame(index, side, side)) for index, side in enumerate([64, 64, 200, 48, 64])]
    paths.append(write_mjpeg_packets(folder / "growing.mkv", jpegs))
    target = paths[0]
    (folder / "list.m3u8").write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{target}\n#EXT-X-ENDLIST\n")
    (folder / "list.ffconcat").write_text(f"ffconcat version 1.0\nfile {target.name}\n")
    paths += [folder / "list.m3u8", folder / "list.ffconcat"]
    return {path.name: path.read_bytes() for path in paths}


def _span(data: bytearray, start: float, length: int) -> tuple[int, int]:
    first = int(start * len(data))
    return first, min(len(data), first + length)


def apply_mutation(data: bytearray, mutation: tuple) -> bytearray:
    kind, position, size, value = mutation
    if not data:
        return data
    if kind == "flip":  # `size` single-bit flips spread from `position`
        for offset in range(size):
            index = (int(position * len(data)) + offset * 997) % len(data)
            data[index] ^= 1 << (value % 8)
    elif kind == "truncate":
        del data[int(position * len(data)) :]
    elif kind == "duplicate":  # a chunk repeated in place (a retried write)
        first, last = _span(data, position, size)
        data[last:last] = data[first:last]
    elif kind == "remove":  # a chunk lost
        first, last = _span(data, position, size)
        del data[first:last]
    elif kind == "header":  # the container header (first 512 bytes) overwritten
        first = int(position * min(len(data), 512))
        data[first : first + min(size, 32)] = bytes([value]) * min(size, 32)
    elif kind == "splice":  # random bytes written over a chunk
        first, last = _span(data, position, size)
        data[first:last] = np.random.default_rng(value).bytes(last - first)
    return data


mutations = st.tuples(
    st.sampled_from(["flip", "truncate", "duplicate", "remove", "header", "splice"]),
    st.floats(0.0, 1.0, exclude_max=True),
    st.integers(1, 64) | st.integers(1, 4096),  # sizes: small edits as often as large ones
    st.integers(0, 255),
)
mutated_inputs = st.tuples(st.just("mutated"), st.integers(0, 63), st.lists(mutations, min_size=1, max_size=4))
random_inputs = st.tuples(
    st.just("random"), st.sampled_from([".mp4", ".webm", ".mkv", ".avi"]), st.binary(min_size=1, max_size=2048)
)
ENTRY_POINTS = ("load_video", "load_video_no_seek", "load_video_every_frame", "read_video_metadata", "processor")


# ------------------------------------------------------------------------------------------------------ fuzzing
@pytest.mark.slow
def test_hostile_files_give_frames_or_a_video_decode_error_and_release_everything(
    one_torch_thread, seed_videos, tmp_path_factory, capsys, record_property
):
    folder = tmp_path_factory.mktemp("fuzz_inputs")
    seeds = sorted(seed_videos.items())
    processor = ILAVideoProcessor(num_frames=4, crop_size={"height": 32, "width": 32})
    # Warm up every path once (torch's thread pools, lazily opened files), then take the baseline.
    warm_up = folder / seeds[0][0]
    warm_up.write_bytes(seeds[0][1])
    processor(str(warm_up), return_tensors="pt")
    load_video(warm_up)
    baseline = resources()
    outcomes = collections.Counter()
    slowest = [0.0, ""]
    budget_end = time.monotonic() + FUZZ_BUDGET_SECONDS

    def decode(path: Path, entry_point: str) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # skipped packets and short streams warn; that is allowed here
            if entry_point == "processor":
                pixel_values = processor(str(path), return_tensors="pt")["pixel_values"]
                assert pixel_values.shape == (1, 4, 3, 32, 32) and torch.isfinite(pixel_values).all()
            elif entry_point == "read_video_metadata":
                metadata = read_video_metadata(path, total_timeout=INPUT_TOTAL_TIMEOUT)
                assert metadata.total_num_frames >= 1 and metadata.fps > 0
            elif entry_point == "load_video_every_frame":
                frames, metadata = load_video(path, total_timeout=INPUT_TOTAL_TIMEOUT)
                assert frames.shape[0] == metadata.total_num_frames >= 1
            else:
                frames, metadata = load_video(
                    path,
                    lambda metadata: np.linspace(0, metadata.total_num_frames - 1, 4).round().astype(int),
                    seek=entry_point == "load_video",
                    total_timeout=INPUT_TOTAL_TIMEOUT,
                )
                assert frames.shape == (4, metadata.height, metadata.width, 3) and frames.dtype == np.uint8

    @settings(
        max_examples=FUZZ_MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(hostile=st.one_of(mutated_inputs, random_inputs), entry_point=st.sampled_from(ENTRY_POINTS))
    def decode_hostile_input(hostile, entry_point):
        if time.monotonic() > budget_end:
            return
        kind, choice, changes = hostile
        if kind == "mutated":
            name, data = seeds[choice % len(seeds)]
            data = bytearray(data)
            for mutation in changes:
                data = apply_mutation(data, mutation)
        else:
            name, data = f"random{choice}", changes
        path = folder / f"input{Path(name).suffix}"
        path.write_bytes(bytes(data))
        started = time.monotonic()
        with garbage_collector_paused():
            try:
                decode(path, entry_point)
                outcomes[f"{entry_point}: frames"] += 1
            except VideoDecodeError as error:
                assert str(error).startswith(str(path)), error
                outcomes[f"{entry_point}: VideoDecodeError"] += 1
            elapsed = time.monotonic() - started
            assert_released(baseline)
        slowest[:] = max(slowest, [elapsed, f"{entry_point} on {kind} {name}"])
        assert elapsed < PER_INPUT_SECONDS, f"{entry_point} took {elapsed:.1f} s on a {kind} {name}"

    started = time.monotonic()
    decode_hostile_input()
    tried = sum(outcomes.values())
    record_property("fuzz_inputs", tried)
    with capsys.disabled():
        print(
            f"\n[fuzz] {tried} hostile inputs in {time.monotonic() - started:.1f} s "
            f"(slowest {slowest[0]:.2f} s: {slowest[1]}): " + ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        )
    assert tried >= 200, f"only {tried} inputs fitted in the budget"
    assert sum(count for name, count in outcomes.items() if name.endswith("frames")) > 0


# ------------------------------------------------------------------------------------------------------ each defect
def test_the_hostile_seeds_unmutated_give_frames_or_are_refused(seed_videos, tmp_path):
    processor = ILAVideoProcessor(num_frames=4, crop_size={"height": 32, "width": 32})
    for name, data in seed_videos.items():
        path = tmp_path / name
        path.write_bytes(data)
        if name.startswith("list."):
            with pytest.raises(VideoDecodeError, match=rf"^{path}: not a readable video container"):
                load_video(path, [0])
            continue
        metadata = read_video_metadata(path)
        frames, _ = load_video(path, [0, metadata.total_num_frames - 1])
        assert frames.shape[1:] == (metadata.height, metadata.width, 3), name
        assert processor(str(path), return_tensors="pt")["pixel_values"].shape == (1, 4, 3, 32, 32), name


def test_a_tag_that_is_not_utf8_does_not_make_the_video_unreadable(tmp_path):
    path = tmp_path / "bad_tag.mkv"
    with av.open(str(path), "w") as container:
        container.metadata["title"] = "TITLEMARKER"
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for index in range(10):
            frame = av.VideoFrame.from_ndarray(index_frame(index, 48, 64), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = path.read_bytes()
    assert data.count(b"TITLEMARKER") == 1
    path.write_bytes(data.replace(b"TITLEMARKER", b"\xff\xfe\xfa" + b"X" * 8))  # same length, invalid UTF-8
    frames, _ = load_video(path, [0, 9])
    assert read_indices(frames) == [0, 9]


def test_decoding_threads_end_with_the_call_not_at_the_next_garbage_collection(clip_mp4, tmp_path):
    load_video(clip_mp4, [0])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(clip_mp4.read_bytes()[:3000])
    gc.collect()
    with garbage_collector_paused():
        baseline = resources()
        for _ in range(5):
            load_video(clip_mp4, [0, 30, 59])
            load_video(clip_mp4, [0, 59], seek=False)
            read_video_metadata(clip_mp4)
            with contextlib.suppress(VideoDecodeError), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                load_video(broken, [0])
        assert_released(baseline)  # with the fuzz loop's grace for a thread the kernel still lists as it exits


class EndlessContainer(ContainerProxy):
    """A PyAV container whose demuxer repeats the file's video packets without end (as some damaged files make
    FFmpeg's demuxers do). It gives up after `limit` packets so that a decoder without a deadline fails the test
    instead of hanging it."""

    def __init__(self, container, limit: int = 20000):
        super().__init__(container)
        self.limit = limit

    def demux(self, *args, **kwargs):
        packets = [packet for packet in self._container.demux(*args, **kwargs) if packet.size]
        for count, packet in enumerate(itertools.cycle(packets)):
            if count >= self.limit:
                raise AssertionError(f"the decoder read {count} packets and would never have stopped")
            yield packet


def test_a_demuxer_that_never_ends_is_stopped_by_the_total_timeout(clip_mp4, monkeypatch):
    real_open = av.open
    monkeypatch.setattr(video_io.av, "open", lambda *args, **kwargs: EndlessContainer(real_open(*args, **kwargs)))
    started = time.monotonic()
    with pytest.raises(VideoDecodeError, match=r"clip\.mp4: gave up after 0\.5 s \(total_timeout\) while decoding"):
        load_video(clip_mp4, total_timeout=0.5)
    assert time.monotonic() - started < 5


def test_frames_over_the_pixel_limit_are_refused_before_conversion(clip_mp4):
    with pytest.raises(VideoDecodeError, match=r"frames of 64x48 pixels exceed the limit of 3071 pixels"):
        load_video(clip_mp4, [0], max_frame_pixels=64 * 48 - 1)
    with pytest.raises(VideoDecodeError, match="max_frame_pixels"):
        read_video_metadata(clip_mp4, max_frame_pixels=100)
    frames, _ = load_video(clip_mp4, [0], max_frame_pixels=64 * 48)
    assert frames.shape == (1, 48, 64, 3)
