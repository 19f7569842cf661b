"""Video processor for ILA: sampling, decoding and preprocessing exactly as the released evaluation.

Shipped as Hub remote code together with its flat sibling imports ``sampling.py``, ``video_io.py`` and
``transforms.py``, which import nothing from ``ila_hf`` itself.
"""

import math
from typing import Annotated, Literal

import numpy as np
import torch
from huggingface_hub.dataclasses import validate_typed_dict
from transformers.image_processing_utils import BatchFeature, get_size_dict
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PILImageResampling,
    SizeDict,
)
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.utils import TensorType
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import (
    VideoInput,
    VideoMetadata,
    group_videos_by_shape,
    make_batched_metadata,
    make_batched_videos,
    reorder_videos,
)

from .sampling import sample_frame_indices
from .transforms import crop_to_aspect_ratio, resize_scale, three_crop
from .video_io import is_video_source, load_video


__all__ = ["ILAVideoProcessor", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]


# Bounds on the processor's settings, checked when it is built or loaded and whenever a call overrides them, before
# any frame is decoded; far above the released protocol (up to 32 frames, 4 clips x 3 crops, 336-pixel crops).
MAX_FRAMES = 1024  # num_frames
MAX_CLIPS = 64  # num_clips
MAX_SIDE = 2048  # every side in `size` and `crop_size`
MAX_PIXELS_PER_VIDEO = 2**27  # num_clips * num_frames * (largest side)^2: 4 x 32 frames at 384 need 2**24.2
_SIZE_KEYS = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")


def _sides(size) -> list[int]:
    """The pixel sides in a `size` / `crop_size` given as a dict or a `SizeDict`."""
    entries = size if isinstance(size, dict) else vars(size) if size is not None else {}
    return [entries[key] for key in _SIZE_KEYS if entries.get(key) is not None]


def _check_settings(settings: dict) -> None:
    """Raise ValueError naming the first setting out of bounds (see MAX_FRAMES and the others above)."""
    for name, limit in (("num_frames", MAX_FRAMES), ("num_clips", MAX_CLIPS)):
        value = settings[name]
        if value is not None and not 1 <= value <= limit:
            raise ValueError(f"ILAVideoProcessor: {name} must be in [1, {limit}], got {value}.")
    largest_side = 0
    for name in ("size", "crop_size"):
        for side in _sides(settings[name]):
            if not 1 <= side <= MAX_SIDE:
                raise ValueError(
                    f"ILAVideoProcessor: every side in {name} must be in [1, {MAX_SIDE}] pixels, got {side}."
                )
            largest_side = max(largest_side, side)
    frames = (settings["num_frames"] or 1) * (settings["num_clips"] or 1)
    if frames * largest_side**2 > MAX_PIXELS_PER_VIDEO:
        raise ValueError(
            f"ILAVideoProcessor: {frames} frames per video (num_clips x num_frames) at up to {largest_side} pixels a "
            f"side exceed {MAX_PIXELS_PER_VIDEO} pixels per video; use fewer frames or smaller sizes."
        )
    for name in ("image_mean", "image_std"):
        values = settings[name]
        values = [values] if isinstance(values, (int, float)) else list(values or [])
        if not all(isinstance(value, (int, float)) and math.isfinite(value) for value in values):
            raise ValueError(f"ILAVideoProcessor: {name} must hold finite numbers, got {settings[name]}.")
        if name == "image_std" and not all(value > 0 for value in values):
            raise ValueError(
                f"ILAVideoProcessor: image_std divides the pixels, so it must be > 0, got {settings[name]}."
            )
    factor = settings["rescale_factor"]
    if factor is not None and not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"ILAVideoProcessor: rescale_factor must be a positive number, got {factor}.")


_CHECKED_SETTINGS = ("num_frames", "num_clips", "size", "crop_size", "image_mean", "image_std", "rescale_factor")


def _at_least_one(value) -> None:
    # Types are checked by the annotation; this only bounds the value (missing keys arrive as a sentinel).
    if isinstance(value, int) and value < 1:
        raise ValueError(f"Value must be an integer >= 1, got {value!r}")


class ILAVideoProcessorKwargs(VideosKwargs, total=False):
    r"""
    sampling (`str`, *optional*, defaults to `"segment"`):
        Frame sampling plan: `"segment"` (TSN: the middle frame of each of `num_frames` equal segments, the
        released rule) or `"dense"` (`num_frames` frames `frame_interval` apart, centred).
    frame_interval (`int`, *optional*, defaults to 1):
        Step between frames for `sampling="dense"`.
    num_clips (`int`, *optional*, defaults to 1):
        Temporal views per video (the released test protocol uses 4).
    num_crops (`int`, *optional*, defaults to 1):
        Spatial views per clip: 1 (short side resized to `size["shortest_edge"]`, centre crop) or 3 (short side
        resized to the crop size, three crops along the long side).
    """

    sampling: Literal["segment", "dense"]
    frame_interval: Annotated[int, _at_least_one]
    num_clips: Annotated[int, _at_least_one]
    num_crops: Literal[1, 3]


def _batch_of_videos(videos: VideoInput) -> list:
    """A list of videos, each an encoded video (see `video_io.is_video_source`) or a decoded (T, ...) array."""
    if is_video_source(videos):
        return [videos]
    if isinstance(videos, (list, tuple)) and any(is_video_source(video) for video in videos):
        return [
            batched
            for video in videos
            for batched in ([video] if is_video_source(video) else make_batched_videos(video))
        ]
    return make_batched_videos(videos)


class ILAVideoProcessor(BaseVideoProcessor):
    r"""
    Turns videos into ILA's `pixel_values`, as the released evaluation pipeline does.

    1. Sampling (`do_sample_frames=True`): `num_frames` frame indices per temporal view from `sampling.py`
       (`"segment"`: the middle frame of each TSN segment; deterministic). With `num_clips > 1` the views follow
       the deterministic multi-view rule.
    2. Decoding: encoded videos (paths, http(s) URLs, bytes, file objects, `datasets` video dicts, torchcodec
       decoders) are decoded by `video_io.load_video` (only the sampled frames, seeking in long files); arrays,
       tensors and lists of PIL images are indexed.
    3. Short side resized to `size["shortest_edge"]` (`int(256 / 224 * crop)`: 256 for 224), centre crop to
       `crop_size`; or with `num_crops=3`, short side resized to the crop size and three crops along the long side.
       Frames longer than `transforms.MAX_ASPECT_RATIO` (4) times their short side are first centre-cropped to that
       ratio, which bounds the resized frames (a 16384x4 video would otherwise become 256 x 1M pixels a frame).
    4. Rescale by 1/255 and normalise with `image_mean` / `image_std`: ImageNet statistics by default (the released
       recipe's (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375) on 0-255 pixels); `OPENAI_CLIP_MEAN` /
       `OPENAI_CLIP_STD` (exported here) for CLIP's.

    Inputs: one video or a list of them (a batch; videos may differ in length and size), each a path or http(s) URL,
    the encoded bytes (`bytes`, `bytearray`, `memoryview`), a binary file object, a `datasets` video dict
    `{"path": ..., "bytes": ...}`, a torchcodec `VideoDecoder`, a (T, H, W, 3) / (T, 3, H, W) array or tensor, or
    a list of PIL images. `video_metadata`, if given, describes the decoded (array) videos; encoded ones are
    described by their container.

    Returns a `BatchFeature` with `pixel_values` of shape (B, T, 3, H, W), or (B, V, T, 3, H, W) with
    V = `num_clips * num_crops` > 1 views, ordered clip by clip and crop by crop within a clip.

    Passing only `crop_size` (e.g. 336) derives `size` as `{"shortest_edge": int(256 / 224 * crop)}`.

    Bounds, checked when the processor is built or loaded and on every call that overrides a setting, before any
    frame is decoded (a ValueError naming the setting, the value and the allowed range): `num_frames` in [1, 1024],
    `num_clips` in [1, 64], every side of `size` and `crop_size` in [1, 2048] pixels, num_clips x num_frames x
    (largest side)^2 at most 2^27 pixels per video, `image_mean` / `image_std` / `rescale_factor` finite, with
    `image_std` and `rescale_factor` > 0.
    """

    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": resize_scale(224)}
    crop_size = {"height": 224, "width": 224}
    default_to_square = False
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 8
    sampling = "segment"
    frame_interval = 1
    num_clips = 1
    num_crops = 1
    valid_kwargs = ILAVideoProcessorKwargs
    model_input_names = ["pixel_values"]

    def __init__(self, **kwargs: Unpack[ILAVideoProcessorKwargs]):
        if kwargs.get("crop_size") is not None and kwargs.get("size") is None:
            crop = get_size_dict(kwargs["crop_size"], param_name="crop_size")
            kwargs["size"] = {"shortest_edge": resize_scale(min(crop["height"], crop["width"]))}
        super().__init__(**kwargs)
        _check_settings({name: getattr(self, name) for name in _CHECKED_SETTINGS})

    @classmethod
    def for_config(cls, config, num_frames: int | None = None) -> "ILAVideoProcessor":
        """
        The released evaluation preprocessing for a model: `num_frames` segments (default `config.num_frames`),
        short side resized to `int(256 / 224 * image_size)`, centre crop to `config.image_size`, ImageNet statistics.
        `config` is any object with `image_size` (and `num_frames`), e.g. an `ILAVideoConfig`.
        """
        size = config.image_size
        num_frames = config.num_frames if num_frames is None else num_frames
        return cls(num_frames=num_frames, crop_size={"height": size, "width": size})

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: int | float | None = None,
        sampling: str | None = None,
        frame_interval: int | None = None,
        num_clips: int | None = None,
        **kwargs,
    ) -> np.ndarray:
        """
        Frame indices for one video: (T,), or (num_clips, T) when `num_clips > 1`. Deterministic.

        Args:
            metadata (`VideoMetadata`): needs `total_num_frames`.
            num_frames (`int`, *optional*): frames per view, defaults to `self.num_frames`.
            fps: refused. The model takes exactly `config.num_frames` frames per clip (the MIT has one position
                embedding per frame), a count that sampling at a frame rate cannot guarantee; pass `num_frames`.
            sampling, frame_interval, num_clips: default to the processor's attributes.
        """
        if fps is not None:
            raise ValueError(
                f"`fps={fps}` sampling is not supported: an ILA model takes exactly num_frames frames per clip (its "
                f"config.num_frames), which a frame rate cannot guarantee; leave fps unset and pass "
                f"num_frames=<the model's config.num_frames> (this processor's default is {self.num_frames})."
            )
        return sample_frame_indices(
            metadata.total_num_frames,
            num_frames if num_frames is not None else self.num_frames,
            sampling if sampling is not None else self.sampling,
            frame_interval=frame_interval if frame_interval is not None else self.frame_interval,
            num_clips=num_clips if num_clips is not None else self.num_clips,
        )

    def preprocess(self, videos: VideoInput, **kwargs: Unpack[ILAVideoProcessorKwargs]) -> BatchFeature:
        validate_typed_dict(self.valid_kwargs, kwargs)  # types first (the base checks again), then the bounds
        _check_settings(
            {name: kwargs[name] if kwargs.get(name) is not None else getattr(self, name) for name in _CHECKED_SETTINGS}
        )
        do_sample_frames = kwargs.get("do_sample_frames", self.do_sample_frames)
        num_clips = kwargs.get("num_clips", self.num_clips)
        if isinstance(num_clips, int) and num_clips > 1 and not do_sample_frames:
            raise ValueError(
                f"num_clips={num_clips} temporal views are made by frame sampling, but do_sample_frames is off; "
                "pass do_sample_frames=True, or num_clips=1 to process the given frames as one clip."
            )
        return super().preprocess(videos, **kwargs)

    def _decode_and_sample_videos(
        self,
        videos: VideoInput,
        video_metadata: VideoMetadata | dict | None,
        do_sample_frames: bool | None = None,
        sample_indices_fn=None,
    ) -> tuple[list[np.ndarray | torch.Tensor], list[VideoMetadata]]:
        """
        Decode encoded videos (only the sampled frames) and sample decoded ones. Each video comes out with its views
        flattened into the frame axis: (num_clips * T, ...), split again in `_preprocess`.
        """
        videos = _batch_of_videos(videos)
        in_memory = [video for video in videos if not is_video_source(video)]
        in_memory_metadata = iter(make_batched_metadata(in_memory, video_metadata) if in_memory else [])
        sampled_videos, sampled_metadata = [], []
        for video in videos:
            if is_video_source(video):
                frames, metadata = load_video(video, sample_indices_fn)
            else:
                metadata = next(in_memory_metadata)
                frames = video
                if do_sample_frames:
                    metadata.frames_indices = sample_indices_fn(metadata=metadata)
                    frames = video[torch.as_tensor(metadata.frames_indices).reshape(-1)]
            sampled_videos.append(frames.reshape(-1, *frames.shape[-3:]))
            sampled_metadata.append(metadata)
        return sampled_videos, sampled_metadata

    def _preprocess(
        self,
        videos: list[torch.Tensor],
        do_resize: bool,
        size: SizeDict,
        resample: PILImageResampling | None,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: float | list[float] | None,
        image_std: float | list[float] | None,
        num_clips: int,
        num_crops: int,
        return_tensors: str | TensorType | None = None,
        **kwargs,
    ) -> BatchFeature:
        if num_crops == 3 and crop_size.height != crop_size.width:
            raise ValueError(f"num_crops=3 takes square crops; got crop_size {crop_size.height}x{crop_size.width}.")
        grouped_videos, grouped_videos_index = group_videos_by_shape(videos)
        processed_videos_grouped = {}
        for shape, stacked_videos in grouped_videos.items():  # (B, num_clips * T, C, H, W)
            batch_size, num_views_frames = stacked_videos.shape[:2]
            if num_views_frames % num_clips:
                raise ValueError(
                    f"Expected a multiple of num_clips={num_clips} frames per video, got {num_views_frames}."
                )
            if num_crops == 3:
                side = crop_size.height
                stacked_videos = crop_to_aspect_ratio(stacked_videos)
                stacked_videos = self.resize(stacked_videos, SizeDict(shortest_edge=side), resample=resample)
                stacked_videos = three_crop(stacked_videos, side).transpose(0, 1)  # (B, 3, num_clips * T, C, s, s)
            else:
                if do_resize:
                    stacked_videos = self.resize(crop_to_aspect_ratio(stacked_videos), size=size, resample=resample)
                if do_center_crop:
                    stacked_videos = self.center_crop(stacked_videos, crop_size)
                stacked_videos = stacked_videos.unsqueeze(1)  # (B, 1, num_clips * T, C, s, s)
            stacked_videos = self.rescale_and_normalize(
                stacked_videos, do_rescale, rescale_factor, do_normalize, image_mean, image_std
            )
            # (B, crops, clips * T, ...) -> (B, clips * crops, T, ...): views ordered clip-major.
            views = stacked_videos.unflatten(2, (num_clips, -1)).transpose(1, 2).flatten(1, 2)
            processed_videos_grouped[shape] = views[:, 0] if views.shape[1] == 1 else views
        processed_videos = reorder_videos(processed_videos_grouped, grouped_videos_index)
        return BatchFeature(data={"pixel_values": processed_videos}, tensor_type=return_tensors)
