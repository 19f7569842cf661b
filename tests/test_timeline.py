"""Timelines of long videos: sliding windows, one decoding pass, segments, picture, CLI, bounded memory."""

import json
import types
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

from ila_hf import ILAForVideoClassification, ILAVideoProcessor, load_video
from ila_hf import timeline as timeline_module
from ila_hf.cli import main
from ila_hf.inference import view_probabilities
from ila_hf.sampling import sliding_window_indices
from ila_hf.timeline import iter_timeline, predict_timeline
from ila_hf.video_io import iter_video_frames

from .helpers import tiny_ila_config
from .videos import grey_frame, write_random_bytes, write_video


FPS = 10
DARK, BRIGHT = 40, 215
# The scene changes from dark to bright at 7.3 s and back to dark at 15.6 s (frame 73 and frame 156 at 10 fps).
CHANGES = (7.3, 15.6)


class BrightnessModel(torch.nn.Module):
    """A stub classifier whose scores are a known function of the frames: "bright" by the clip's mean pixel value."""

    def __init__(self, num_frames: int = 4):
        super().__init__()
        self.config = types.SimpleNamespace(num_frames=num_frames, id2label={0: "dark", 1: "bright"}, num_labels=2)
        self.scale = torch.nn.Parameter(torch.tensor(5.0))

    @property
    def device(self) -> torch.device:
        return self.scale.device

    @property
    def dtype(self) -> torch.dtype:
        return self.scale.dtype

    def forward(self, pixel_values: torch.Tensor):
        brightness = pixel_values.mean(dim=(1, 2, 3, 4))  # (B,): > 0 when most sampled frames are bright
        return types.SimpleNamespace(logits=torch.stack([-brightness, brightness], dim=-1) * self.scale)


def scene_frames(seconds: float, changes=CHANGES, size=(24, 32)) -> np.ndarray:
    """(N, H, W, 3) frames at `FPS`: dark, then bright between the two change times, then dark."""
    times = np.arange(round(seconds * FPS)) / FPS
    bright = (times >= changes[0] - 1e-9) & (times < changes[1] - 1e-9)
    return np.stack([grey_frame(BRIGHT if is_bright else DARK, *size) for is_bright in bright])


@pytest.fixture(scope="module")
def scene_mp4(tmp_path_factory):
    """20 s at 10 fps, 32x24: dark, bright from 7.3 s, dark again from 15.6 s."""
    return write_video(tmp_path_factory.mktemp("timeline") / "scene.mp4", frames=scene_frames(20.0), fps=FPS)


@pytest.fixture(scope="module")
def processor():
    return ILAVideoProcessor(num_frames=4, crop_size={"height": 16, "width": 16})


def test_segment_boundaries_fall_within_one_stride_of_the_true_changes(scene_mp4, processor):
    timeline = predict_timeline(BrightnessModel(), processor, scene_mp4, window=2.0, stride=1.0, batch_size=3)

    segments = timeline.segments()
    assert [segment.label for segment in segments] == ["dark", "bright", "dark"]
    assert segments[0].start == 0.0 and segments[-1].end == pytest.approx(20.0)
    for before, after, change in zip(segments[:-1], segments[1:], CHANGES):
        assert before.end == after.start
        assert abs(after.start - change) <= 1.0
    assert sum(segment.num_windows for segment in segments) == len(timeline.windows) == 19
    assert timeline.video == str(scene_mp4)


def test_each_window_is_the_clip_load_video_would_decode_for_it(scene_mp4, processor):
    """The single streaming pass gives every window exactly the probabilities of decoding that window on its own."""
    torch.manual_seed(0)
    config = tiny_ila_config(id2label={0: "dark", 1: "bright", 2: "other"})
    model = ILAForVideoClassification(config).eval()
    processor = ILAVideoProcessor(num_frames=4, crop_size={"height": 64, "width": 64})

    windows = list(iter_timeline(model, processor, scene_mp4, window=3.0, stride=2.5, top_k=2, batch_size=4))

    bounds, indices = sliding_window_indices(200, 4, window_length=30, stride=25.0)
    assert [(window.start, window.end) for window in windows] == [(first / FPS, end / FPS) for first, end in bounds]
    assert windows[-1].end == 20.0 and windows[-2].end < 20.0  # the last window is moved to end with the video
    clips = [load_video(scene_mp4, clip)[0] for clip in indices]
    expected = torch.cat(
        [
            view_probabilities(model, processor(clip, do_sample_frames=False, return_tensors="pt").pixel_values)
            for clip in clips
        ]
    )
    torch.testing.assert_close(torch.from_numpy(np.stack([w.probabilities for w in windows])), expected)
    top = expected.topk(2)
    assert [window.labels for window in windows] == [[config.id2label[i] for i in row] for row in top.indices.tolist()]
    np.testing.assert_allclose([window.scores for window in windows], top.values.numpy(), atol=1e-6)
    assert windows[0].to_dict() == {
        "start": 0.0,
        "end": 3.0,
        "predictions": [{"label": label, "score": score} for label, score in zip(windows[0].labels, windows[0].scores)],
    }


def test_the_text_head_names_classes_by_id2label(scene_mp4):
    torch.manual_seed(0)
    labels = {0: "dark room", 1: "bright room"}
    model = ILAForVideoClassification(
        tiny_ila_config(head="text", id2label=labels)
    ).eval()
    with torch.no_grad():
        model.head.class_embeddings.normal_()  # stands in for embedded class names (all-zero ones are refused)
    processor = ILAVideoProcessor(num_frames=4, crop_size={"height": 64, "width": 64})
    timeline = predict_timeline(model, processor, scene_mp4.read_bytes(), window=5.0, stride=5.0, top_k=5)
    assert [window.start for window in timeline.windows] == [0.0, 5.0, 10.0, 15.0]
    assert all(sorted(window.labels) == ["bright room", "dark room"] for window in timeline.windows)
    assert timeline.video == f"<{scene_mp4.stat().st_size} bytes>"
    assert timeline.probabilities.sum(axis=1) == pytest.approx(np.ones(4), abs=1e-5)


def test_a_video_shorter_than_the_window_is_one_window(tmp_path, processor):
    short = write_video(tmp_path / "short.mp4", frames=scene_frames(1.5, changes=(0.0, 9.0)), fps=FPS)
    timeline = predict_timeline(BrightnessModel(), processor, short, window=2.0, stride=1.0)
    assert [(window.start, window.end, window.labels[0]) for window in timeline.windows] == [(0.0, 1.5, "bright")]
    assert [(segment.start, segment.end) for segment in timeline.segments()] == [(0.0, 1.5)]


def test_window_and_stride_must_be_positive_seconds(scene_mp4, processor):
    with pytest.raises(ValueError, match=r"`stride` must be a positive number of seconds, got 0"):
        next(iter_timeline(BrightnessModel(), processor, scene_mp4, stride=0))
    with pytest.raises(ValueError, match=r"`window` must be a positive number of seconds, got nan"):
        next(iter_timeline(BrightnessModel(), processor, scene_mp4, window=float("nan")))


def test_the_picture_has_the_requested_width_and_a_height_independent_of_the_video_length(
    scene_mp4, processor, tmp_path
):
    longer = write_video(tmp_path / "longer.mp4", frames=scene_frames(40.0, changes=(3.0, 30.0)), fps=FPS)
    pictures = []
    for video in (scene_mp4, longer):
        path = tmp_path / f"{video.stem}.png"
        predict_timeline(BrightnessModel(), processor, video, window=2.0, stride=1.0).save_image(path, width=640)
        with Image.open(path) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            pictures.append(np.asarray(image))
    assert pictures[0].shape == pictures[1].shape and pictures[0].shape[1] == 640
    assert 80 <= pictures[0].shape[0] <= 300
    # The heat strip changes along time: the left and the middle of the 20 s video's picture differ.
    assert not np.array_equal(pictures[0][:, 250:260], pictures[0][:, 400:410])


def test_frames_held_stay_bounded_however_long_the_video(tmp_path, processor, monkeypatch):
    """Count, at every decoded frame, the decoded frames and preprocessed frames still alive (weak references)."""
    live_decoded, live_processed, peaks = {}, weakref.WeakKeyDictionary(), []

    def watched_frames(*args, **kwargs):
        for frame in iter_video_frames(*args, **kwargs):
            key = id(frame.image)
            live_decoded[key] = weakref.ref(frame.image, lambda _, key=key: live_decoded.pop(key, None))
            peaks.append(len(live_decoded) + sum(live_processed.values()))
            yield frame

    def watched_processor(frames, **kwargs):
        output = processor(frames, **kwargs)
        live_processed[output.pixel_values] = len(frames)
        return output

    monkeypatch.setattr(timeline_module, "iter_video_frames", watched_frames)
    most_held = {}
    for seconds in (30, 120):
        video = write_video(tmp_path / f"{seconds}.mp4", frames=scene_frames(seconds, size=(8, 8)), fps=FPS)
        peaks.clear()
        windows = list(iter_timeline(BrightnessModel(), watched_processor, video, window=2.0, stride=1.0, batch_size=4))
        assert len(windows) == seconds - 1
        most_held[seconds] = max(peaks)
    # A batch of 4 windows of 2 s, 1 s apart, spans 5 s (50 frames) of which 3 in 10 are sampled: 15 frames. Keeping
    # every frame instead held 88 and 358 here.
    assert most_held[30] == most_held[120] <= 16


def test_predict_timeline_from_the_command_line(tmp_path, scene_mp4, capsys):
    folder = tmp_path / "model"
    torch.manual_seed(0)
    model = ILAForVideoClassification(tiny_ila_config(id2label={0: "a", 1: "b"}))
    model.save_pretrained(folder)
    ILAVideoProcessor(num_frames=4, crop_size={"height": 64, "width": 64}).save_pretrained(folder)
    broken = write_random_bytes(tmp_path / "broken.mp4")
    picture = tmp_path / "timeline.png"

    status = main(
        ["predict", str(scene_mp4), "--model", str(folder), "--timeline", "--window", "4", "--stride", "4",
         "--top-k", "1", "--json", "--timeline-image", str(picture)]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 0
    assert [(line["start"], line["end"]) for line in lines[:-1]] == [(start, start + 4.0) for start in (0, 4, 8, 12, 16)]
    assert all(line["video"] == str(scene_mp4) for line in lines)
    assert all(len(line["predictions"]) == 1 for line in lines[:-1])
    segments = lines[-1]["segments"]
    assert segments[0]["start"] == 0.0 and segments[-1]["end"] == 20.0
    assert sum(segment["num_windows"] for segment in segments) == 5
    assert Image.open(picture).size[0] == 1200

    status = main(["predict", str(broken), str(scene_mp4), "--model", str(folder), "--timeline", "--stride", "5"])
    captured = capsys.readouterr()
    assert status == 1
    assert f"ila-hf predict: {broken}: not a readable video container" in captured.err
    rows = [line.split("\t") for line in captured.out.splitlines()]
    assert rows[0][:2] == [str(scene_mp4), "0.00"] and rows[-1][2] == "20.00"


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--timeline", "--stride", "-1"], "argument --stride: expected a positive number of seconds, got '-1'"),
        (["--timeline", "--window", "inf"], "argument --window: expected a positive number of seconds, got 'inf'"),
        (["--timeline-image", "x.png"], "--timeline-image takes a picture of one timeline"),
    ],
)
def test_the_command_line_refuses_bad_timeline_options(arguments, message, scene_mp4, tmp_path, capsys):
    (tmp_path / "config.json").write_text("{}")  # --model is checked first: a folder that looks like a saved model
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(scene_mp4), "--model", str(tmp_path), *arguments])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
