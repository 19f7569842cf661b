"""ILAVideoProcessor: released evaluation preprocessing behind transformers' video-processor API."""

import contextlib
import io
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassFieldValidationError
from PIL import Image
from transformers import pipeline

from ila_hf import ILAForVideoClassification, video_io
from ila_hf.video_io import VideoDecodeError, VideoFileMetadata, load_video
from ila_hf.video_processing_ila import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ILAVideoProcessor

from .conftest import TINY_CLIP_VISION
from .helpers import tiny_ila_config
from .videos import INPUT_FORMS, FakeFrameDecoder, peak_rss_growth_mb, read_indices, video_in_form


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])
# Segment evaluation indices worked out by hand from seg = (n - 1) / 8 (see test_sampling.py for the method).
SEGMENT_N60_T8 = [3, 11, 18, 26, 33, 40, 48, 55]
SEGMENT_N16_T8 = [1, 3, 5, 7, 8, 10, 12, 14]
RAW = dict(do_resize=False, do_center_crop=False, do_rescale=False, do_normalize=False)


def random_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (num_frames, height, width, 3), dtype=np.uint8)


def as_frames(pixel_values: torch.Tensor) -> np.ndarray:
    """(..., 3, H, W) un-normalised pixel values -> (..., H, W, 3) uint8, for `read_indices`."""
    return pixel_values.movedim(-3, -1).round().clamp(0, 255).to(torch.uint8).numpy()


# ---------------------------------------------------------------- configuration
def test_defaults_are_the_released_evaluation():
    processor = ILAVideoProcessor()
    assert (processor.num_frames, processor.sampling, processor.num_clips, processor.num_crops) == (8, "segment", 1, 1)
    assert processor.size.shortest_edge == 256 and (processor.crop_size.height, processor.crop_size.width) == (224, 224)
    np.testing.assert_allclose(processor.image_mean, IMAGENET_MEAN)
    np.testing.assert_allclose(processor.image_std, IMAGENET_STD)
    # The released statistics are given on 0-255 pixels.
    np.testing.assert_allclose(np.array(processor.image_mean) * 255, [123.675, 116.28, 103.53])
    np.testing.assert_allclose(np.array(processor.image_std) * 255, [58.395, 57.12, 57.375])
    assert processor.rescale_factor == 1 / 255 and processor.do_sample_frames
    assert processor.model_input_names == ["pixel_values"]


@pytest.mark.parametrize(("crop_size", "short_side"), [(224, 256), (336, 384), ({"height": 64, "width": 64}, 73)])
def test_crop_size_alone_sets_the_short_side_to_256_over_224_of_it(crop_size, short_side):
    assert ILAVideoProcessor(crop_size=crop_size).size.shortest_edge == short_side


def test_an_explicit_size_is_kept():
    assert ILAVideoProcessor(crop_size=224, size={"shortest_edge": 224}).size.shortest_edge == 224


def test_clip_statistics_are_available_as_an_option():
    processor = ILAVideoProcessor(image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD)
    np.testing.assert_allclose(processor.image_mean, [0.48145466, 0.4578275, 0.40821073])


# ---------------------------------------------------------------- the pipeline's call
def test_the_pipeline_call_on_a_path(clip_mp4):
    # Exactly what VideoClassificationPipeline.preprocess does in transformers 5.
    batch = ILAVideoProcessor()(str(clip_mp4), num_frames=8, do_sample_frames=True, return_tensors="pt")
    assert list(batch.keys()) == ["pixel_values"]
    assert batch["pixel_values"].shape == (1, 8, 3, 224, 224) and batch["pixel_values"].dtype == torch.float32


def test_a_path_is_sampled_with_the_released_segment_rule(clip_mp4):
    batch = ILAVideoProcessor(**RAW)(str(clip_mp4), return_tensors="pt", return_metadata=True)
    assert read_indices(as_frames(batch["pixel_values"][0])) == SEGMENT_N60_T8
    metadata = batch["video_metadata"][0]
    assert isinstance(metadata, VideoFileMetadata) and metadata.frames_indices.tolist() == SEGMENT_N60_T8


def test_a_path_and_its_decoded_frames_give_the_same_pixel_values(clip_mp4):
    processor = ILAVideoProcessor(crop_size=32)
    every_frame, _ = load_video(clip_mp4)
    from_path = processor(str(clip_mp4), return_tensors="pt")["pixel_values"]
    from_array = processor(every_frame, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(from_path, from_array, rtol=0, atol=0)


# ---------------------------------------------------------------- pixels
def test_normalisation_against_a_manual_computation():
    colours = np.stack([[10 * t, 255 - 10 * t, 7 * t] for t in range(16)]).astype(np.uint8)
    video = np.broadcast_to(colours[:, None, None, :], (16, 300, 400, 3)).copy()  # one flat colour per frame
    pixel_values = ILAVideoProcessor()(video, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 8, 3, 224, 224)
    expected = (colours[SEGMENT_N16_T8] / 255 - IMAGENET_MEAN) / IMAGENET_STD  # (8, 3)
    expected = torch.from_numpy(expected).float()[:, :, None, None].expand(8, 3, 224, 224)
    torch.testing.assert_close(pixel_values[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("height", "width", "rows", "columns"), [(256, 320, (16, 240), (48, 272)), (300, 256, (38, 262), (16, 240))]
)
def test_centre_crop_of_a_frame_whose_short_side_is_already_256(height, width, rows, columns):
    frames = random_frames(16, height, width)
    processor = ILAVideoProcessor(do_rescale=False, do_normalize=False)
    pixel_values = processor(frames, return_tensors="pt")["pixel_values"][0]
    expected = frames[SEGMENT_N16_T8, rows[0] : rows[1], columns[0] : columns[1]]
    assert torch.equal(pixel_values, torch.from_numpy(expected).permute(0, 3, 1, 2).float())


def test_small_frames_are_upscaled_to_the_short_side_then_cropped():
    pixel_values = ILAVideoProcessor()(random_frames(8, 48, 64), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 8, 3, 224, 224)


def test_every_input_kind_gives_the_same_result():
    frames = random_frames(12, 40, 56)
    processor = ILAVideoProcessor(crop_size=32)
    reference = processor(frames, return_tensors="pt")["pixel_values"]
    for video in (
        torch.from_numpy(frames).permute(0, 3, 1, 2),  # (T, 3, H, W) tensor
        torch.from_numpy(frames),  # (T, H, W, 3) tensor
        [Image.fromarray(frame) for frame in frames],  # list of PIL images
        [frames],  # a batch of one
    ):
        torch.testing.assert_close(processor(video, return_tensors="pt")["pixel_values"], reference, rtol=0, atol=0)


@pytest.mark.parametrize("form", INPUT_FORMS)
def test_every_encoded_input_form_gives_the_files_pixel_values(clip_mp4, form):
    processor = ILAVideoProcessor(crop_size=32)
    reference = processor(str(clip_mp4), return_tensors="pt")["pixel_values"]
    single = processor(video_in_form(clip_mp4, form), return_tensors="pt")["pixel_values"]
    batch = processor([video_in_form(clip_mp4, form), str(clip_mp4)], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(single, reference, rtol=0, atol=0)
    torch.testing.assert_close(batch, reference.expand(2, -1, -1, -1, -1), rtol=0, atol=0)


def test_a_torchcodec_decoder_gives_the_files_pixel_values(clip_mp4):
    processor = ILAVideoProcessor(crop_size=32)
    decoder = FakeFrameDecoder(load_video(clip_mp4)[0], fps=25.0)
    torch.testing.assert_close(
        processor(decoder, return_tensors="pt")["pixel_values"],
        processor(str(clip_mp4), return_tensors="pt")["pixel_values"],
        rtol=0,
        atol=0,
    )
    assert decoder.requests == [SEGMENT_N60_T8]


def test_extreme_aspect_ratios_are_cropped_before_resizing_with_bounded_memory():
    # Resized as they are, 8 frames of 16384x4 would take 6 GiB (short side 256, long side 1M pixels).
    script = """import numpy as np
from ila_hf.video_processing_ila import ILAVideoProcessor
processor = ILAVideoProcessor(num_frames=8)
processor(np.zeros((8, 48, 64, 3), np.uint8), return_tensors="pt")
MEASURE_FROM_HERE
for height, width in [(4, 16384), (8, 8192), (16384, 4)]:
    for num_crops in (1, 3):
        frames = np.full((8, height, width, 3), 200, np.uint8)
        pixel_values = processor(frames, num_crops=num_crops, return_tensors="pt")["pixel_values"]
        assert pixel_values.shape[-3:] == (3, 224, 224), pixel_values.shape
"""
    assert peak_rss_growth_mb(script) < 150


def test_frames_within_the_aspect_ratio_limit_are_resized_whole():
    processor = ILAVideoProcessor(crop_size=32, do_center_crop=False, do_normalize=False, do_rescale=False)
    assert processor(random_frames(8, 36, 144), return_tensors="pt")["pixel_values"].shape[-2:] == (36, 144)
    assert processor(random_frames(8, 36, 145), return_tensors="pt")["pixel_values"].shape[-2:] == (36, 144)


def test_a_batch_mixes_paths_and_arrays_of_different_lengths_and_sizes(clip_mp4):
    processor = ILAVideoProcessor(crop_size=32)
    videos = [str(clip_mp4), random_frames(20, 50, 70, seed=1), random_frames(9, 64, 40, seed=2)]
    batch = processor(videos, return_tensors="pt")["pixel_values"]
    assert batch.shape == (3, 8, 3, 32, 32)
    for video, pixel_values in zip(videos, batch):
        torch.testing.assert_close(processor(video, return_tensors="pt")["pixel_values"][0], pixel_values)


def test_without_sampling_every_given_frame_is_processed():
    processor = ILAVideoProcessor(crop_size=32)
    batch = processor(random_frames(5, 40, 40), do_sample_frames=False, return_tensors="pt")
    assert batch["pixel_values"].shape == (1, 5, 3, 32, 32)


def test_dense_sampling(clip_mp4):
    processor = ILAVideoProcessor(sampling="dense", frame_interval=4, **RAW)
    pixel_values = processor(str(clip_mp4), return_tensors="pt")["pixel_values"]
    # window (8 - 1) * 4 + 1 = 29 frames, centred in 60: start (60 - 29) // 2 = 15.
    assert read_indices(as_frames(pixel_values[0])) == list(range(15, 44, 4))


# ---------------------------------------------------------------- views
def test_temporal_views_follow_the_deterministic_multi_view_rule(clip_mp4):
    pixel_values = ILAVideoProcessor(num_clips=4, **RAW)(str(clip_mp4), return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 4, 8, 3, 48, 64)
    # avg = 60 // 8 = 7; view offsets floor((v + 0.5) * 7 / 4) = 0, 2, 4, 6.
    for view, offset in enumerate((0, 2, 4, 6)):
        assert read_indices(as_frames(pixel_values[0, view])) == [7 * i + offset for i in range(8)]


def test_three_crops_per_clip_ordered_clip_by_clip():
    frames = random_frames(16, 64, 96)  # short side 64 = crop: the resize is the identity
    processor = ILAVideoProcessor(crop_size=64, num_clips=2, num_crops=3, do_rescale=False, do_normalize=False)
    pixel_values = processor(frames, return_tensors="pt", return_metadata=True)
    views = pixel_values["pixel_values"][0]
    assert views.shape == (6, 8, 3, 64, 64)
    clip_indices = pixel_values["video_metadata"][0].frames_indices  # (2, 8)
    for view in range(6):
        clip, left = clip_indices[view // 3], (0, 16, 32)[view % 3]
        expected = torch.from_numpy(frames[clip, :, left : left + 64]).permute(0, 3, 1, 2).float()
        assert torch.equal(views[view], expected)


def test_three_crops_resize_the_short_side_to_the_crop_size(clip_mp4):
    batch = ILAVideoProcessor(num_crops=3)(str(clip_mp4), return_tensors="pt")["pixel_values"]
    assert batch.shape == (1, 3, 8, 3, 224, 224)


def test_views_need_frame_sampling():
    with pytest.raises(ValueError, match="num_clips=4 temporal views are made by frame sampling"):
        ILAVideoProcessor(num_clips=4)(random_frames(8, 32, 32), do_sample_frames=False)


def test_fps_sampling_is_refused(clip_mp4):
    with pytest.raises(ValueError, match=r"`fps=2` sampling is not supported: an ILA model takes exactly num_frames.*"
                       r"leave fps unset and pass num_frames=<the model's config.num_frames> \(this processor's "
                       r"default is 8\)"):
        ILAVideoProcessor()(str(clip_mp4), num_frames=None, fps=2)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"num_clips": 0}, "num_clips"), ({"sampling": "uniform"}, "sampling"), ({"num_crops": 2}, "num_crops")],
)
def test_invalid_options_are_rejected(kwargs, field):
    with pytest.raises(StrictDataclassFieldValidationError, match=field):
        ILAVideoProcessor()(random_frames(8, 32, 32), **kwargs)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_frames": 10**7}, r"num_frames must be in \[1, 1024\], got 10000000"),
        ({"num_clips": 1000}, r"num_clips must be in \[1, 64\], got 1000"),
        ({"size": {"shortest_edge": 60000}}, r"every side in size must be in \[1, 2048\] pixels, got 60000"),
        ({"crop_size": {"height": 0, "width": 224}}, r"every side in crop_size .* got 0"),
        ({"num_frames": 1024, "num_clips": 64}, r"65536 frames per video .* exceed 134217728 pixels per video"),
        ({"image_std": [0.0, 0.0, 0.0]}, r"image_std divides the pixels, so it must be > 0, got \(0.0, 0.0, 0.0\)"),
        ({"image_mean": [float("nan"), 0.5, 0.5]}, "image_mean must hold finite numbers"),
        ({"rescale_factor": -1.0}, "rescale_factor must be a positive number, got -1.0"),
    ],
)
def test_a_hostile_processor_config_is_refused_on_loading_at_once(tmp_path, overrides, message):
    from transformers import AutoVideoProcessor

    ILAVideoProcessor().save_pretrained(tmp_path)
    config_path = tmp_path / "video_preprocessor_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), **overrides}))
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"ILAVideoProcessor: {message}"):
        AutoVideoProcessor.from_pretrained(tmp_path)
    assert time.perf_counter() - started < 10  # num_frames=10**7 ended in an 85.8 GiB MemoryError


def test_call_overrides_are_bounded_before_decoding(clip_mp4):
    with pytest.raises(ValueError, match=r"ILAVideoProcessor: num_frames must be in \[1, 1024\], got 10000000"):
        ILAVideoProcessor()(str(clip_mp4), num_frames=10**7)


def test_bounds_admit_the_released_test_protocol_at_336():
    processor = ILAVideoProcessor(crop_size=336, num_frames=32, num_clips=4, num_crops=3)
    assert (processor.size.shortest_edge, processor.num_frames) == (384, 32)


# ---------------------------------------------------------------- errors, URLs
def test_an_unreadable_path_raises_a_decode_error_naming_it(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(VideoDecodeError, match=r"broken\.mp4: not a readable video container"):
        ILAVideoProcessor()(str(tmp_path / "broken.mp4"))


def test_a_url_is_downloaded_and_decoded(clip_mp4, monkeypatch):
    requested = []

    class Response:
        headers = {}

        def raise_for_status(self):
            pass

        def iter_bytes(self):
            yield from iter(lambda: content.read(1 << 16), b"")

    @contextlib.contextmanager
    def stream(method, url, **kwargs):
        requested.append(url)
        yield Response()

    content = io.BytesIO(clip_mp4.read_bytes())
    monkeypatch.setattr(video_io.httpx, "stream", stream)
    batch = ILAVideoProcessor(**RAW)("https://example.com/clip.mp4", return_tensors="pt")
    assert requested == ["https://example.com/clip.mp4"]
    assert read_indices(as_frames(batch["pixel_values"][0])) == SEGMENT_N60_T8


# ---------------------------------------------------------------- saving, remote code, pipeline
def test_save_and_load_round_trip(tmp_path, clip_mp4):
    processor = ILAVideoProcessor(
        num_frames=4,
        sampling="dense",
        frame_interval=3,
        num_clips=2,
        num_crops=3,
        crop_size=32,
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "video_preprocessor_config.json").read_text())
    assert {key: saved[key] for key in ("num_frames", "sampling", "frame_interval", "num_clips", "num_crops")} == {
        "num_frames": 4,
        "sampling": "dense",
        "frame_interval": 3,
        "num_clips": 2,
        "num_crops": 3,
    }
    assert saved["size"] == {"shortest_edge": 36} and saved["video_processor_type"] == "ILAVideoProcessor"
    loaded = ILAVideoProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == processor.to_dict()
    torch.testing.assert_close(
        loaded(str(clip_mp4), return_tensors="pt")["pixel_values"],
        processor(str(clip_mp4), return_tensors="pt")["pixel_values"],
    )


@pytest.mark.slow
def test_saved_as_remote_code_it_works_without_ila_hf(tmp_path, clip_mp4, monkeypatch):
    monkeypatch.setattr(ILAVideoProcessor, "_auto_class", "AutoVideoProcessor")  # what register_for_auto_class does
    ILAVideoProcessor(num_frames=4, crop_size=32).save_pretrained(tmp_path)
    copied = sorted(path.name for path in tmp_path.glob("*.py"))
    assert copied == ["sampling.py", "transforms.py", "video_io.py", "video_processing_ila.py"]
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["ila_hf"] = None  # any import of the package itself now fails
        from transformers import AutoVideoProcessor
        processor = AutoVideoProcessor.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        batch = processor({str(clip_mp4)!r}, return_tensors="pt")
        print(tuple(batch["pixel_values"].shape))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(1, 4, 3, 32, 32)"


@pytest.fixture
def tiny_classifier():
    """A video-classification pipeline on a tiny random ILA model, with the model and its processor."""
    torch.manual_seed(0)
    config = tiny_ila_config(id2label={0: "walk", 1: "run", 2: "jump"})
    model = ILAForVideoClassification(config).eval()
    processor = ILAVideoProcessor(num_frames=4, crop_size=TINY_CLIP_VISION["image_size"])
    return pipeline("video-classification", model=model, video_processor=processor), model, processor


def test_video_classification_pipeline_with_the_ila_model(clip_mp4, tiny_classifier):
    classifier, model, processor = tiny_classifier
    predictions = classifier(str(clip_mp4), top_k=3)
    with torch.no_grad():
        logits = model(**processor(str(clip_mp4), return_tensors="pt")).logits[0]
    probabilities = logits.softmax(-1)
    ranking = probabilities.argsort(descending=True).tolist()
    assert [prediction["label"] for prediction in predictions] == [model.config.id2label[i] for i in ranking]
    np.testing.assert_allclose([p["score"] for p in predictions], probabilities[ranking].numpy(), rtol=1e-5)


def test_the_pipeline_classifies_bytes_file_objects_and_datasets_dicts(clip_mp4, tiny_classifier):
    classifier, _, _ = tiny_classifier
    expected = classifier(str(clip_mp4), top_k=3)
    for form in ("bytes", "BytesIO", "open file", "datasets dict with bytes"):
        assert classifier(video_in_form(clip_mp4, form), top_k=3) == expected, form
    batch = [video_in_form(clip_mp4, "bytes"), video_in_form(clip_mp4, "datasets dict with bytes")]
    assert classifier(batch, top_k=3) == [expected, expected]
