"""Helpers shared by the test modules (test modules never import each other)."""

import io
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import torch

from ila_hf import ILAForVideoClassification, ILAVideoConfig
from tests.conftest import TINY_CLIP_VISION, TRAINING_CLASSES


REPO_ROOT = Path(__file__).resolve().parents[1]


def tiny_ila_config(**overrides) -> ILAVideoConfig:
    """A tiny `ILAVideoConfig` on the tiny CLIP vision tower of conftest (64x64 images, a 4x4 patch grid, 4 frames);
    overrides replace any setting."""
    return ILAVideoConfig(**{**TINY_CLIP_VISION, "num_frames": 4, **overrides})


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


def case_config(variant: str, head: str, **overrides) -> ILAVideoConfig:
    """A tiny model of one case; no dropout, so that train-mode steps are reproducible."""
    settings = dict(
        num_frames=CASE_FRAMES,
        interaction_variant=variant,
        head=head,
        interaction_channels=16,
        prompt_layers=1,
        classifier_dropout=0.0,
        id2label={0: "left", 1: "right", 2: "up"},
    )
    return tiny_ila_config(**{**settings, **overrides})


def case_model(variant: str, head: str, **overrides) -> ILAForVideoClassification:
    """A model whose alignment modules and head all change the output (nothing left at its zero initialisation)."""
    torch.manual_seed(0)
    model = ILAForVideoClassification(case_config(variant, head, **overrides))
    randomise_ila_modules(model)
    if head == "text":
        with torch.no_grad():
            model.head.class_embeddings.normal_()
    return model


def case_video(batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch_size, CASE_FRAMES, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------------ data
def tiny_video_files(tiny_video_dataset: Path) -> list[tuple[Path, int]]:
    """conftest's 12 tiny videos as (path, label id), in class order."""
    return [
        (tiny_video_dataset / "videos" / name / f"{name}_{copy}.mp4", label)
        for label, name in enumerate(TRAINING_CLASSES)
        for copy in range(2)
    ]


def write_tar_shards(folder: Path, videos: list[tuple[Path | bytes, int]], num_shards: int) -> None:
    """WebDataset shards: `<key>.mp4` (the video's bytes: a file's, or the given bytes) and `<key>.cls` (its label id)
    per example, example i in shard i % num_shards."""
    folder.mkdir()
    for shard in range(num_shards):
        with tarfile.open(folder / f"shard-{shard:05d}.tar", "w") as tar:
            for index, (video, label) in enumerate(videos[shard::num_shards]):
                content = video if isinstance(video, bytes) else video.read_bytes()
                for suffix, payload in (("mp4", content), ("cls", b"%d" % label)):
                    info = tarfile.TarInfo(f"{shard}_{index}.{suffix}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))


# ------------------------------------------------------------------------------------------------------ training
def tiny_run_arguments(data: Path, clip_dir: Path) -> list[str]:
    """The command-line flags that point a training entry point (`ila-hf train`, the examples) at conftest's tiny
    videos (12 to train on, 7 to validate on) and tiny CLIP, with 4 frames a clip."""
    return [
        *("--train-data", str(data / "train.txt"), "--validation-data", str(data / "val.txt")),
        *("--label-names", str(data / "labels.csv"), "--clip-model", str(clip_dir), "--num-frames", "4"),
    ]


def loop_settings(data: Path, clip_dir: Path, **kwargs) -> dict:
    """
    `TrainingConfig` arguments (JSON-serialisable, for the subprocess tests too): 2 epochs of 6 steps (12 videos,
    batch 2) on the tiny model, validated on 7 videos; kwargs override.
    """
    settings = dict(
        train_data=str(data / "train.txt"),
        validation_data=str(data / "val.txt"),
        label_names=str(data / "labels.csv"),
        clip_model=str(clip_dir),
        num_frames=4,
        epochs=2,
        warmup_epochs=1,
        batch_size=2,
        num_workers=0,
        checkpoint_every_steps=2,
        checkpoints_total_limit=2,
        export="last",
    )
    return {**settings, **kwargs}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


ACCELERATE_CONFIGS = REPO_ROOT / "examples" / "accelerate"  # the launcher configurations docs/distributed.md shows


def launch_two_processes(
    script: Path, arguments: list[str], config_file: Path = ACCELERATE_CONFIGS / "ddp.yaml"
) -> subprocess.CompletedProcess:
    """`accelerate launch --config_file config_file` `script` with `arguments` on 2 CPU processes (gloo, with the
    script's `--cpu`); asserts that it succeeded."""
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file),
        "--num_processes",
        "2",
        "--main_process_port",
        str(_free_port()),
        str(script),
        *arguments,
    ]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=600)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    return completed


def enable_fsdp_on_cpu() -> None:
    """
    Make accelerate run FSDP on CPU processes (gloo), for tests: call it in each launched process before the
    `Accelerator` is built. accelerate 1.15 selects FSDP only for accelerator devices; on CPU processes it silently
    falls back to `MULTI_CPU` (DDP) whatever the launcher configuration says. This sets the distributed type to FSDP
    after accelerate's own set-up, exactly where and how accelerate sets it for GPUs (`AcceleratorState.__init__`),
    so everything after it (wrapping, sharded checkpoints, state-dict gathering) is accelerate's and torch's own code.
    """
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    set_up = AcceleratorState.__init__

    def set_up_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
        set_up(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = PartialState._shared_state["distributed_type"] = DistributedType.FSDP
            self.fsdp_plugin = fsdp_plugin

    AcceleratorState.__init__ = set_up_with_fsdp_on_cpu
