"""Shared fixtures. Each section belongs to one area; add fixtures to your own section."""

# ---------------------------------------------------------------- model
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection


SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"
TINY_CLIP_VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=64,
    patch_size=16,
    projection_dim=64,
)


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A randomly initialised CLIPVisionModelWithProjection (64x64 images, 4x4 patch grid) saved with save_pretrained."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_clip")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**TINY_CLIP_VISION)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def clip_tokenizer_dir() -> Path:
    """CLIP's real BPE tokenizer, shipped in shared/ for offline tests."""
    return SHARED_DIR / "clip_tokenizer"
