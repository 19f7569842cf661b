"""ila_hf.visualize: points land on the right pixels, the figure has the documented layout, masks come from the model."""

import numpy as np
import pytest
import torch
from PIL import Image

from ila_hf.visualize import (
    EARLIER_COLOUR,
    LATER_COLOUR,
    MASK_COLOUR,
    MASK_FLOOR,
    MIN_TILE_PIXELS,
    draw_interactive_points,
    draw_training_curves,
    interactive_points_and_masks,
    pixel_values_to_frames,
    point_to_pixel,
    save_interactive_points,
)


IMAGE_SIZE, GRID_SIZE = 32, 4  # 8-pixel patches, centres at 4, 12, 20, 28


def _black_frames(num_frames: int = 3, size: int = IMAGE_SIZE) -> np.ndarray:
    return np.zeros((num_frames, size, size, 3), dtype=np.uint8)


def _points(earlier_xy, later_xy, num_frames: int = 3, layers: int = 1) -> np.ndarray:
    points = np.zeros((layers, num_frames - 1, 2, 2))
    points[:, :, 0] = earlier_xy
    points[:, :, 1] = later_xy
    return points


# ---------------------------------------------------------------- point_to_pixel
def test_minus_one_is_the_centre_of_the_top_left_patch():
    np.testing.assert_allclose(point_to_pixel([-1.0, -1.0], IMAGE_SIZE, GRID_SIZE), [4.0, 4.0])


def test_plus_one_is_the_centre_of_the_bottom_right_patch():
    np.testing.assert_allclose(point_to_pixel([1.0, 1.0], IMAGE_SIZE, GRID_SIZE), [28.0, 28.0])


def test_x_picks_the_column_and_y_the_row():
    np.testing.assert_allclose(point_to_pixel([1.0, -1.0], IMAGE_SIZE, GRID_SIZE), [28.0, 4.0])


def test_grid_coordinates_land_on_patch_centres():
    grid = np.linspace(-1, 1, GRID_SIZE)  # the model's g_i = -1 + 2i / (S - 1)
    pixels = point_to_pixel(np.stack([grid, grid], axis=-1), IMAGE_SIZE, GRID_SIZE)
    np.testing.assert_allclose(pixels[:, 0], (np.arange(GRID_SIZE) + 0.5) * IMAGE_SIZE / GRID_SIZE)


def test_point_to_pixel_accepts_tensors_of_any_leading_shape():
    pixels = point_to_pixel(torch.zeros(2, 3, 2, 2), IMAGE_SIZE, GRID_SIZE)
    assert pixels.shape == (2, 3, 2, 2)
    np.testing.assert_allclose(pixels, 16.0)


# ---------------------------------------------------------------- the figure
def test_figure_size_without_labels_or_title():
    image = draw_interactive_points(_black_frames(3), _points(0, 0, layers=2), GRID_SIZE, scale=4, gap=2)
    assert image.size == (3 * 32 * 4 + 2 * 2, 2 * 32 * 4 + 1 * 2)
    assert image.mode == "RGB"


def test_figure_size_grows_by_the_label_margin_and_header():
    plain = draw_interactive_points(_black_frames(3), _points(0, 0), GRID_SIZE, scale=4)
    labelled = draw_interactive_points(_black_frames(3), _points(0, 0), GRID_SIZE, scale=4, row_labels=["layer 0"], title="t")
    assert labelled.size[0] > plain.size[0] and labelled.size[1] > plain.size[1]


def test_frames_are_enlarged_to_at_least_the_minimum_tile_by_default():
    image = draw_interactive_points(_black_frames(2), _points(0, 0, num_frames=2), GRID_SIZE, gap=0)
    scale = -(-MIN_TILE_PIXELS // IMAGE_SIZE)  # the smallest integer scale reaching the minimum
    assert image.size == (2 * IMAGE_SIZE * scale, IMAGE_SIZE * scale)


def test_column_labels_add_a_line_above_the_frames_and_must_match_them():
    plain = draw_interactive_points(_black_frames(3), _points(0, 0), GRID_SIZE, scale=4)
    labelled = draw_interactive_points(
        _black_frames(3), _points(0, 0), GRID_SIZE, scale=4, column_labels=["frame 0", "frame 4", "frame 8"]
    )
    assert labelled.size[0] == plain.size[0] and labelled.size[1] > plain.size[1]
    with pytest.raises(ValueError, match="2 column labels for 3 frames"):
        draw_interactive_points(_black_frames(3), _points(0, 0), GRID_SIZE, column_labels=["a", "b"])


def test_earlier_point_is_drawn_at_the_top_left_patch_centre_of_its_frame():
    scale = 4
    image = draw_interactive_points(
        _black_frames(2), _points((-1, -1), (1, 1), num_frames=2), GRID_SIZE, scale=scale, gap=0, marker_radius=3
    )
    pixels = np.asarray(image)
    assert tuple(pixels[4 * scale, 4 * scale]) == EARLIER_COLOUR  # frame 0, centre of patch (0, 0)
    assert tuple(pixels[28 * scale, 28 * scale]) != EARLIER_COLOUR  # nothing at the other corner of frame 0


def test_later_point_is_a_ring_around_the_bottom_right_patch_centre_of_the_next_frame():
    scale, radius = 4, 3
    image = draw_interactive_points(
        _black_frames(2), _points((-1, -1), (1, 1), num_frames=2), GRID_SIZE, scale=scale, gap=0, marker_radius=radius
    )
    pixels = np.asarray(image)
    left = IMAGE_SIZE * scale  # frame 1 starts here
    centre = 28 * scale
    assert tuple(pixels[centre, left + centre + radius + 1]) == LATER_COLOUR  # on the ring
    assert tuple(pixels[centre, left + centre]) != LATER_COLOUR  # a ring: hollow
    assert tuple(pixels[4 * scale, left + 4 * scale]) != EARLIER_COLOUR  # the last frame has no "next" point


def test_masks_dim_the_frame_outside_the_mask():
    frames = np.full((2, IMAGE_SIZE, IMAGE_SIZE, 3), 200, dtype=np.uint8)
    masks = np.zeros((1, 2, GRID_SIZE, GRID_SIZE))
    masks[:, :, 1, 2] = 1.0  # row 1, column 2
    image = draw_interactive_points(
        frames, _points((1, 1), (1, 1), num_frames=2), GRID_SIZE, masks=masks, scale=1, gap=0, marker_radius=0
    )
    pixels = np.asarray(image).astype(int)
    # Patch (1, 2) spans rows 8-15 and columns 16-23; its centre is clear of the outline and the patch borders.
    inside, outside = pixels[12, 20], pixels[4, 4]
    assert inside[0] == 200
    assert outside[0] == round(200 * MASK_FLOOR)


def test_the_mask_is_outlined_around_its_patches_of_at_least_one_half():
    frames = np.full((2, IMAGE_SIZE, IMAGE_SIZE, 3), 200, dtype=np.uint8)
    masks = np.zeros((1, 2, GRID_SIZE, GRID_SIZE))
    masks[:, :, 1:3, 1:3] = 1.0  # rows and columns 1-2: pixels 8-23
    masks[:, :, 0, 0] = 0.4  # under one half: not outlined
    image = draw_interactive_points(
        frames, _points((1, 1), (1, 1), num_frames=2), GRID_SIZE, masks=masks, scale=1, gap=0, marker_radius=0
    )
    pixels = np.asarray(image)
    assert tuple(pixels[8, 12]) == tuple(pixels[23, 12]) == tuple(pixels[12, 8]) == tuple(pixels[12, 23]) == MASK_COLOUR
    assert tuple(pixels[12, 12]) != MASK_COLOUR and tuple(pixels[0, 4]) != MASK_COLOUR


@pytest.mark.parametrize(
    "points_shape, message",
    [((3, 2, 2), "layers, T - 1"), ((1, 3, 2, 2), "T - 1 = 2"), ((1, 2, 2, 3), "T - 1")],
)
def test_points_of_the_wrong_shape_are_refused(points_shape, message):
    with pytest.raises(ValueError, match=message):
        draw_interactive_points(_black_frames(3), np.zeros(points_shape), GRID_SIZE)


def test_pixel_values_to_frames_undoes_the_normalisation():
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    pixel_values = (torch.from_numpy(frames).permute(0, 3, 1, 2) / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    np.testing.assert_array_equal(pixel_values_to_frames(pixel_values, mean, std), frames)


# ---------------------------------------------------------------- with a model
@pytest.fixture(scope="module")
def tiny_ila():
    from ila_hf import ILAForVideoClassification, ILAVideoConfig

    torch.manual_seed(0)
    config = ILAVideoConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE,
        patch_size=8, projection_dim=64, num_frames=4, interaction_channels=16, num_labels=2,
    )
    model = ILAForVideoClassification(config).eval()
    with torch.no_grad():  # non-zero points, so that the masks are not all centred
        for layer in model.ila.encoder.layers:
            layer.alignment.point_predictor.pair_fc2.bias.copy_(torch.tensor([0.9, -0.9, 0.3, 0.6]))
    return model


def test_points_and_masks_come_from_the_model_in_eval_mode(tiny_ila):
    tiny_ila.train()
    pixel_values = torch.randn(4, 3, IMAGE_SIZE, IMAGE_SIZE)
    points, masks = interactive_points_and_masks(tiny_ila, pixel_values)
    assert tiny_ila.training  # the mode is restored
    assert points.shape == (2, 3, 2, 2) and masks.shape == (2, 4, GRID_SIZE, GRID_SIZE)
    tiny_ila.eval()
    with torch.no_grad():
        expected = tiny_ila(pixel_values=pixel_values[None]).interactive_points[0]
    np.testing.assert_allclose(points, expected.numpy(), atol=1e-6)
    # Frame 0 is masked by pair 0's earlier point only: the model's mask at that point, no jitter.
    first_layer = tiny_ila.ila.encoder.layers[0].alignment
    with torch.no_grad():
        expected_mask = first_layer.alignment_masks(expected[0, 0, 0])
    np.testing.assert_allclose(masks[0, 0], expected_mask.numpy(), atol=1e-6)
    assert masks.min() >= 0 and masks.max() <= 1


def test_save_interactive_points_writes_a_png_of_the_chosen_layers(tiny_ila, tmp_path):
    from ila_hf import ILAVideoProcessor

    processor = ILAVideoProcessor(num_frames=4, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    video = np.random.default_rng(0).integers(0, 256, size=(12, 36, 36, 3), dtype=np.uint8)
    last = save_interactive_points(tiny_ila, processor, video, tmp_path / "last.png", layers="last", scale=2)
    every = save_interactive_points(tiny_ila, processor, video, tmp_path / "all.png", scale=2)
    with Image.open(last) as image:
        image.verify()
    with Image.open(last) as one_row, Image.open(every) as two_rows:
        assert one_row.format == "PNG"
        assert two_rows.size[1] - one_row.size[1] == IMAGE_SIZE * 2 + 8  # a row per layer: a frame's height + gap


# ---------------------------------------------------------------- training curves
def _history(losses, accuracies, held_out=None):
    history = [
        {"epoch": epoch, "train_loss": loss, "train_top1": accuracy}
        for epoch, (loss, accuracy) in enumerate(zip(losses, accuracies))
    ]
    if held_out is not None:
        history[-1]["top1"] = held_out
    return history


def test_training_curves_draw_every_run_in_its_own_colour():
    from ila_hf.visualize import CURVE_COLOURS

    image = draw_training_curves(
        {"ILA": _history([1.4, 0.7, 0.2], [0.3, 0.7, 1.0], 0.95), "frame averaging": _history([1.4] * 3, [0.25] * 3)},
        title="curves",
        chance=0.25,
    )
    colours = {tuple(colour) for colour in np.asarray(image).reshape(-1, 3)}
    assert CURVE_COLOURS[0] in colours and CURVE_COLOURS[1] in colours and CURVE_COLOURS[2] not in colours


def test_training_curves_need_an_epoch_per_run():
    with pytest.raises(ValueError, match="at least one epoch"):
        draw_training_curves({"ILA": []})
