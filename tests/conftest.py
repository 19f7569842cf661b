"""Shared fixtures. Each section belongs to one area; add fixtures to your own section."""

# ---------------------------------------------------------------- model
from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection


DATA_DIR = Path(__file__).resolve().parent / "data"
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


def randomise_ila_modules(model: torch.nn.Module, seed: int = 0) -> None:
    """Give the zero-initialised skip Linears and point head non-zero weights, so alignment affects the output, and
    the batch norms' running statistics (buffers) values other than 0 and 1."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if any(key in name for key in ("tokens_proj", "pair_fc2")):
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))


# One tiny ILA classifier per (interaction variant, head), for the conformance and export tests.
CASE_FRAMES = 3


def case_config(variant: str, head: str, **overrides):
    """A tiny model of one case; no dropout, so that train-mode steps are reproducible."""
    settings = dict(
        TINY_CLIP_VISION,
        num_frames=CASE_FRAMES,
        interaction_variant=variant,
        head=head,
        interaction_channels=16,
        prompt_layers=1,
        classifier_dropout=0.0,
        id2label={0: "left", 1: "right", 2: "up"},
    )
    from ila_hf import ILAVideoConfig

    return ILAVideoConfig(**{**settings, **overrides})


def case_model(variant: str, head: str, **overrides):
    """A model whose alignment modules and head all change the output (nothing left at its zero initialisation)."""
    from ila_hf import ILAForVideoClassification

    torch.manual_seed(0)
    model = ILAForVideoClassification(case_config(variant, head, **overrides))
    randomise_ila_modules(model)
    if head == "text":
        with torch.no_grad():
            model.head.class_embeddings.normal_()
    return model


def case_video(batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, CASE_FRAMES, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="session")
def clip_tokenizer_dir() -> Path:
    """CLIP's real BPE tokenizer, saved in tests/data/ for offline tests."""
    return DATA_DIR / "clip_tokenizer"


# ---------------------------------------------------------------- training
@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread, and much faster than on two when the machine is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TRAINING_CLASSES = ("archery", "bowling", "cycling", "diving", "juggling", "rowing")


@pytest.fixture(scope="session")
def tiny_video_dataset(tmp_path_factory) -> Path:
    """
    12 real mp4 videos (6 classes x 2, 16 frames of 64x48) in both layouts the data module reads:
    `videos/<class>/<class>_<i>.mp4` (one folder per class), `train.txt` (all 12, released `path label_id`
    format), `val.txt` (7 of them: an odd count) and `labels.csv` (`id,name`).
    """
    from tests.videos import write_video

    root = tmp_path_factory.mktemp("tiny_videos")
    lines = []
    for label, name in enumerate(TRAINING_CLASSES):
        (root / "videos" / name).mkdir(parents=True)
        for copy in range(2):
            relative = f"videos/{name}/{name}_{copy}.mp4"
            write_video(root / relative, num_frames=16, width=64, height=48)
            lines.append(f"{relative} {label}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text("\n".join(lines[::2] + lines[1:2]) + "\n")
    (root / "labels.csv").write_text("id,name\n" + "".join(f"{i},{name}\n" for i, name in enumerate(TRAINING_CLASSES)))
    return root


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch):
    """Keep `load_dataset`'s cache in the test's folder: `datasets.config` for this process (`datasets` reads the
    environment only when imported), the environment for processes the test starts."""
    monkeypatch.setattr("datasets.config.HF_DATASETS_CACHE", tmp_path / "cache")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------- videos
# Real files written with PyAV whose frames show their own index (see tests/videos.py).
from .videos import write_video  # noqa: E402


@pytest.fixture(scope="session")
def videos_dir(tmp_path_factory) -> Path:
    """A session-wide folder for test videos."""
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="session")
def clip_mp4(videos_dir) -> Path:
    """60 frames, 64x48, H.264 (with B-frames) in MP4, 25 fps; frame i shows index i."""
    return write_video(videos_dir / "clip.mp4", 60)


@pytest.fixture(scope="session")
def long_mp4(videos_dir) -> Path:
    """600 frames (24 s at 25 fps), 64x48, H.264 with a keyframe exactly every 25 frames."""
    return write_video(videos_dir / "long.mp4", 600, gop_size=25)
