"""Clip transforms: released geometry, one set of random parameters per clip, seeded by a torch.Generator."""

import numpy as np
import pytest
import torch

from ila_hf.transforms import (
    MAX_ASPECT_RATIO,
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    EvalClipTransform,
    MultiScaleCrop,
    Normalize,
    RandomColorJitter,
    RandomErasing,
    RandomGrayscale,
    RandomHorizontalFlip,
    ResizeShortSide,
    TrainClipTransform,
    crop_to_aspect_ratio,
    resize_scale,
    three_crop,
    to_clip_tensor,
)

from .videos import peak_rss_growth_mb


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_clip(num_frames=4, height=48, width=64, seed=0) -> torch.Tensor:
    frames = np.random.default_rng(seed).integers(0, 256, (num_frames, 3, height, width), dtype=np.uint8)
    return torch.from_numpy(frames)


def repeated_frame_clip(num_frames=4, height=48, width=64, seed=0) -> torch.Tensor:
    """Identical frames: any per-frame difference in the output means per-frame random parameters."""
    return random_clip(1, height, width, seed).expand(num_frames, -1, -1, -1).contiguous()


def assert_frames_identical(clip: torch.Tensor) -> None:
    assert torch.equal(clip, clip[:1].expand_as(clip))


# ---------------------------------------------------------------- geometry
def test_resize_scale_is_256_over_224_of_the_crop():
    assert [resize_scale(size) for size in (224, 336, 64)] == [256, 384, 73]


def test_resize_short_side_keeps_the_aspect_ratio():
    assert ResizeShortSide(96)(random_clip(height=48, width=64)).shape == (4, 3, 96, 128)
    assert ResizeShortSide(96)(random_clip(height=64, width=48)).shape == (4, 3, 128, 96)


def test_frames_beyond_the_aspect_ratio_limit_keep_their_centre():
    assert MAX_ASPECT_RATIO == 4
    clip = torch.arange(2 * 3 * 10 * 100).reshape(2, 3, 10, 100)
    cropped = crop_to_aspect_ratio(clip)
    assert torch.equal(cropped, clip[..., 30:70]) and cropped.data_ptr() == clip[..., 30:70].data_ptr()  # a view
    tall = clip.transpose(-1, -2)
    assert torch.equal(crop_to_aspect_ratio(tall), tall[..., 30:70, :])
    assert crop_to_aspect_ratio(clip[..., :40]).shape[-1] == 40  # exactly 4:1 stays whole
    assert ResizeShortSide(8)(clip.to(torch.uint8)).shape == (2, 3, 8, 32)


def test_the_training_transform_bounds_memory_for_extreme_aspect_ratios():
    # Resized as they are, 8 frames of 16384x4 would take 6 GiB (short side 256, long side 1M pixels).
    script = """import numpy as np, torch
from ila_hf.transforms import TrainClipTransform
transform = TrainClipTransform(224)
transform(np.zeros((8, 48, 64, 3), np.uint8), torch.Generator().manual_seed(0))
MEASURE_FROM_HERE
for height, width in [(4, 16384), (8, 8192), (16384, 4)]:
    clip = transform(np.full((8, height, width, 3), 200, np.uint8), torch.Generator().manual_seed(0))
    assert clip.shape == (8, 3, 224, 224), clip.shape
"""
    assert peak_rss_growth_mb(script) < 150


def test_center_crop_takes_the_middle():
    clip = random_clip(height=256, width=320)
    assert torch.equal(CenterCrop(224)(clip), clip[..., 16:240, 48:272])


def test_three_crop_positions_on_a_landscape_clip():
    clip = random_clip(height=48, width=100)
    crops = three_crop(clip, 48)
    assert crops.shape == (3, 4, 3, 48, 48)
    for crop, left in zip(crops, (0, 26, 52)):
        assert torch.equal(crop, clip[..., :, left : left + 48])


def test_three_crop_positions_on_a_portrait_clip():
    clip = random_clip(height=90, width=40)
    crops = three_crop(clip, 40)
    for crop, top in zip(crops, (0, 25, 50)):
        assert torch.equal(crop, clip[..., top : top + 40, :])


def test_three_crop_needs_frames_as_large_as_the_crop():
    with pytest.raises(ValueError, match="at least 64 pixels on each side, got 48x100"):
        three_crop(random_clip(height=48, width=100), 64)


def released_crop_boxes(height: int, width: int, size: int, scales=(1, 0.875, 0.75, 0.66)) -> set:
    """Every (top, left, height, width) the released MultiScaleCrop can choose, enumerated."""
    sides = [int(min(height, width) * scale) for scale in scales]
    boxes = set()
    for i, crop_h in enumerate(sides):
        for j, crop_w in enumerate(sides):
            if abs(i - j) > 1:
                continue
            crop_h, crop_w = (size if abs(side - size) < 3 else side for side in (crop_h, crop_w))
            step_y, step_x = (height - crop_h) // 4, (width - crop_w) // 4
            corners_and_centre = [(0, 0), (0, 4 * step_x), (4 * step_y, 0), (4 * step_y, 4 * step_x)]
            for top, left in [*corners_and_centre, (2 * step_y, 2 * step_x)]:
                boxes.add((top, left, crop_h, crop_w))
    return boxes


def test_multi_scale_crop_draws_exactly_the_released_boxes():
    crop = MultiScaleCrop(224)
    allowed = released_crop_boxes(256, 340, 224)
    generator = seeded(0)
    drawn = {crop.crop_box(256, 340, generator) for _ in range(3000)}
    assert drawn == allowed  # 10 size pairs x 5 positions, all reachable, nothing else
    assert len({(height, width) for _, _, height, width in allowed}) == 10  # 4 scales, aspect gap <= 1


def test_multi_scale_crop_output_and_same_box_for_every_frame():
    base = torch.rand(1, 3, 60, 80)
    clip = base + torch.arange(4).view(4, 1, 1, 1) * 0.01  # frame t = frame 0 + 0.01 t
    out = MultiScaleCrop(32)(clip, seeded(3))
    assert out.shape == (4, 3, 32, 32)
    # Crop and bilinear resize are linear: the same box on every frame keeps the 0.01 t offsets.
    torch.testing.assert_close(out - out[:1], torch.arange(4).view(4, 1, 1, 1).expand_as(out) * 0.01)


# ---------------------------------------------------------------- photometric
def test_flip_mirrors_every_frame_or_none():
    clip = random_clip()
    assert torch.equal(RandomHorizontalFlip(1.0)(clip), clip.flip(-1))
    assert torch.equal(RandomHorizontalFlip(0.0)(clip), clip)
    flips = [torch.equal(RandomHorizontalFlip(0.5)(clip, seeded(seed)), clip.flip(-1)) for seed in range(200)]
    assert 60 < sum(flips) < 140


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_color_jitter_uses_one_set_of_factors_per_clip(dtype):
    clip = repeated_frame_clip()
    clip = clip if dtype == torch.uint8 else clip.float() / 255
    out = RandomColorJitter(p=1.0)(clip, seeded(0))
    assert out.dtype == dtype and not torch.equal(out, clip)
    assert_frames_identical(out)


def test_color_jitter_on_uint8_matches_the_float_path():
    clip = random_clip(height=32, width=32)
    for seed in range(5):
        eight_bit = RandomColorJitter(p=1.0)(clip, seeded(seed)).float() / 255
        floating = RandomColorJitter(p=1.0)(clip.float() / 255, seeded(seed))
        assert (eight_bit - floating).abs().mean() < 0.01  # PIL's 8-bit kernels round at each step


def test_color_jitter_probability():
    clip = random_clip(num_frames=1, height=8, width=8)
    changed = [not torch.equal(RandomColorJitter(p=0.8)(clip, seeded(seed)), clip) for seed in range(200)]
    assert 140 < sum(changed) < 180


def test_grayscale_makes_channels_equal():
    out = RandomGrayscale(p=1.0)(random_clip())
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    assert torch.equal(RandomGrayscale(p=0.0)(random_clip()), random_clip())


def test_normalize_uses_imagenet_statistics_by_default():
    clip = torch.full((2, 3, 4, 4), 0.5)
    expected = (0.5 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(Normalize()(clip)[0, :, 0, 0], expected)


def test_random_erasing_erases_the_same_box_in_every_frame():
    clip = torch.zeros(4, 3, 64, 64)
    for seed in range(10):
        out = RandomErasing(p=1.0, value="random")(clip, seeded(seed))
        assert_frames_identical(out)
        erased = (out[0] != 0).any(dim=0)
        rows, columns = erased.any(dim=1).nonzero(), erased.any(dim=0).nonzero()
        box_area = (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)
        assert 0.02 * 64 * 64 * 0.8 <= box_area <= 64 * 64 / 3 * 1.2
        assert erased.sum() == box_area  # one solid rectangle


def test_random_erasing_with_a_constant():
    out = RandomErasing(p=1.0, value=0.0)(torch.ones(2, 3, 32, 32), seeded(1))
    assert (out == 0).any() and set(out.unique().tolist()) == {0.0, 1.0}


def test_random_erasing_rejects_unknown_fill():
    with pytest.raises(ValueError, match="number or 'random', got 'noise'"):
        RandomErasing(value="noise")


# ---------------------------------------------------------------- full transforms
def test_train_transform_output_from_decoded_numpy_frames():
    frames = np.random.default_rng(0).integers(0, 256, (8, 60, 80, 3), dtype=np.uint8)
    out = TrainClipTransform(32)(frames, seeded(0))
    assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32


def test_train_transform_is_a_function_of_the_seed():
    frames = np.random.default_rng(0).integers(0, 256, (4, 60, 80, 3), dtype=np.uint8)
    transform = TrainClipTransform(32)
    assert torch.equal(transform(frames, seeded(7)), transform(frames, seeded(7)))
    assert not torch.equal(transform(frames, seeded(7)), transform(frames, seeded(8)))


def test_train_transform_treats_all_frames_alike():
    frames = repeated_frame_clip(height=60, width=80)
    for seed in range(10):
        assert_frames_identical(TrainClipTransform(32)(frames, seeded(seed)))


def test_train_transform_accepts_numpy_and_tensor_layouts_alike():
    frames = np.random.default_rng(0).integers(0, 256, (4, 60, 80, 3), dtype=np.uint8)
    from_numpy = TrainClipTransform(32)(frames, seeded(2))
    from_tensor = TrainClipTransform(32)(torch.from_numpy(frames).permute(0, 3, 1, 2), seeded(2))
    assert torch.equal(from_numpy, from_tensor)


def test_eval_transform_is_short_side_resize_centre_crop_and_normalisation():
    frames = np.random.default_rng(0).integers(0, 256, (2, 256, 320, 3), dtype=np.uint8)  # short side already 256
    out = EvalClipTransform(224)(frames)
    expected = (frames[:, 16:240, 48:272] / 255 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    torch.testing.assert_close(out, torch.from_numpy(expected.transpose(0, 3, 1, 2)).float())


@pytest.mark.parametrize(
    ("clip", "message"),
    [
        (np.zeros((4, 3, 48, 64), np.uint8), r"numpy frames of shape \(T, H, W, 3\)"),
        (torch.zeros(4, 48, 64, 3, dtype=torch.uint8), r"clip tensor of shape \(T, 3, H, W\)"),
        (torch.zeros(3, 48, 64), r"clip tensor of shape \(T, 3, H, W\), got \(3, 48, 64\)"),
    ],
)
def test_wrong_layouts_are_rejected(clip, message):
    with pytest.raises(ValueError, match=message):
        to_clip_tensor(clip)
