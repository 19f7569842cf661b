"""PyAV decoding: the right frames (read back from their pixels), little decoding work, clear errors."""

import contextlib
import errno
import http.server
import itertools
import os
import pickle
import re
import threading
import time
import warnings

import av
import numpy as np
import pytest

from ila_hf import video_io
from ila_hf.sampling import segment_indices
from ila_hf.video_io import VideoDecodeError, VideoFileMetadata, load_video, read_video_metadata

from .videos import (
    INPUT_FORMS,
    ContainerProxy,
    FakeFrameDecoder,
    grey_frame,
    index_frame,
    jpeg_bytes,
    peak_rss_growth_mb,
    read_index,
    read_indices,
    replace_codec_tag,
    truncate_copy,
    write_audio_only,
    write_mjpeg_packets,
    write_mjpeg_with_corrupt_frames,
    write_random_bytes,
    write_raw_h264,
    write_repeated_h264_frame,
    video_in_form,
    write_video,
)


CONTAINERS = [".mp4", ".mov", ".mkv", ".webm", ".avi"]


@pytest.fixture(scope="module")
def container_videos(videos_dir):
    """30 frames, 64x48, 25 fps, in each container with its usual codec (H.264, VP9, MPEG-4 Part 2)."""
    return {suffix: write_video(videos_dir / f"thirty{suffix}", 30) for suffix in CONTAINERS}


class CountingContainer(ContainerProxy):
    """Wraps a PyAV input container and counts the seeks and the video packets demuxed through it."""

    def __init__(self, container):
        super().__init__(container)
        self.seeks = 0
        self.packets = 0

    def seek(self, *args, **kwargs):
        self.seeks += 1
        return self._container.seek(*args, **kwargs)

    def demux(self, *args, **kwargs):
        for packet in self._container.demux(*args, **kwargs):
            self.packets += packet.size > 0
            yield packet


@pytest.fixture
def counting_open(monkeypatch):
    """Patch `av.open` as `video_io` sees it; returns the list of `CountingContainer`s opened."""
    opened = []
    real_open = av.open

    def open_and_count(*args, **kwargs):
        opened.append(CountingContainer(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(video_io.av, "open", open_and_count)
    return opened


# ---------------------------------------------------------------- the right frames
@pytest.mark.parametrize("suffix", CONTAINERS)
def test_requested_frames_come_back_in_request_order(container_videos, suffix):
    frames, metadata = load_video(container_videos[suffix], [0, 7, 13, 29, 7])
    assert frames.dtype == np.uint8 and frames.shape == (5, 48, 64, 3)
    assert read_indices(frames) == [0, 7, 13, 29, 7]
    assert metadata.frames_indices.tolist() == [0, 7, 13, 29, 7]


@pytest.mark.parametrize("suffix", CONTAINERS)
def test_metadata_of_each_container(container_videos, suffix):
    metadata = read_video_metadata(container_videos[suffix])
    assert isinstance(metadata, VideoFileMetadata)
    assert (metadata.width, metadata.height, metadata.fps, metadata.rotation) == (64, 48, 25.0, 0)
    assert metadata.duration == pytest.approx(1.2, abs=0.05)
    assert metadata.video_backend == "pyav"
    if suffix in (".mkv", ".webm"):  # Matroska stores no frame count: duration * fps
        assert metadata.frame_count_is_estimate and abs(metadata.total_num_frames - 30) <= 1
    else:
        assert not metadata.frame_count_is_estimate and metadata.total_num_frames == 30


@pytest.mark.parametrize(
    ("suffix", "codec", "pixel_format"),
    [(".mp4", "libx264", "yuv420p"), (".webm", "libvpx-vp9", "yuv420p"), (".avi", "mjpeg", "yuvj420p")],
)
def test_grey_levels_survive_decoding(videos_dir, suffix, codec, pixel_format):
    # Limited-range (H.264, VP9) and full-range (MJPEG) YUV both come back as the RGB levels written.
    levels = 8 * np.arange(32)
    frames = np.stack([grey_frame(level, 48, 64) for level in levels])
    path = write_video(videos_dir / f"grey_{codec}{suffix}", frames=frames, codec=codec, pixel_format=pixel_format)
    decoded, _ = load_video(path)
    assert np.abs(decoded.astype(int) - levels[:, None, None, None]).max() <= 2


def test_multi_view_indices_keep_their_shape(clip_mp4):
    indices = np.array([[0, 10, 20], [5, 15, 59]])
    frames, _ = load_video(clip_mp4, indices)
    assert frames.shape == (2, 3, 48, 64, 3)
    assert read_indices(frames) == indices.ravel().tolist()


def test_no_indices_decodes_every_frame_and_counts_them_exactly(container_videos):
    frames, metadata = load_video(container_videos[".webm"])
    assert read_indices(frames) == list(range(30))
    assert metadata.total_num_frames == 30 and not metadata.frame_count_is_estimate


def test_a_callable_plan_sees_the_metadata(clip_mp4):
    seen = []

    def plan(metadata):
        seen.append(metadata.total_num_frames)
        return segment_indices(metadata.total_num_frames, 8)

    frames, _ = load_video(clip_mp4, plan)
    assert seen == [60]
    assert read_indices(frames) == segment_indices(60, 8).tolist()


def test_odd_frame_size(videos_dir):
    path = write_video(videos_dir / "odd.mkv", 5, width=70, height=50)
    frames, metadata = load_video(path, [4, 0])
    assert frames.shape == (2, 50, 70, 3) and (metadata.width, metadata.height) == (70, 50)
    assert read_indices(frames) == [4, 0]


def test_one_frame_video(videos_dir):
    path = write_video(videos_dir / "one.mp4", 1)
    frames, metadata = load_video(path, lambda metadata: segment_indices(metadata.total_num_frames, 8))
    assert metadata.total_num_frames == 1
    assert read_indices(frames) == [0] * 8


def test_three_frame_video_repeats_frames_for_an_eight_frame_clip(videos_dir):
    path = write_video(videos_dir / "three.avi", 3)
    frames, _ = load_video(path, lambda metadata: segment_indices(metadata.total_num_frames, 8))
    assert read_indices(frames) == [0, 0, 0, 1, 1, 1, 2, 2]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_an_audio_track_does_not_disturb_video_frames(videos_dir, suffix):
    path = write_video(videos_dir / f"with_audio{suffix}", 30, audio=True)
    with av.open(str(path)) as container:
        assert {stream.type for stream in container.streams} == {"video", "audio"}
    frames, metadata = load_video(path, [0, 11, 29])
    assert read_indices(frames) == [0, 11, 29]
    assert metadata.fps == 25.0


def test_variable_frame_rate_gives_the_frame_on_screen_at_each_slot(videos_dir):
    times_ms = np.array([0, 40, 80, 200, 240, 400, 440, 480, 520, 600])
    path = write_video(videos_dir / "vfr.mp4", len(times_ms), frame_times_ms=times_ms.tolist())
    metadata = read_video_metadata(path)
    slots = np.arange(metadata.total_num_frames)
    # Slot i is time i / fps; the frame on screen then is the last one shown by then (half a slot of tolerance).
    expected = np.searchsorted(times_ms, (slots + 0.5) / metadata.fps * 1000, side="right") - 1
    for seek in (True, False):
        frames, _ = load_video(path, slots, seek=seek)
        assert read_indices(frames) == expected.tolist()
    every_frame, _ = load_video(path)
    assert read_indices(every_frame) == list(range(len(times_ms)))


# ---------------------------------------------------------------- rotation
@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_display_matrix_rotation_is_applied(videos_dir, rotation):
    path = write_video(videos_dir / f"rotated{rotation}.mp4", 10, width=64, height=48, rotation=rotation)
    with av.open(str(path)) as container:  # the stored frames really are sideways / upside down
        stored = next(container.decode(video=0)).to_ndarray(format="rgb24")
    assert stored.shape[:2] == ((64, 48) if rotation in (90, 270) else (48, 64))
    frames, metadata = load_video(path, [1, 8])
    assert metadata.rotation == rotation and (metadata.width, metadata.height) == (64, 48)
    assert frames.shape == (2, 48, 64, 3)
    assert read_indices(frames) == [1, 8]


def test_legacy_rotate_tag_is_applied(videos_dir):
    path = write_video(videos_dir / "rotate_tag.mkv", 10, rotate_tag=90)  # clockwise 90 = counter-clockwise 270
    frames, metadata = load_video(path, [3])
    assert metadata.rotation == 270
    assert frames.shape == (1, 48, 64, 3) and read_index(frames[0]) == 3


# ---------------------------------------------------------------- seeking
def test_sparse_plan_on_a_long_video_seeks_instead_of_decoding_everything(long_mp4, counting_open):
    indices = segment_indices(600, 8)
    frames, metadata = load_video(long_mp4, indices)
    assert read_indices(frames) == indices.tolist()
    container = counting_open[-1]
    # Keyframes every 25 frames: each wanted frame costs at most its GOP, plus one frame of look-ahead.
    assert container.seeks >= 7
    assert container.packets <= 8 * 26 and metadata.num_decoded_frames <= 8 * 26


def test_without_seeking_every_frame_up_to_the_last_wanted_one_is_decoded(long_mp4, counting_open):
    frames, metadata = load_video(long_mp4, segment_indices(600, 8), seek=False)
    assert read_indices(frames) == segment_indices(600, 8).tolist()
    assert counting_open[-1].seeks == 0
    assert metadata.num_decoded_frames >= segment_indices(600, 8)[-1]


def test_dense_plan_decodes_forward_after_one_seek(long_mp4, counting_open):
    frames, metadata = load_video(long_mp4, np.arange(310, 318))
    assert read_indices(frames) == list(range(310, 318))
    assert counting_open[-1].seeks == 1
    assert metadata.num_decoded_frames <= 25


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".webm"])
def test_seeking_lands_on_exact_frames_around_keyframes(videos_dir, suffix):
    # Frames just before a keyframe are the ones B-frame reordering gets wrong when a seek lands late.
    path = write_video(videos_dir / f"gop25{suffix}", 300, gop_size=25)
    indices = np.array([1, 23, 24, 49, 50, 98, 124, 125, 199, 224, 249, 275, 299])
    frames, _ = load_video(path, indices)
    assert read_indices(frames) == indices.tolist()
    rng = np.random.default_rng(0)
    for _ in range(5):
        indices = np.sort(rng.choice(300, size=8, replace=False))
        frames, _ = load_video(path, indices)
        assert read_indices(frames) == indices.tolist()


# ---------------------------------------------------------------- damaged input
def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match=r"missing\.mp4: no such file"):
        load_video(tmp_path / "missing.mp4", [0])


def test_directory(tmp_path):
    (tmp_path / "folder.mp4").mkdir()
    with pytest.raises(VideoDecodeError, match=r"folder\.mp4: not a regular file"):
        read_video_metadata(tmp_path / "folder.mp4")


def test_empty_file(tmp_path):
    (tmp_path / "empty.mp4").touch()
    with pytest.raises(VideoDecodeError, match=r"empty\.mp4: empty file"):
        load_video(tmp_path / "empty.mp4", [0])


def test_random_bytes(tmp_path):
    path = write_random_bytes(tmp_path / "noise.mp4")
    with pytest.raises(VideoDecodeError, match=r"noise\.mp4: not a readable video container"):
        load_video(path, [0])


def test_truncated_mp4_without_its_index(clip_mp4, tmp_path):
    path = truncate_copy(clip_mp4, tmp_path / "cut.mp4", 0.5)  # the moov atom is at the end: gone
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4: not a readable video container"):
        load_video(path, [0])


def test_truncated_mp4_with_its_index_first_serves_what_remains_and_warns(videos_dir, tmp_path):
    source = write_video(videos_dir / "faststart.mp4", 60, noise=40, container_options={"movflags": "faststart"})
    path = truncate_copy(source, tmp_path / "cut_faststart.mp4", 0.6)
    with pytest.warns(UserWarning, match=r"cut_faststart\.mp4: the stream ends at frame (\d+) but frame 59"):
        frames, metadata = load_video(path, [5, 59])
    assert metadata.total_num_frames == 60  # what the header claims
    assert read_index(frames[0]) == 5
    assert 10 < read_index(frames[1]) < 59  # the last frame that survived


def test_audio_only_file(tmp_path):
    path = write_audio_only(tmp_path / "song.m4a")
    with pytest.raises(VideoDecodeError, match=r"song\.m4a: no video stream \(streams found: audio\)"):
        load_video(path, [0])


def test_codec_without_a_decoder(videos_dir, tmp_path):
    source = write_video(videos_dir / "mpeg4.avi", 10)
    path = replace_codec_tag(source, tmp_path / "unknown_codec.avi", b"FMP4", b"QQ9Z")
    with pytest.raises(VideoDecodeError, match=r"unknown_codec\.avi: no decoder for the video codec"):
        load_video(path, [0])


def test_a_corrupt_frame_in_the_middle_is_replaced_by_a_neighbour_with_a_warning(tmp_path):
    path = write_mjpeg_with_corrupt_frames(tmp_path / "glitch.avi", 20, [10])
    for seek in (True, False):
        with pytest.warns(UserWarning, match=r"glitch\.avi: skipped 1 undecodable packet"):
            frames, _ = load_video(path, [9, 10, 11], seek=seek)
        got = read_indices(frames)
        assert got[0] == 9 and got[1] in (9, 11) and got[2] == 11


def test_no_decodable_frame_is_an_error_not_a_black_clip(tmp_path):
    path = write_mjpeg_with_corrupt_frames(tmp_path / "all_bad.avi", 5, [0, 1, 2, 3, 4])
    with pytest.raises(VideoDecodeError, match=r"all_bad\.avi: no decodable video frames"):
        load_video(path, [0])


def test_container_opening_has_a_timeout(clip_mp4, monkeypatch):
    timeouts = []
    real_open = av.open

    def spy_open(*args, **kwargs):
        timeouts.append(kwargs.get("timeout"))
        return real_open(*args, **kwargs)

    monkeypatch.setattr(video_io.av, "open", spy_open)
    load_video(clip_mp4, [0], timeout=7.5)
    read_video_metadata(clip_mp4)
    assert timeouts == [7.5, video_io.DEFAULT_TIMEOUT]


def test_a_read_timeout_becomes_a_decode_error(clip_mp4, monkeypatch):
    def timed_out(*args, **kwargs):
        raise av.error.ExitError(-1414092869, "Immediate exit requested")

    monkeypatch.setattr(video_io.av, "open", timed_out)
    with pytest.raises(VideoDecodeError, match=r"clip\.mp4: timed out after 30\.0 s while opening"):
        load_video(clip_mp4, [0])


def test_decode_errors_survive_pickling_for_dataloader_workers():
    error = pickle.loads(pickle.dumps(VideoDecodeError("clip.mp4: no video stream")))
    assert isinstance(error, VideoDecodeError) and str(error) == "clip.mp4: no video stream"


# ---------------------------------------------------------------- index validation
@pytest.mark.parametrize(
    ("indices", "message"),
    [
        ([0, 60], r"must lie in \[0, 59\] for this 60-frame video, got values in \[0, 60\]"),
        ([-1], r"must lie in \[0, 59\]"),
        (np.array([0.0, 1.0]), "must be integers, got dtype float64"),
        ([], "at least one frame index"),
    ],
)
def test_invalid_indices_are_rejected(clip_mp4, indices, message):
    with pytest.raises(ValueError, match=message):
        load_video(clip_mp4, indices)


# ---------------------------------------------------------------- every input form
@pytest.mark.parametrize("form", INPUT_FORMS)
def test_every_input_form_gives_the_files_frames(clip_mp4, form):
    expected, expected_metadata = load_video(clip_mp4, [0, 17, 59, 17])
    frames, metadata = load_video(video_in_form(clip_mp4, form), [0, 17, 59, 17])
    assert read_indices(frames) == [0, 17, 59, 17] and np.array_equal(frames, expected)
    assert read_video_metadata(video_in_form(clip_mp4, form)).total_num_frames == 60
    assert (metadata.total_num_frames, metadata.fps) == (expected_metadata.total_num_frames, expected_metadata.fps)


def test_a_file_object_is_read_from_its_start_and_left_where_it_was(clip_mp4):
    with clip_mp4.open("rb") as file:
        file.seek(123)
        frames, _ = load_video(file, [5])
        assert file.tell() == 123 and read_index(frames[0]) == 5
        frames, _ = load_video(file, [6])  # again, as in a second epoch
        assert read_index(frames[0]) == 6


def test_the_bytes_of_a_datasets_dict_win_over_its_path(clip_mp4, tmp_path):
    other = write_video(tmp_path / "other.mp4", 60, frames=np.stack([index_frame(59 - i, 48, 64) for i in range(60)]))
    frames, _ = load_video({"path": str(other), "bytes": clip_mp4.read_bytes()}, [3])
    assert read_index(frames[0]) == 3
    with pytest.raises(VideoDecodeError, match=r"^other\.mp4: not a readable video container"):
        load_video({"path": "other.mp4", "bytes": b"not a video"}, [0])


def test_decoding_from_memory_writes_no_file_and_still_seeks(long_mp4, counting_open, monkeypatch):
    def no_files(*args, **kwargs):
        raise AssertionError("a temporary file was made")

    for name in ("TemporaryDirectory", "NamedTemporaryFile", "mkstemp", "mkdtemp"):
        monkeypatch.setattr(video_io.tempfile, name, no_files)
    indices = segment_indices(600, 8)
    frames, metadata = load_video(long_mp4.read_bytes(), indices)
    assert read_indices(frames) == indices.tolist()
    assert counting_open[-1].seeks >= 7 and metadata.num_decoded_frames <= 8 * 26


def test_a_torchcodec_decoder_is_read_through_get_frames_at(clip_mp4):
    every_frame, _ = load_video(clip_mp4)
    decoder = FakeFrameDecoder(every_frame, fps=25.0)
    frames, metadata = load_video(decoder, lambda metadata: segment_indices(metadata.total_num_frames, 8))
    assert np.array_equal(frames, every_frame[segment_indices(60, 8)])
    assert decoder.requests == [segment_indices(60, 8).tolist()]  # once, only the wanted frames
    assert (metadata.total_num_frames, metadata.fps, metadata.video_backend) == (60, 25.0, "torchcodec")
    assert read_video_metadata(decoder).total_num_frames == 60
    decoder.frames = decoder.frames.transpose(0, 2, 3, 1)  # dimension_order="NHWC"
    assert np.array_equal(load_video(decoder, [7, 3])[0], every_frame[[7, 3]])


@pytest.mark.parametrize("form", ["str", "bytes", "open file"])
def test_streaming_yields_the_frames_load_video_returns_once_each_in_order(long_mp4, counting_open, form):
    wanted = [590, 3, 3, 77, 300, 301]
    frames = list(video_io.iter_video_frames(video_in_form(long_mp4, form), wanted))
    assert [frame.index for frame in frames] == [3, 77, 300, 301, 590]
    assert [frame.time for frame in frames] == [0.12, 3.08, 12.0, 12.04, 23.6]
    assert counting_open[-1].seeks >= 3  # far-away frames are reached by seeking, as in load_video
    assert [read_index(frame.image) for frame in frames] == [3, 77, 300, 301, 590]
    expected, _ = load_video(long_mp4, sorted(set(wanted)))
    np.testing.assert_array_equal(np.stack([frame.image for frame in frames]), expected)


def test_streaming_a_raw_stream_counts_it_first_then_reads_it_again(tmp_path):
    raw = write_raw_h264(tmp_path / "raw.h264", 40)
    frames = list(video_io.iter_video_frames(raw, lambda metadata: np.arange(0, metadata.total_num_frames, 13)))
    assert [(frame.index, read_index(frame.image)) for frame in frames] == [(0, 0), (13, 13), (26, 26), (39, 39)]


def test_streaming_from_a_torchcodec_decoder_asks_for_a_few_frames_at_a_time(clip_mp4):
    every_frame, _ = load_video(clip_mp4)
    decoder = FakeFrameDecoder(every_frame, fps=25.0)
    frames = list(video_io.iter_video_frames(decoder))
    assert [frame.index for frame in frames] == list(range(60))
    np.testing.assert_array_equal(np.stack([frame.image for frame in frames]), every_frame)
    assert [len(request) for request in decoder.requests] == [16, 16, 16, 12]


def test_streaming_time_limit_counts_decoding_not_the_callers_work(long_mp4):
    frames = video_io.iter_video_frames(long_mp4, [0, 100, 200], total_timeout=0.5)
    for frame in frames:
        time.sleep(0.3)  # 0.9 s in all, over total_timeout, spent by the caller
    assert frame.index == 200


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"", r"^<0 bytes>: empty input \(0 bytes\)"),
        ({"path": None, "bytes": None}, r"without path or bytes"),
        (42, r"^<int>: expected a path, URL, bytes, binary file object, `datasets` video dict or torchcodec"),
    ],
)
def test_inputs_that_are_no_video_are_named(source, message):
    with pytest.raises(VideoDecodeError, match=message):
        load_video(source, [0])


# ---------------------------------------------------------------- hostile inputs
@pytest.mark.parametrize("tag", ["nan", "inf", "-inf", "1e400", "ninety"])
def test_a_rotation_tag_that_is_no_finite_number_is_ignored(tmp_path, tag):
    path = write_video(tmp_path / "rotate.mkv", 10, stream_tags={"rotate": tag})
    frames, metadata = load_video(path, [0, 9])
    assert metadata.rotation == 0 and read_indices(frames) == [0, 9]


@pytest.mark.parametrize(
    "failure",
    [
        RuntimeError("boom"),
        OverflowError("cannot convert float infinity to integer"),
        MemoryError(),
        av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory"),
        OSError(errno.EIO, "Input/output error"),
        KeyError("side_data"),
    ],
    ids=lambda failure: type(failure).__name__,
)
@pytest.mark.parametrize("target", ["av.open", "_to_upright_rgb"])
def test_whatever_fails_while_reading_is_a_decode_error_naming_the_input(clip_mp4, monkeypatch, failure, target):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(video_io.av if target == "av.open" else video_io, target.removeprefix("av."), fail)
    with pytest.raises(VideoDecodeError, match=rf"^{re.escape(str(clip_mp4))}: ") as raised:
        load_video(clip_mp4, [0])
    assert raised.value.__cause__ is failure


def test_a_raw_h264_stream_is_counted_then_read(tmp_path):
    path = write_raw_h264(tmp_path / "raw.h264", 40)
    metadata = read_video_metadata(path)
    assert (metadata.total_num_frames, metadata.frame_count_is_estimate) == (40, False)
    frames, metadata = load_video(path, lambda metadata: segment_indices(metadata.total_num_frames, 8))
    assert read_indices(frames) == segment_indices(40, 8).tolist()
    assert metadata.num_decoded_frames <= 40 + 40  # one pass to count, one up to the last wanted frame


def test_counting_a_raw_stream_keeps_one_frame_at_a_time(tmp_path):
    # 200 decoded 1280x720 frames take 276 MB when kept; counting keeps about one (a few with frame threads).
    path = write_repeated_h264_frame(tmp_path / "raw.h264", 200, width=1280, height=720)
    small = write_raw_h264(tmp_path / "small.h264", 5)
    script = """import sys
from ila_hf.video_io import load_video, read_video_metadata
load_video(sys.argv[2], [0, 4])
MEASURE_FROM_HERE
assert read_video_metadata(sys.argv[1]).total_num_frames == 200
frames, _ = load_video(sys.argv[1], [0, 199])
assert frames.shape == (2, 720, 1280, 3)
"""
    assert peak_rss_growth_mb(script, str(path), str(small)) < 100


def test_every_frame_is_checked_against_max_frame_pixels(tmp_path):
    # MJPEG frames carry their own size: 64x64, then 1000x1000 from the fourth frame on.
    jpegs = [jpeg_bytes(index_frame(i, 64, 64)) for i in range(3)] + [jpeg_bytes(index_frame(3, 1000, 1000))]
    path = write_mjpeg_packets(tmp_path / "growing.mkv", jpegs)
    frames, _ = load_video(path, [0, 1], max_frame_pixels=64 * 64 * 4)  # (frame 2 is looked ahead at)
    assert read_indices(frames) == [0, 1]
    for plan in (None, [0, 3]):
        with pytest.raises(VideoDecodeError, match=r"growing\.mkv: .*over the limit of 16384 pixels, max_frame_pixels"):
            load_video(path, plan, seek=False, max_frame_pixels=64 * 64 * 4)


class FifoWatcher:
    """Tells whether anyone opens a named pipe for reading: a thread keeps trying to open its writing end (which
    succeeds only while a reader has it open), then closes it at once, so the reader sees an empty file."""

    def __init__(self, path):
        os.mkfifo(path)
        self.path = path
        self.opened = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch)
        self._thread.start()

    def _watch(self):
        while not self._stop.is_set():
            try:
                descriptor = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                assert error.errno == errno.ENXIO, error  # no reader yet
                time.sleep(0.002)
                continue
            self.opened = True
            os.close(descriptor)

    def stop(self) -> bool:
        time.sleep(0.05)  # a reader that opened just before `stop` is still seen
        self._stop.set()
        self._thread.join(timeout=5)
        return self.opened


PLAYLISTS = {
    "list.m3u8": "#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{marker}\n#EXT-X-ENDLIST\n",
    "list.ffconcat": "ffconcat version 1.0\nfile {marker_name}\n",  # relative: FFmpeg's "safe" mode allows it
}


@pytest.mark.parametrize("name", sorted(PLAYLISTS))
@pytest.mark.parametrize("form", ["path", "bytes"])
def test_a_playlist_cannot_make_ffmpeg_open_another_file(tmp_path, monkeypatch, name, form):
    monkeypatch.chdir(tmp_path)  # where relative names in in-memory input would resolve
    marker = tmp_path / "secret.ts"
    playlist = tmp_path / name
    playlist.write_text(PLAYLISTS[name].format(marker=marker, marker_name=marker.name))
    # The check works: FFmpeg on its own follows the playlist to the marker.
    watcher = FifoWatcher(marker)
    with contextlib.suppress(av.error.FFmpegError):
        av.open(str(playlist), timeout=5).close()
    assert watcher.stop(), "control: plain FFmpeg should have opened the marker"
    marker.unlink()
    watcher = FifoWatcher(marker)
    source = playlist if form == "path" else playlist.read_bytes()
    try:
        # (FFmpeg recognises a playlist in memory as none: no .m3u8 name; on disk it is refused as a playlist.)
        with pytest.raises(VideoDecodeError, match=rf"^{re.escape(video_io.video_name(source))}: not a readable video"):
            load_video(source, [0])
    finally:
        assert not watcher.stop(), "the marker file was opened"


# ---------------------------------------------------------------- URLs
class VideoServer(http.server.ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 with hostile routes; every response ends on its own (bounded length and time) or
    when the client goes away, and `stop` ends them all."""

    daemon_threads = True

    def __init__(self, video: bytes):
        super().__init__(("127.0.0.1", 0), VideoRequestHandler)
        self.video = video
        self.stopping = threading.Event()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class VideoRequestHandler(http.server.BaseHTTPRequestHandler):
    """/video/<name>: the video with its Content-Length; /slow: one byte every 0.5 s (at most 60); /endless: 64 KiB
    chunks without a length (at most 256 MiB); /huge: announces 10**12 bytes; anything else: 404."""

    def log_message(self, *args):
        pass

    def _send(self, chunks, length: int | None = None) -> None:
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up: that is the point of these routes
            for chunk in chunks:
                if self.server.stopping.is_set():
                    return
                self.wfile.write(chunk)
                self.wfile.flush()

    def do_GET(self):
        if self.path.startswith("/video/"):
            self._send([self.server.video], len(self.server.video))
        elif self.path == "/slow":
            self._send(time.sleep(0.5) or b"\0" for _ in range(60))
        elif self.path == "/endless":
            self._send(itertools.repeat(bytes(1 << 16), 4096))
        elif self.path == "/huge":
            self._send([bytes(1024)], 10**12)
        else:
            self.send_error(404)


@pytest.fixture
def video_server(clip_mp4):
    server = VideoServer(clip_mp4.read_bytes())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.stopping.set()
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_url_is_downloaded_to_a_temporary_file_then_removed(video_server, monkeypatch):
    opened_paths = []
    real_open = av.open

    def spy_open(path, **kwargs):
        opened_paths.append(path)
        return real_open(path, **kwargs)

    monkeypatch.setattr(video_io.av, "open", spy_open)
    frames, metadata = load_video(video_server.url("/video/clip.mp4?sig=abc"), [3, 40])
    assert read_indices(frames) == [3, 40] and metadata.total_num_frames == 60
    assert opened_paths[0].endswith("video.mp4") and not os.path.exists(opened_paths[0])


def test_a_url_with_a_300_character_file_name_downloads(video_server):
    frames, _ = load_video(video_server.url("/video/" + "x" * 10 + "." + "y" * 290), [7])
    assert read_indices(frames) == [7]


def test_failed_download_names_the_url(video_server):
    url = video_server.url("/gone.mp4")
    with pytest.raises(VideoDecodeError, match=rf"{re.escape(url)}: download failed"):
        load_video(url, [0])


def test_a_server_trickling_bytes_is_stopped_by_the_total_timeout(video_server):
    url = video_server.url("/slow")  # a byte every 0.5 s never trips the 2 s read timeout
    started = time.monotonic()
    with pytest.raises(VideoDecodeError, match=rf"{re.escape(url)}: gave up after 1\.5 s \(total_timeout\) while down"):
        load_video(url, [0], timeout=2, total_timeout=1.5)
    assert time.monotonic() - started < 4


def test_an_endless_download_stops_at_max_download_bytes(video_server, tmp_path, monkeypatch):
    monkeypatch.setattr(video_io.tempfile, "tempdir", str(tmp_path))
    url = video_server.url("/endless")
    with pytest.raises(VideoDecodeError, match=rf"{re.escape(url)}: download exceeds max_download_bytes=1000000"):
        read_video_metadata(url, max_download_bytes=10**6)
    assert list(tmp_path.iterdir()) == []  # the partial download is removed


def test_an_announced_size_over_the_cap_is_refused_before_reading(video_server):
    url = video_server.url("/huge")
    with pytest.raises(VideoDecodeError, match=r"announces 1000000000000 bytes, over max_download_bytes=2147483648"):
        load_video(url, [0])


def test_an_os_error_while_downloading_is_a_decode_error(video_server, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video_io.tempfile, "TemporaryDirectory", no_space)
    url = video_server.url("/video/clip.mp4")
    with pytest.raises(VideoDecodeError, match=rf"{re.escape(url)}: cannot be read \(OSError: .*No space left"):
        load_video(url, [0])


def test_decoding_is_quiet_on_good_files(container_videos):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in container_videos.values():
            load_video(path, [0, 29])
