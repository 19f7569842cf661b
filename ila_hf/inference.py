"""Classify videos with an ILA model: one or several views per video, each view's softmax averaged."""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch

from .video_io import VideoDecodeError, VideoSource, video_name


@dataclass
class VideoPrediction:
    """The top classes of one video, or the reason it could not be classified."""

    video: str
    labels: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict:
        if self.error is not None:
            return {"video": self.video, "error": self.error}
        return {
            "video": self.video,
            "predictions": [{"label": label, "score": score} for label, score in zip(self.labels, self.scores)],
        }


@torch.no_grad()
def view_probabilities(model, pixel_values: torch.Tensor, max_batch_size: int = 16) -> torch.Tensor:
    """
    Class probabilities of each video: the mean over its views of each view's softmax (the released multi-view
    protocol sums them; the ranking is the same).

    Args:
        model: an `ILAForVideoClassification` (or any video classifier with `.logits`, e.g. one prepared by
            accelerate), in eval mode.
        pixel_values: (B, T, C, H, W) for one view, or (B, V, T, C, H, W) for V views per video, on the model's
            device and in its dtype.
        max_batch_size: clips per forward pass.

    Returns:
        (B, num_labels) float32 probabilities.
    """
    if pixel_values.ndim == 5:
        pixel_values = pixel_values.unsqueeze(1)
    if pixel_values.ndim != 6:
        raise ValueError(
            f"Expected pixel_values of shape (B, T, C, H, W) or (B, V, T, C, H, W), got {tuple(pixel_values.shape)}."
        )
    batch_size, num_views = pixel_values.shape[:2]
    clips = pixel_values.flatten(0, 1)
    logits = torch.cat([model(pixel_values=chunk).logits for chunk in clips.split(max_batch_size)])
    return logits.float().softmax(dim=-1).unflatten(0, (batch_size, num_views)).mean(dim=1)


def classify_videos(
    model,
    video_processor,
    videos: Iterable[VideoSource],
    top_k: int = 5,
    num_clips: int = 1,
    num_crops: int = 1,
) -> Iterator[VideoPrediction]:
    """
    Classify videos one by one; a video that cannot be decoded yields a `VideoPrediction` with `error` set instead of
    stopping the others. Each prediction names its video by `video_io.video_name` (the path or URL, a `datasets`
    dict's path, else e.g. `<1234 bytes>`).

    Args:
        model: an `ILAForVideoClassification` in eval mode.
        video_processor: its `ILAVideoProcessor`.
        videos: any inputs `video_io.load_video` reads (paths, URLs, bytes, file objects, `datasets` video dicts).
        top_k: classes reported per video (clipped to the number of labels).
        num_clips, num_crops: views per video; 4 and 3 reproduce the published 4 x 3 protocol.
    """
    top_k = min(top_k, model.config.num_labels)
    for video in videos:
        try:
            pixel_values = video_processor(
                video, num_clips=num_clips, num_crops=num_crops, return_tensors="pt"
            ).pixel_values
        except VideoDecodeError as error:
            yield VideoPrediction(video=video_name(video), error=str(error))
            continue
        probabilities = view_probabilities(model, pixel_values.to(model.device, model.dtype))[0]
        scores, indices = probabilities.topk(top_k)
        yield VideoPrediction(
            video=video_name(video),
            labels=[model.config.id2label[index] for index in indices.tolist()],
            scores=scores.tolist(),
        )
