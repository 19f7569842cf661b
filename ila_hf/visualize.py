"""Pictures of ILA (PIL only): interactive points and alignment masks on the frames a model saw, and training curves.

ILA predicts, for every layer and every pair of adjacent frames (t, t+1), one point in each frame of the pair
(`interactive_points`, shape (B, layers, T-1, 2, 2), (x, y) on [-1, 1] where -1 and +1 are the centres of the first
and last patch). Frame t therefore carries two points per layer: the one of pair (t, t+1), drawn as a filled dot,
and the one of pair (t-1, t), drawn as a ring. With `masks`, each frame is dimmed outside its alignment mask (the
merged masks of its pairs, as the model applies them to the message tokens) and the patches where the mask is at
least one half are outlined.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .modeling_ila import merge_pairs_into_frames


EARLIER_COLOUR = (0, 230, 255)  # the frame's point for the pair with the next frame
LATER_COLOUR = (255, 40, 200)  # the frame's point for the pair with the previous frame
MASK_COLOUR = (255, 210, 0)  # outline of the alignment mask
GRID_COLOUR = (96, 96, 96)
BACKGROUND_COLOUR = (24, 24, 24)
TEXT_COLOUR = (235, 235, 235)
NOTE_COLOUR = (175, 175, 175)
MASK_FLOOR = 0.4  # brightness kept where the alignment mask is 0
MIN_TILE_PIXELS = 160  # frames are enlarged (nearest neighbour) to at least this side by default


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


def _font(size: int) -> ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _as_array(values: np.ndarray | torch.Tensor) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


# ------------------------------------------------------------------------------------------------------ points
def _checked_inputs(frames, points, grid_size: int, masks, row_labels, column_labels):
    """Arrays of the inputs of `draw_interactive_points`, their shapes checked against each other."""
    frames, points = np.asarray(frames), _as_array(points)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[1] != frames.shape[2]:
        raise ValueError(f"Expected square RGB frames (T, H, W, 3), got shape {frames.shape}.")
    num_frames = frames.shape[0]
    if points.ndim != 4 or points.shape[1:] != (num_frames - 1, 2, 2):
        raise ValueError(
            f"Expected points of shape (layers, T - 1 = {num_frames - 1}, 2, 2) for {num_frames} frames, "
            f"got {points.shape}."
        )
    num_rows = points.shape[0]
    if masks is not None:
        masks = _as_array(masks)
        if masks.shape != (num_rows, num_frames, grid_size, grid_size):
            raise ValueError(
                f"Expected masks of shape {(num_rows, num_frames, grid_size, grid_size)}, got {masks.shape}."
            )
    if row_labels is not None and len(row_labels) != num_rows:
        raise ValueError(f"Got {len(row_labels)} row labels for {num_rows} rows.")
    if column_labels is not None and len(column_labels) != num_frames:
        raise ValueError(f"Got {len(column_labels)} column labels for {num_frames} frames.")
    return frames, points, masks


@dataclass
class _Layout:
    """Where things go on the canvas of `draw_interactive_points` (pixels)."""

    tile: int  # side of an enlarged frame
    gap: int
    margin: int  # left margin holding the row labels
    header: int  # title and legend
    column_header: int  # column labels
    legend_width: int  # the canvas is at least this much wider than the margin

    def tile_origin(self, row: int, column: int) -> tuple[int, int]:
        step = self.tile + self.gap
        return self.margin + column * step, self.header + self.column_header + row * step

    def size(self, num_rows: int, num_columns: int) -> tuple[int, int]:
        width = self.margin + max(num_columns * self.tile + (num_columns - 1) * self.gap, self.legend_width)
        return width, self.header + self.column_header + num_rows * self.tile + (num_rows - 1) * self.gap


def _layout(image_size: int, scale: int, gap: int, font_size: int, row_labels, column_labels, title, masks) -> _Layout:
    line = round(1.5 * font_size)
    margin = 0
    if row_labels is not None:
        margin = max(round(_font(font_size).getlength(label)) for label in row_labels) + font_size
    return _Layout(
        tile=image_size * scale,
        gap=gap,
        margin=margin,
        header=0 if title is None else 2 * line + round(0.5 * font_size),  # title, legend
        column_header=0 if column_labels is None else line,
        legend_width=0 if title is None else _draw_legend(None, 0, 0, font_size, masks is not None),
    )


def _draw_marker(draw: ImageDraw.ImageDraw, centre: tuple[float, float], radius: int, later: bool) -> None:
    """A filled dot (the frame's point for the pair with the next frame) or a ring (for the pair with the previous)."""
    x, y = centre
    if later:
        ring = radius + 2
        draw.ellipse([x - ring, y - ring, x + ring, y + ring], outline=LATER_COLOUR, width=max(2, radius // 3))
    else:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=EARLIER_COLOUR)


def _draw_tile(
    canvas: Image.Image,
    origin: tuple[int, int],
    frame: np.ndarray,
    scale: int,
    grid_size: int,
    mask: np.ndarray | None,
    earlier_point: np.ndarray | None,
    later_point: np.ndarray | None,
    radius: int,
) -> None:
    """
    One frame (H, W, 3) enlarged `scale` times at `origin`: dimmed outside its mask (S, S) with the mask's >= 0.5
    patches outlined, the patch grid, and its points (x, y) in frame pixels.
    """
    image_size, left, top = frame.shape[0], *origin
    patch = image_size // grid_size
    frame = frame.astype(np.float32)
    if mask is not None:
        weight = np.kron(mask, np.ones((patch, patch)))[..., None]  # (H, W, 1)
        frame = frame * (MASK_FLOOR + (1 - MASK_FLOOR) * weight)
    tile = image_size * scale
    canvas.paste(Image.fromarray(frame.round().astype(np.uint8)).resize((tile, tile), Image.NEAREST), origin)
    draw = ImageDraw.Draw(canvas)
    patch_pixels = tile / grid_size
    for line in range(1, grid_size):  # patch borders
        offset = round(line * patch_pixels)
        draw.line([(left + offset, top), (left + offset, top + tile - 1)], fill=GRID_COLOUR, width=1)
        draw.line([(left, top + offset), (left + tile - 1, top + offset)], fill=GRID_COLOUR, width=1)
    if mask is not None and (mask >= 0.5).any():
        rows, columns = np.nonzero(mask >= 0.5)
        box = [columns.min() * patch_pixels, rows.min() * patch_pixels, (columns.max() + 1) * patch_pixels - 1,
               (rows.max() + 1) * patch_pixels - 1]
        draw.rectangle([left + box[0], top + box[1], left + box[2], top + box[3]], outline=MASK_COLOUR, width=2)
    for point, later in ((earlier_point, False), (later_point, True)):
        if point is not None:
            _draw_marker(draw, (left + point[0] * scale, top + point[1] * scale), radius, later)


LEGEND = (
    ("earlier", "point for the pair with the next frame"),
    ("later", "point for the pair with the previous frame"),
    ("mask", "alignment mask (bright; dimmed outside)"),
)


def _draw_legend(draw: ImageDraw.ImageDraw | None, left: int, top: int, font_size: int, masks: bool) -> int:
    """The legend of the markers (and of the mask) on one line from (left, top); returns its width. With `draw` None,
    only measures."""
    font, radius = _font(font_size), font_size // 2 - 1
    x, centre_y = left, top + font_size // 2 + 2
    for kind, text in LEGEND if masks else LEGEND[:2]:
        if draw is not None and kind == "mask":
            box = [x, centre_y - radius - 2, x + 2 * radius + 4, centre_y + radius + 2]
            draw.rectangle(box, outline=MASK_COLOUR, width=2)
        elif draw is not None:
            _draw_marker(draw, (x + radius + 2, centre_y), radius, later=kind == "later")
        x += 2 * radius + 4 + font_size // 2
        if draw is not None:
            draw.text((x, top), text, fill=NOTE_COLOUR, font=font)
        x += round(font.getlength(text)) + font_size * 2
    return x - left - font_size * 2


def draw_interactive_points(
    frames: np.ndarray,
    points: np.ndarray | torch.Tensor,
    grid_size: int,
    *,
    masks: np.ndarray | torch.Tensor | None = None,
    scale: int | None = None,
    gap: int = 8,
    row_labels: Sequence[str] | None = None,
    column_labels: Sequence[str] | None = None,
    title: str | None = None,
    marker_radius: int | None = None,
    font_size: int = 20,
) -> Image.Image:
    """
    Draw interactive points on frames: one row per layer, one column per frame.

    Args:
        frames: uint8 (T, H, W, 3), the frames the model saw (H = W = image size).
        points: (layers, T - 1, 2, 2) interactive points of one video: [layer, pair, earlier/later frame, (x, y)].
        grid_size: patches per side, S.
        masks: optional (layers, T, S, S) per-frame alignment masks in [0, 1]; frames are dimmed outside them and
            the patches where a mask is >= 0.5 are outlined.
        scale: integer enlargement of every frame (nearest neighbour, so patches stay sharp); default: the smallest
            that makes a frame at least `MIN_TILE_PIXELS` wide.
        gap: pixels between frames and rows.
        row_labels: one label per row (e.g. "layer 0"), written in a left margin; None for no margin.
        column_labels: one label per frame (e.g. "frame 3"), written above the columns; None for none.
        title: a line above the picture, followed by a legend of the markers (and of the mask); None for neither.
        marker_radius: radius of the point markers in output pixels (default: a quarter patch, at least 3).
        font_size: text height in pixels.

    Returns:
        An RGB image of width `margin + T * W * scale + (T - 1) * gap` and height
        `header + column header + layers * H * scale + (layers - 1) * gap`; margin, header and column header are 0
        without row labels, title and column labels.
    """
    frames, points, masks = _checked_inputs(frames, points, grid_size, masks, row_labels, column_labels)
    (num_rows, num_pairs), image_size = points.shape[:2], frames.shape[1]
    scale = scale if scale is not None else max(1, math.ceil(MIN_TILE_PIXELS / image_size))
    layout = _layout(image_size, scale, gap, font_size, row_labels, column_labels, title, masks)
    radius = marker_radius if marker_radius is not None else max(3, layout.tile // grid_size // 4)
    pixels = point_to_pixel(points, image_size, grid_size)  # (rows, P, 2, 2) in frame pixels

    canvas = Image.new("RGB", layout.size(num_rows, num_pairs + 1), BACKGROUND_COLOUR)
    draw, font = ImageDraw.Draw(canvas), _font(font_size)
    if title is not None:
        draw.text((layout.margin, 4), title, fill=TEXT_COLOUR, font=_font(round(1.2 * font_size)))
        _draw_legend(draw, layout.margin, 4 + round(1.6 * font_size), font_size, masks is not None)
    for column, label in enumerate(column_labels or ()):
        left, top = layout.tile_origin(0, column)
        draw.text((left + layout.tile // 2, top - 4), label, fill=TEXT_COLOUR, font=font, anchor="md")
    for row in range(num_rows):
        if row_labels is not None:
            left, top = layout.tile_origin(row, 0)
            centre = (font_size // 2, top + layout.tile // 2)
            draw.text(centre, row_labels[row], fill=TEXT_COLOUR, font=font, anchor="lm")
        for column in range(num_pairs + 1):
            _draw_tile(
                canvas,
                layout.tile_origin(row, column),
                frames[column],
                scale,
                grid_size,
                None if masks is None else masks[row, column],
                pixels[row, column, 0] if column < num_pairs else None,  # pair (t, t+1): this frame is the earlier
                pixels[row, column - 1, 1] if column > 0 else None,  # pair (t-1, t): this frame is the later
                radius,
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
    scale: int | None = None,
    title: str | None = None,
    frame_numbers: Sequence[int] | None = None,
) -> Path:
    """
    Process `video` (a path, URL or frames) with `video_processor`, run `model`, and save a PNG of the interactive
    points (and alignment masks) of the chosen layers on the processed frames, with a legend.

    Args:
        layers: "all", "last", or layer indices.
        title: the picture's first line (default: "ILA interactive points").
        frame_numbers: the video's frame index of each processed frame, written above the columns (default: the
            position in the clip).
    """
    pixel_values = video_processor(video, return_tensors="pt")["pixel_values"][0]  # (T, 3, H, W)
    points, masks = interactive_points_and_masks(model, pixel_values)
    num_layers = points.shape[0]
    chosen = list(range(num_layers)) if layers == "all" else [num_layers - 1] if layers == "last" else list(layers)
    frames = pixel_values_to_frames(pixel_values, video_processor.image_mean, video_processor.image_std)
    numbers = frame_numbers if frame_numbers is not None else range(len(frames))
    image = draw_interactive_points(
        frames,
        points[chosen],
        model.config.image_size // model.config.patch_size,
        masks=masks[chosen] if with_masks else None,
        scale=scale,
        row_labels=[f"layer {index}" for index in chosen],
        column_labels=[f"frame {number}" for number in numbers],
        title=title if title is not None else "ILA interactive points",
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


# ------------------------------------------------------------------------------------------------------ curves
CURVE_COLOURS = ((0, 200, 255), (255, 140, 40), (140, 230, 90), (240, 80, 160))


def _draw_panel(draw, box, series, y_range, y_label, x_count, font_size, y_format):
    """One plot: `series` [(colour, values per epoch)] in `box` (left, top, right, bottom), y on `y_range`."""
    font = _font(font_size)
    left, top, right, bottom = box
    low, high = y_range
    draw.rectangle(box, outline=GRID_COLOUR, width=1)
    for tick in np.linspace(low, high, 5):
        y = bottom - (tick - low) / (high - low) * (bottom - top)
        draw.line([(left, y), (right, y)], fill=(50, 50, 50), width=1)
        draw.text((left - 6, y), y_format(tick), fill=NOTE_COLOUR, font=font, anchor="rm")
    step = max(1, round(x_count / 8))
    for epoch in range(0, x_count, step):
        x = left + (epoch + 0.5) / x_count * (right - left)
        draw.text((x, bottom + 6), str(epoch + 1), fill=NOTE_COLOUR, font=font, anchor="mt")
    draw.text(((left + right) / 2, bottom + 8 + font_size), "epoch", fill=NOTE_COLOUR, font=font, anchor="mt")
    draw.text((left, top - 6), y_label, fill=TEXT_COLOUR, font=font, anchor="ld")
    for colour, values in series:
        xy = [
            (left + (epoch + 0.5) / x_count * (right - left), bottom - (value - low) / (high - low) * (bottom - top))
            for epoch, value in enumerate(values)
        ]
        draw.line(xy, fill=colour, width=3)
        for x, y in xy:
            draw.ellipse([x - 4, y - 4, x + 4, y + 4], fill=colour)


def draw_training_curves(
    histories: dict[str, Sequence[dict]],
    *,
    title: str | None = None,
    chance: float | None = None,
    font_size: int = 18,
    panel_size: tuple[int, int] = (560, 340),
) -> Image.Image:
    """
    Training loss and training top-1 accuracy per epoch of one or more runs, side by side.

    Args:
        histories: run name -> `TrainingResult.history` (entries with "epoch", "train_loss", "train_top1"; a
            validated epoch's held-out "top1" is drawn as a hollow marker on the accuracy panel).
        title: a line above the panels.
        chance: accuracy of guessing, drawn as a dashed line.
        font_size: text height in pixels.
        panel_size: (width, height) of each plot area.
    """
    if not histories or any(not history for history in histories.values()):
        epochs = {name: len(history) for name, history in histories.items()}
        raise ValueError(f"Expected at least one run with at least one epoch, got epochs per run {epochs}.")
    epochs = max(len(history) for history in histories.values())
    losses = [entry["train_loss"] for history in histories.values() for entry in history]
    width, height = panel_size
    margin_left, margin_top, margin_bottom = 5 * font_size, round(5.5 * font_size), 3 * font_size
    between = 6 * font_size  # the accuracy panel's tick labels
    size = (margin_left + 2 * width + between + font_size, margin_top + height + margin_bottom)
    canvas = Image.new("RGB", size, BACKGROUND_COLOUR)
    draw, font = ImageDraw.Draw(canvas), _font(font_size)
    if title is not None:
        draw.text((margin_left, 6), title, fill=TEXT_COLOUR, font=_font(round(1.2 * font_size)))
    x = margin_left  # legend: one colour per run
    for colour, name in zip(CURVE_COLOURS, histories):
        draw.line([(x, 2.6 * font_size), (x + 2 * font_size, 2.6 * font_size)], fill=colour, width=3)
        draw.text((x + 2.5 * font_size, 2.6 * font_size), name, fill=TEXT_COLOUR, font=font, anchor="lm")
        x += round(font.getlength(name)) + 5 * font_size
    loss_box = (margin_left, margin_top, margin_left + width, margin_top + height)
    accuracy_box = (loss_box[2] + between, margin_top, loss_box[2] + between + width, margin_top + height)
    series = list(zip(CURVE_COLOURS, histories.values()))
    _draw_panel(
        draw, loss_box, [(colour, [entry["train_loss"] for entry in history]) for colour, history in series],
        (0.0, math.ceil(max(losses) * 4 + 0.01) / 4), "training loss", epochs, font_size, lambda value: f"{value:.2f}",
    )
    _draw_panel(
        draw, accuracy_box, [(colour, [entry["train_top1"] for entry in history]) for colour, history in series],
        (0.0, 1.0), "training accuracy (top-1)", epochs, font_size, lambda value: f"{value:.0%}",
    )
    left, top, right, bottom = accuracy_box
    if chance is not None:
        y = bottom - chance * (bottom - top)
        for start in range(left, right, 16):
            draw.line([(start, y), (min(start + 8, right), y)], fill=NOTE_COLOUR, width=2)
        draw.text((right - 4, y - 4), f"chance {chance:.0%}", fill=NOTE_COLOUR, font=font, anchor="rd")
    for colour, history in series:  # held-out accuracy where an epoch was validated
        for entry in history:
            if "top1" in entry:
                x = left + (entry["epoch"] + 0.5) / epochs * (right - left)
                y = bottom - entry["top1"] * (bottom - top)
                draw.rectangle([x - 7, y - 7, x + 7, y + 7], outline=colour, width=3)
    if any("top1" in entry for history in histories.values() for entry in history):
        note = "hollow square: held-out accuracy"
        draw.text((right, 2.6 * font_size), note, fill=NOTE_COLOUR, font=font, anchor="rm")
    return canvas


__all__ = [
    "draw_interactive_points",
    "draw_training_curves",
    "interactive_points_and_masks",
    "pixel_values_to_frames",
    "point_to_pixel",
    "save_interactive_points",
]
