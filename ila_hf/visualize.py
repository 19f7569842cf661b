"""Interactive points and alignment masks of an ILA model, drawn on the frames it saw (PIL only).

ILA predicts, for every layer and every pair of adjacent frames (t, t+1), one point in each frame of the pair
(`interactive_points`, shape (B, layers, T-1, 2, 2), (x, y) on [-1, 1] where -1 and +1 are the centres of the first
and last patch). Frame t therefore carries two points per layer: the one of pair (t, t+1), drawn as a filled dot,
and the one of pair (t-1, t), drawn as a ring. With `masks`, each frame is dimmed outside its alignment mask (the
merged masks of its pairs, as the model applies them to the message tokens).
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .modeling_ila import merge_pairs_into_frames


EARLIER_COLOUR = (0, 230, 255)  # the frame's point for the pair with the next frame
LATER_COLOUR = (255, 40, 200)  # the frame's point for the pair with the previous frame
GRID_COLOUR = (96, 96, 96)
MASK_FLOOR = 0.4  # brightness kept where the alignment mask is 0


def point_to_pixel(points: np.ndarray | torch.Tensor, image_size: int, grid_size: int) -> np.ndarray:
    """
    Points (..., 2) as (x, y) on [-1, 1] -> pixel coordinates (..., 2) as (x, y), where pixel (0, 0) is the top-left
    corner of the image: -1 maps to the centre of the first patch (patch / 2), +1 to the centre of the last one
    (image_size - patch / 2), linearly in between (so grid index i sits at (i + 0.5) * patch).
    """
    points = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    patch_size = image_size / grid_size
    return patch_size / 2 + (points.astype(np.float64) + 1) / 2 * (image_size - patch_size)


def pixel_values_to_frames(
    pixel_values: torch.Tensor, image_mean: Sequence[float], image_std: Sequence[float]
) -> np.ndarray:
    """Undo the processor's normalisation: (T, 3, H, W) float -> uint8 frames (T, H, W, 3)."""
    mean = torch.as_tensor(image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.as_tensor(image_std, dtype=torch.float32).view(1, 3, 1, 1)
    frames = (pixel_values.detach().float().cpu() * std + mean).clamp(0, 1) * 255
    return frames.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def draw_interactive_points(
    frames: np.ndarray,
    points: np.ndarray | torch.Tensor,
    grid_size: int,
    *,
    masks: np.ndarray | torch.Tensor | None = None,
    scale: int = 8,
    gap: int = 4,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    marker_radius: int | None = None,
) -> Image.Image:
    """
    Draw interactive points on frames: one row per layer, one column per frame.

    Args:
        frames: uint8 (T, H, W, 3), the frames the model saw (H = W = image size).
        points: (layers, T - 1, 2, 2) interactive points of one video: [layer, pair, earlier/later frame, (x, y)].
        grid_size: patches per side, S.
        masks: optional (layers, T, S, S) per-frame alignment masks in [0, 1]; frames are dimmed outside them.
        scale: integer enlargement of every frame (nearest neighbour, so patches stay sharp).
        gap: pixels between frames and rows.
        row_labels: one label per row, written in a left margin; None for no margin.
        title: a line of text above the rows; None for no header.
        marker_radius: radius of the point markers in output pixels (default: a quarter patch, at least 3).

    Returns:
        An RGB image of width `margin + T * W * scale + (T - 1) * gap` and height
        `header + layers * H * scale + (layers - 1) * gap`, where margin and header are 0 without labels / title.
    """
    frames = np.asarray(frames)
    points = points.detach().cpu().numpy() if isinstance(points, torch.Tensor) else np.asarray(points)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"Expected square RGB frames (T, H, W, 3), got shape {frames.shape}.")
    num_frames, image_size = frames.shape[0], frames.shape[1]
    if points.ndim != 4 or points.shape[1:] != (num_frames - 1, 2, 2):
        raise ValueError(
            f"Expected points of shape (layers, T - 1 = {num_frames - 1}, 2, 2) for {num_frames} frames, "
            f"got {points.shape}."
        )
    num_rows = points.shape[0]
    if masks is not None:
        masks = masks.detach().cpu().numpy() if isinstance(masks, torch.Tensor) else np.asarray(masks)
        if masks.shape != (num_rows, num_frames, grid_size, grid_size):
            raise ValueError(
                f"Expected masks of shape {(num_rows, num_frames, grid_size, grid_size)}, got {masks.shape}."
            )
    if row_labels is not None and len(row_labels) != num_rows:
        raise ValueError(f"Got {len(row_labels)} row labels for {num_rows} rows.")

    font = ImageFont.load_default()
    tile = image_size * scale
    margin = 72 if row_labels is not None else 0
    header = 36 if title is not None else 0
    width = margin + num_frames * tile + (num_frames - 1) * gap
    height = header + num_rows * tile + (num_rows - 1) * gap
    canvas = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    radius = marker_radius if marker_radius is not None else max(3, tile // grid_size // 4)
    patch_pixels = tile / grid_size
    pixels = point_to_pixel(points, image_size, grid_size) * scale  # (rows, P, 2, 2) in tile pixels

    if title is not None:
        draw.text((margin + 4, 4), title, fill=(235, 235, 235), font=font)
        draw.text(
            (margin + 4, 19),
            "dot: point for the pair with the next frame   ring: point for the pair with the previous frame",
            fill=(180, 180, 180),
            font=font,
        )
    for row in range(num_rows):
        top = header + row * (tile + gap)
        if row_labels is not None:
            draw.text((6, top + tile // 2 - 6), row_labels[row], fill=(235, 235, 235), font=font)
        for frame_index in range(num_frames):
            left = margin + frame_index * (tile + gap)
            frame = frames[frame_index].astype(np.float32)
            if masks is not None:
                weight = np.kron(masks[row, frame_index], np.ones((image_size // grid_size,) * 2))[..., None]
                frame = frame * (MASK_FLOOR + (1 - MASK_FLOOR) * weight)
            image = Image.fromarray(frame.round().astype(np.uint8)).resize((tile, tile), Image.NEAREST)
            canvas.paste(image, (left, top))
            for line in range(1, grid_size):  # patch borders
                offset = round(line * patch_pixels)
                draw.line([(left + offset, top), (left + offset, top + tile - 1)], fill=GRID_COLOUR, width=1)
                draw.line([(left, top + offset), (left + tile - 1, top + offset)], fill=GRID_COLOUR, width=1)
            if frame_index < num_frames - 1:  # pair (t, t+1): this frame is the earlier one
                x, y = pixels[row, frame_index, 0]
                draw.ellipse(
                    [left + x - radius, top + y - radius, left + x + radius, top + y + radius], fill=EARLIER_COLOUR
                )
            if frame_index > 0:  # pair (t-1, t): this frame is the later one
                x, y = pixels[row, frame_index - 1, 1]
                draw.ellipse(
                    [left + x - radius - 2, top + y - radius - 2, left + x + radius + 2, top + y + radius + 2],
                    outline=LATER_COLOUR,
                    width=2,
                )
    return canvas


@torch.no_grad()
def interactive_points_and_masks(model, pixel_values: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """
    Run an `ILAForVideoClassification` (or `ILAVideoModel`) in evaluation mode on one clip (T, 3, H, W) and return its
    points (layers, T - 1, 2, 2) and per-frame alignment masks (layers, T, S, S), computed by each layer's own
    alignment module.
    """
    was_training = model.training
    model.eval()
    try:
        pixel_values = pixel_values.unsqueeze(0).to(model.device, model.dtype)
        points = model(pixel_values=pixel_values).interactive_points[0].float()  # (layers, P, 2, 2)
        video_model = getattr(model, "ila", model)
        masks = torch.stack(
            [layer.alignment.alignment_masks(points[index]) for index, layer in enumerate(video_model.encoder.layers)]
        )  # (layers, P, 2, S, S)
    finally:
        model.train(was_training)
    frame_masks = merge_pairs_into_frames(masks[:, :, 0], masks[:, :, 1])  # (layers, T, S, S), the model's rule
    return points.cpu().numpy(), frame_masks.cpu().numpy()


def save_interactive_points(
    model,
    video_processor,
    video,
    path: str | Path,
    *,
    layers: str | Sequence[int] = "all",
    with_masks: bool = True,
    scale: int = 8,
    title: str | None = None,
) -> Path:
    """
    Process `video` (a path, URL or frames) with `video_processor`, run `model`, and save a PNG of the interactive
    points (and alignment masks) of the chosen layers on the processed frames.

    Args:
        layers: "all", "last", or layer indices.
    """
    pixel_values = video_processor(video, return_tensors="pt")["pixel_values"][0]  # (T, 3, H, W)
    points, masks = interactive_points_and_masks(model, pixel_values)
    num_layers = points.shape[0]
    chosen = list(range(num_layers)) if layers == "all" else [num_layers - 1] if layers == "last" else list(layers)
    frames = pixel_values_to_frames(pixel_values, video_processor.image_mean, video_processor.image_std)
    image = draw_interactive_points(
        frames,
        points[chosen],
        model.config.image_size // model.config.patch_size,
        masks=masks[chosen] if with_masks else None,
        scale=scale,
        row_labels=[f"layer {index}" for index in chosen],
        title=title if title is not None else "ILA interactive points",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


__all__ = [
    "draw_interactive_points",
    "interactive_points_and_masks",
    "pixel_values_to_frames",
    "point_to_pixel",
    "save_interactive_points",
]
