"""The baseline ILA is measured against: CLIP frame averaging, with no temporal modelling (`ila-hf demo` trains it
next to ILA; `ila-hf benchmark` times it)."""

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPVisionModelWithProjection
from transformers.modeling_outputs import ImageClassifierOutput


class FrameAveragingClassifier(nn.Module):
    """
    Each frame through the CLIP vision tower on its own, the image embeddings averaged over time, then the same head as
    ILA's linear head (L2-normalise, LayerNorm, Linear). Permuting the frames cannot change its output.

    Args:
        clip: the CLIP vision tower with its projection.
        num_labels: classes.
        freeze_backbone: train only the head (as ILA's released recipe freezes CLIP).
    """

    def __init__(self, clip: CLIPVisionModelWithProjection, num_labels: int, freeze_backbone: bool = True):
        super().__init__()
        self.clip = clip
        self.config = clip.config  # image_size, projection_dim: what training and benchmarks read
        projection_dim = clip.config.projection_dim
        self.norm = nn.LayerNorm(projection_dim, eps=clip.config.layer_norm_eps)
        self.classifier = nn.Linear(projection_dim, num_labels)
        self.clip.requires_grad_(not freeze_backbone)

    @classmethod
    def from_clip(cls, clip_path: str | Path, num_labels: int, freeze_backbone: bool = True):
        """The baseline on a saved CLIP checkpoint (a vision tower with projection, or a full CLIP model)."""
        return cls(CLIPVisionModelWithProjection.from_pretrained(clip_path), num_labels, freeze_backbone)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        """pixel_values (B, T, 3, H, W), labels (B,) class ids or (B, K) soft targets -> loss, logits (B, K)."""
        batch_size, num_frames = pixel_values.shape[:2]
        frame_embeds = self.clip(pixel_values=pixel_values.flatten(0, 1)).image_embeds  # (B*T, E)
        video_embeds = frame_embeds.unflatten(0, (batch_size, num_frames)).mean(dim=1)  # (B, E)
        logits = self.classifier(self.norm(F.normalize(video_embeds, dim=-1)))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits)


__all__ = ["FrameAveragingClassifier"]
