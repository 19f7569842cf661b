"""Clip transforms of the released ILA recipe: training augmentation and evaluation crops.

Every transform maps a clip to a clip and draws its random parameters once per clip, so all
frames get the same crop, flip, colour change and erased box (a per-frame draw would break the
motion the model learns from). Pixel operations are torchvision's ``transforms.v2.functional``;
random parameters come from an optional ``torch.Generator`` passed to each call, which makes a
clip's augmentation a function of its seed.

Clips are ``(T, C, H, W)`` tensors, ``uint8`` in ``[0, 255]`` or floating point in ``[0, 1]``.
`TrainClipTransform` and `EvalClipTransform` also take ``(T, H, W, 3)`` ``uint8`` numpy arrays as
``video_io.load_video`` returns them, and end with ImageNet normalisation.

Imports only numpy, torch, torchvision and PIL: the video processor imports `three_crop` and
`resize_scale` from here, so this file travels with it as Hub remote code.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as tvF
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MULTI_SCALE_CROP_SCALES = (1.0, 0.875, 0.75, 0.66)

MAX_ASPECT_RATIO = 4.0
"""Longest side / shortest side of a frame before it is resized; longer frames are centre-cropped to it. Real
video stays well below (21:9 is 2.33, 32:9 is 3.56); a 16384x4 frame would otherwise be resized to 256 x 1M pixels.
The resized frame of a short side ``s`` therefore has at most ``4 * s * s`` pixels."""


def resize_scale(crop_size: int) -> int:
    """Short side before cropping in the released recipe: ``int(256 / 224 * crop_size)`` (256 for 224)."""
    return int(256 / 224 * crop_size)


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return float(torch.empty(1).uniform_(low, high, generator=generator))


def _bernoulli(p: float, generator: torch.Generator | None) -> bool:
    return p > 0 and float(torch.rand(1, generator=generator)) < p


def _choice(options: Sequence, generator: torch.Generator | None):
    return options[int(torch.randint(len(options), (1,), generator=generator))]


def to_clip_tensor(clip: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(T, H, W, 3) numpy frames or a (T, 3, H, W) tensor -> (T, 3, H, W) tensor (no copy when possible)."""
    if isinstance(clip, np.ndarray):
        if clip.ndim != 4 or clip.shape[-1] != 3:
            raise ValueError(f"Expected numpy frames of shape (T, H, W, 3), got {clip.shape}.")
        return torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)
    if clip.ndim != 4 or clip.shape[1] != 3:
        raise ValueError(f"Expected a clip tensor of shape (T, 3, H, W), got {tuple(clip.shape)}.")
    return clip


def _to_float(clip: torch.Tensor) -> torch.Tensor:
    return tvF.to_dtype(clip, torch.float32, scale=True)


def crop_to_aspect_ratio(clip: torch.Tensor, max_aspect_ratio: float = MAX_ASPECT_RATIO) -> torch.Tensor:
    """
    The centre of each frame, with the long side cut to at most ``max_aspect_ratio`` times the short side; frames
    within the ratio come back as they are. A view, no copy.

    Args:
        clip: (..., H, W).
    """
    height, width = clip.shape[-2:]
    longest = max(1, math.floor(min(height, width) * max_aspect_ratio))
    if width > longest:
        left = (width - longest) // 2
        return clip[..., left : left + longest]
    if height > longest:
        top = (height - longest) // 2
        return clip[..., top : top + longest, :]
    return clip


class ResizeShortSide:
    """Resize every frame so that its short side is ``size`` (aspect ratio kept), after `crop_to_aspect_ratio`:
    frames longer than `MAX_ASPECT_RATIO` times their short side lose the ends of their long side."""

    def __init__(self, size: int, interpolation: InterpolationMode = InterpolationMode.BILINEAR):
        self.size = size
        self.interpolation = interpolation

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return tvF.resize(crop_to_aspect_ratio(clip), [self.size], interpolation=self.interpolation, antialias=True)


class CenterCrop:
    """The central ``size`` x ``size`` square (zero-padded if a frame is smaller)."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return tvF.center_crop(clip, [self.size, self.size])


def three_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    """
    Three ``size`` x ``size`` squares at the start, centre and end of the long side.

    Args:
        clip: (..., H, W) with ``min(H, W) >= size`` (resize the short side to ``size`` first).

    Returns:
        `torch.Tensor`: (3, ..., size, size), ordered start, centre, end (top/left first).
    """
    height, width = clip.shape[-2:]
    if min(height, width) < size:
        raise ValueError(f"three_crop needs frames at least {size} pixels on each side, got {height}x{width}.")
    if width >= height:
        top = (height - size) // 2
        positions = [(top, 0), (top, (width - size) // 2), (top, width - size)]
    else:
        left = (width - size) // 2
        positions = [(0, left), ((height - size) // 2, left), (height - size, left)]
    return torch.stack([clip[..., top : top + size, left : left + size] for top, left in positions])


class MultiScaleCrop:
    """
    TSN multi-scale corner cropping, then a resize to ``size`` x ``size``.

    Crop sides are ``int(min(H, W) * s)`` for ``s`` in ``scales``; the crop's width and height are
    drawn from pairs of scale indices at most ``max_aspect_gap`` apart (so the aspect ratio is
    distorted a little), and a side within 3 pixels of ``size`` snaps to ``size``. The crop sits at
    one of five fixed positions: the four corners or the centre (on a grid of quarter steps of the
    free space).

    Args:
        size: output side.
        scales: relative crop sides (the released recipe's ``(1, .875, .75, .66)``).
        max_aspect_gap: largest difference between the scale indices of width and height.
    """

    def __init__(
        self,
        size: int,
        scales: Sequence[float] = MULTI_SCALE_CROP_SCALES,
        max_aspect_gap: int = 1,
        interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    ):
        self.size = size
        self.scales = tuple(scales)
        self.max_aspect_gap = max_aspect_gap
        self.interpolation = interpolation

    def crop_box(self, height: int, width: int, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
        """A random ``(top, left, crop_height, crop_width)`` for frames of ``height`` x ``width``."""
        sides = [int(min(height, width) * scale) for scale in self.scales]
        candidates = [
            (crop_height, crop_width)
            for i, crop_height in enumerate(sides)
            for j, crop_width in enumerate(sides)
            if abs(i - j) <= self.max_aspect_gap
        ]
        crop_height, crop_width = (
            self.size if abs(side - self.size) < 3 else side for side in _choice(candidates, generator)
        )
        crop_height, crop_width = min(crop_height, height), min(crop_width, width)
        step_y, step_x = (height - crop_height) // 4, (width - crop_width) // 4
        offsets = [(0, 0), (0, 4 * step_x), (4 * step_y, 0), (4 * step_y, 4 * step_x), (2 * step_y, 2 * step_x)]
        top, left = _choice(offsets, generator)
        return top, left, crop_height, crop_width

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        top, left, crop_height, crop_width = self.crop_box(*clip.shape[-2:], generator)
        size = [self.size, self.size]
        return tvF.resized_crop(
            clip, top, left, crop_height, crop_width, size, interpolation=self.interpolation, antialias=True
        )


class RandomHorizontalFlip:
    """Mirror the whole clip with probability ``p`` (use ``p=0`` where direction is the label, e.g. SSv2)."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return tvF.horizontal_flip(clip) if _bernoulli(self.p, generator) else clip


class RandomColorJitter:
    """
    With probability ``p``, jitter brightness, contrast, saturation and hue in a random order, with
    one set of factors for the whole clip (factors uniform in ``[1 - x, 1 + x]``, hue shift in
    ``[-hue, hue]``). The released code applied torchvision's ColorJitter frame by frame, i.e. with
    different factors per frame; one draw per clip keeps the frames consistent.

    ``uint8`` clips are adjusted frame by frame as PIL images, exactly as the released pipeline
    did (its 8-bit kernels, and a hue kernel >10x faster than torchvision's tensor one); float
    clips use torchvision's tensor kernels.
    """

    def __init__(
        self,
        p: float = 0.8,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.2,
        hue: float = 0.1,
    ):
        self.p = p
        self.brightness = brightness
        self.contrast = contrast
        self.saturation = saturation
        self.hue = hue

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not _bernoulli(self.p, generator):
            return clip
        adjustments = [
            (tvF.adjust_brightness, _uniform(max(0.0, 1 - self.brightness), 1 + self.brightness, generator)),
            (tvF.adjust_contrast, _uniform(max(0.0, 1 - self.contrast), 1 + self.contrast, generator)),
            (tvF.adjust_saturation, _uniform(max(0.0, 1 - self.saturation), 1 + self.saturation, generator)),
            (tvF.adjust_hue, _uniform(-self.hue, self.hue, generator)),
        ]
        order = torch.randperm(len(adjustments), generator=generator).tolist()

        def jitter(image):
            for position in order:
                adjust, factor = adjustments[position]
                image = adjust(image, factor)
            return image

        if clip.dtype != torch.uint8:
            return jitter(clip)
        frames = np.ascontiguousarray(clip.permute(0, 2, 3, 1).cpu().numpy())
        jittered = np.stack([np.asarray(jitter(Image.fromarray(frame))) for frame in frames])
        return torch.from_numpy(jittered).permute(0, 3, 1, 2).to(clip.device)


class RandomGrayscale:
    """Convert the whole clip to grey (kept as 3 channels) with probability ``p``."""

    def __init__(self, p: float = 0.2):
        self.p = p

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return tvF.rgb_to_grayscale(clip, num_output_channels=3) if _bernoulli(self.p, generator) else clip


class Normalize:
    """``(clip - mean) / std`` per channel on a float clip in ``[0, 1]``."""

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.mean = list(mean)
        self.std = list(std)

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return tvF.normalize(clip, self.mean, self.std)


class RandomErasing:
    """
    With probability ``p``, erase one box, the same in every frame (a "tube"), on a normalised clip.

    The box covers a fraction of the frame uniform in ``scale`` with a log-uniform aspect ratio in
    ``ratio`` (10 tries, else nothing is erased). ``value="random"`` fills it with standard normal
    noise (timm's "pixel" mode, the same noise in every frame); a number fills it with that value
    (0 is the dataset mean after normalisation).
    """

    def __init__(
        self,
        p: float = 0.25,
        scale: tuple[float, float] = (0.02, 1 / 3),
        ratio: tuple[float, float] = (0.3, 1 / 0.3),
        value: float | str = "random",
    ):
        if value != "random" and not isinstance(value, (int, float)):
            raise ValueError(f"`value` must be a number or 'random', got {value!r}.")
        self.p = p
        self.scale = scale
        self.ratio = ratio
        self.value = value

    def __call__(self, clip: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if not _bernoulli(self.p, generator):
            return clip
        channels, height, width = clip.shape[-3:]
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            area = height * width * _uniform(*self.scale, generator)
            aspect = math.exp(_uniform(*log_ratio, generator))
            box_height, box_width = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if box_height < height and box_width < width:
                break
        else:
            return clip
        top = int(torch.randint(height - box_height + 1, (1,), generator=generator))
        left = int(torch.randint(width - box_width + 1, (1,), generator=generator))
        if self.value == "random":
            fill = torch.randn((channels, box_height, box_width), generator=generator).to(clip.dtype)
        else:
            fill = torch.tensor(float(self.value), dtype=clip.dtype)
        clip = clip.clone()
        clip[..., top : top + box_height, left : left + box_width] = fill
        return clip


class TrainClipTransform:
    """
    The released training augmentation: frames -> (T, 3, size, size) float, normalised.

    Short side resized to ``int(256 / 224 * size)``, `MultiScaleCrop` to ``size``, horizontal flip
    (``flip_p``), `RandomColorJitter` (p 0.8), `RandomGrayscale` (p 0.2), normalisation, then
    `RandomErasing` (p 0.25). Callable as ``transform(frames, generator)``, the ``ClipTransform``
    of ``ila_hf.data``.

    Args:
        size: output side (the model's image size).
        flip_p: horizontal flip probability (0 for Something-Something, whose labels say "left"/"right").
        color_jitter_p, grayscale_p, erasing_p: probabilities of those augmentations.
        color_jitter: (brightness, contrast, saturation, hue) strengths.
        scales: `MultiScaleCrop` scales.
        mean, std: normalisation on 0-1 pixels (ImageNet statistics, as released).
    """

    def __init__(
        self,
        size: int = 224,
        *,
        flip_p: float = 0.5,
        color_jitter_p: float = 0.8,
        color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1),
        grayscale_p: float = 0.2,
        erasing_p: float = 0.25,
        scales: Sequence[float] = MULTI_SCALE_CROP_SCALES,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        # The released order. Given uint8 frames, the pixel steps run in 8 bits as in the released pipeline.
        self.pixel_steps = [
            ResizeShortSide(resize_scale(size)),
            MultiScaleCrop(size, scales),
            RandomHorizontalFlip(flip_p),
            RandomColorJitter(color_jitter_p, *color_jitter),
            RandomGrayscale(grayscale_p),
        ]
        self.normalised_steps = [Normalize(mean, std), RandomErasing(erasing_p)]

    def __call__(self, clip: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(T, H, W, 3) numpy or (T, 3, H, W) tensor -> (T, 3, size, size) float32."""
        clip = to_clip_tensor(clip)
        for transform in self.pixel_steps:
            clip = transform(clip, generator)
        clip = _to_float(clip)
        for transform in self.normalised_steps:
            clip = transform(clip, generator)
        return clip


class EvalClipTransform:
    """
    The released single-view evaluation preprocessing: frames -> (T, 3, size, size) float, normalised: short side
    resized to ``int(256 / 224 * size)`` and the centre ``size`` x ``size`` crop. The same clips as `ILAVideoProcessor`
    (which also gives the multi-view protocol) computes from the same frames. Deterministic; ``generator`` is accepted
    and ignored so that both transforms share one call signature.
    """

    def __init__(self, size: int = 224, *, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.crops = [ResizeShortSide(resize_scale(size)), CenterCrop(size)]
        self.normalize = Normalize(mean, std)

    def __call__(self, clip: np.ndarray | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(T, H, W, 3) numpy or (T, 3, H, W) tensor -> (T, 3, size, size) float32."""
        clip = to_clip_tensor(clip)
        for transform in self.crops:
            clip = transform(clip)
        return self.normalize(_to_float(clip))
