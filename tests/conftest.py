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
