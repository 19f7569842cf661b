"""The embedded demo (`ila-hf demo`): ILA against frame averaging on videos whose classes differ only in time order.

What it does, with nothing downloaded:

1. Writes a synthetic video dataset as real mp4 files (PyAV), one folder per class: a bright shape on a dark
   background moving left, right, up or down (optionally also growing / shrinking / turning clockwise /
   anticlockwise). Positions live on a torus (the shape wraps around the edges) and angles on the circle, both
   uniformly random, and sizes, shapes, colours and backgrounds are drawn independently of the class, so a single
   frame has the same distribution in every class. Classes come in time-reversed pairs: within a pair the frames of
   a video are equally likely in either order, so only their order tells left from right.
2. Saves a randomly initialised tiny CLIP vision tower and trains two classifiers on it with `ila_hf.train`, the
   loop of `ila-hf train` (`demo_training_config` is the recipe): ILA (`ILAForVideoClassification.from_clip`) and
   the `FrameAveragingClassifier` baseline (per-frame CLIP embeddings averaged over time, then the same head as
   ILA's linear head; no alignment and no temporal modelling). The same videos, clips, schedule, number of steps
   and head learning rate, on the CPU; prints their held-out accuracy, training time and the process's peak memory.
3. The loop exports ILA with its video processor; the demo classifies a held-out mp4 through
   `pipeline("video-classification", model=folder)`, draws the predicted interactive points and alignment masks on
   its frames and the two models' training curves (loss and accuracy per epoch, from the loop's history) as PNGs
   (`visualize.py`).

Why these defaults (each measured on this task, 4 classes, on a shared 2-core CPU):

- Alignment loss weight 0.03 instead of the released 1.0. From a random backbone the alignment loss (1 - cos of the
  pooled aligned tokens of adjacent frames) is minimised fastest by making the message tokens ignore the frame
  content, which also erases the motion the interaction block needs: at 1.0 or 0.1 ILA stayed at chance for the
  whole budget; at 0.01-0.03 it learns, and the points still get an alignment signal.
- Head and MIT learning rate 1e-4, alignment modules and temporal skip Linears 1e-3. The random CLIP's embeddings
  mostly encode each video's colours; a fast head (1e-2) keeps fitting those per batch, and ILA then stayed at chance
  (left vs right: 50% after 200 steps, against 100% after 50 steps at 1e-3 or 1e-4).
- A frozen CLIP backbone (as released). Training the random backbone too (lr 1e-3) reached 57% where the frozen one
  reached 84% with the same seed and steps, and each step was slower.
- 12 epochs of 1,200 videos (450 steps of 32 clips): seeds 0-3 gave 94.5-100% held-out accuracy; after 8 epochs
  the slowest seed was at 84%. ILA first learns the axis of the motion (50%) and then its direction.
- A bright shape on a dark background (random colours otherwise): "where the shape is" is then nearly a linear
  function of the pixels, which a random patch embedding keeps.
- 8 frames of 32 x 32 pixels, 8-pixel patches (a 4 x 4 grid, the smallest the point predictor's two max-pools
  accept), width 64, 2 layers, 64 interaction channels (released: 256).
- One CPU thread: the ops are tiny, and with two threads a step took >10x longer whenever another process was using
  a core.
- One DataLoader worker process: it decodes the next clips (~6 ms each) while the main process trains on the current
  ones, so on two cores decoding costs little wall-clock time.
"""

import contextlib
import math
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import torch

from .arguments import option
from .modeling_ila import ILAForVideoClassification
from .training.config import TrainingConfig
from .transforms import resize_scale
from .video_processing_ila import ILAVideoProcessor


MOTIONS = (
    "moving_left",
    "moving_right",
    "moving_up",
    "moving_down",
    "growing",
    "shrinking",
    "rotating_clockwise",
    "rotating_anticlockwise",
)
DEFAULT_MOTIONS = MOTIONS[:4]
SHAPES = ("rectangle", "triangle", "ell")
_DIRECTIONS = {"moving_left": (-1, 0), "moving_right": (1, 0), "moving_up": (0, -1), "moving_down": (0, 1)}


# ------------------------------------------------------------------------------------------------------ videos
def _shape_distance(shape: str, u: np.ndarray, v: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Signed distance in pixels (negative inside) to a shape of half-extent `size` centred at the origin."""
    if shape == "rectangle":
        return np.maximum(np.abs(u) - size, np.abs(v) - 0.5 * size)
    if shape == "triangle":
        sides = [math.cos(a) * u + math.sin(a) * v for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]
        return np.maximum(np.maximum(sides[0], sides[1]), sides[2]) - 0.55 * size
    if shape == "ell":
        bar = np.maximum(np.abs(u) - size, np.abs(v + 0.6 * size) - 0.35 * size)
        stem = np.maximum(np.abs(u + 0.65 * size) - 0.35 * size, np.abs(v) - size)
        return np.minimum(bar, stem)
    raise ValueError(f"Unknown shape {shape!r}; expected one of {SHAPES}.")


def render_video(
    motion: str,
    rng: np.random.Generator,
    num_frames: int = 16,
    frame_size: int = 36,
    speed: float = 0.06,
    angular_speed: float = 0.12,
    growth: float = 0.7,
    texture_strength: float = 0.03,
) -> np.ndarray:
    """
    One synthetic video: uint8 frames (num_frames, frame_size, frame_size, 3) of a bright shape doing `motion`.

    Every frame alone is ambiguous: the position is uniform on a torus (the shape wraps around the edges) and the
    angle uniform on the circle, whatever the motion; the log-size is uniform on a range that growing and shrinking
    sweep by `growth`, and every other motion takes one of the sizes such a sweep visits. Shape, colours and the
    faint static background texture are drawn independently of the motion.

    Args:
        motion: one of `MOTIONS`.
        rng: the random source.
        num_frames: frames of the video.
        frame_size: side in pixels.
        speed: translation per frame, in frame widths.
        angular_speed: rotation per frame, in radians.
        growth: log-size change over the whole video.
        texture_strength: amplitude of the static background texture (0-1 pixel scale).
    """
    if motion not in MOTIONS:
        raise ValueError(f"Unknown motion {motion!r}; expected one of {MOTIONS}.")
    steps = np.arange(num_frames, dtype=np.float64)
    width = frame_size

    centre = rng.uniform(0, width, size=2)
    angle = rng.uniform(0, 2 * math.pi)
    min_log_size = math.log(0.12 * width)
    base_log_size = rng.uniform(min_log_size, min_log_size + 0.25)
    sweep = growth * steps / max(num_frames - 1, 1)

    centres = np.tile(centre, (num_frames, 1))
    angles = np.full(num_frames, angle)
    log_sizes = np.full(num_frames, base_log_size + sweep[rng.integers(num_frames)])
    if motion in _DIRECTIONS:
        centres = centres + np.outer(steps, _DIRECTIONS[motion]) * speed * width
    elif motion == "growing":
        log_sizes = base_log_size + sweep
    elif motion == "shrinking":
        log_sizes = base_log_size + sweep[::-1]
    elif motion == "rotating_clockwise":  # rows grow downwards, so a growing angle turns clockwise on screen
        angles = angle + angular_speed * steps
    else:
        angles = angle - angular_speed * steps

    # A dark random background with a faint static texture; a bright shape of a random colour. The shape being
    # brighter keeps "where the shape is" a near-linear function of the pixels (see the module docstring).
    pixel_centres = np.arange(width, dtype=np.float64) + 0.5
    ys, xs = np.meshgrid(pixel_centres, pixel_centres, indexing="ij")
    texture = sum(
        np.cos(2 * math.pi * (fx * xs + fy * ys) / width + phase)
        for fx, fy, phase in zip(rng.integers(-3, 4, 3), rng.integers(-3, 4, 3), rng.uniform(0, 2 * math.pi, 3))
    )
    background = np.clip(rng.uniform(0.0, 0.35, size=3) + texture_strength * texture[..., None], 0, 1)
    colour = rng.uniform(0.55, 1.0, size=3)
    colour[rng.integers(3)] = 1.0

    shape = SHAPES[rng.integers(len(SHAPES))]
    dx = (xs - centres[:, 0, None, None] + width / 2) % width - width / 2  # (T, H, W), wrapped around the torus
    dy = (ys - centres[:, 1, None, None] + width / 2) % width - width / 2
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    distance = _shape_distance(shape, cos * dx + sin * dy, -sin * dx + cos * dy, np.exp(log_sizes)[:, None, None])
    coverage = np.clip(0.5 - distance, 0, 1)[..., None]  # anti-aliased edge, one pixel wide
    frames = coverage * colour + (1 - coverage) * background
    return np.round(frames * 255).astype(np.uint8)


def write_mp4(path: str | Path, frames: np.ndarray, fps: int = 8) -> Path:
    """Write uint8 RGB frames (T, H, W, 3) (H, W even) as an H.264 mp4 with PyAV, at near-lossless quality."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))
    return path


def write_synthetic_dataset(
    root: str | Path,
    motions: Sequence[str],
    videos_per_class: int,
    rng: np.random.Generator,
    *,
    num_frames: int = 16,
    frame_size: int = 36,
    **render_kwargs,
) -> Path:
    """Write `videos_per_class` mp4 files per motion as `root/<motion>/<index>.mp4` (the class-folder layout)."""
    root = Path(root)
    for index in range(videos_per_class):
        for motion in motions:
            frames = render_video(motion, rng, num_frames, frame_size, **render_kwargs)
            write_mp4(root / motion / f"{index:04d}.mp4", frames)
    return root


# ------------------------------------------------------------------------------------------------------ models
def save_random_clip(
    folder: str | Path,
    *,
    image_size: int = 32,
    patch_size: int = 8,
    hidden_size: int = 64,
    num_layers: int = 2,
    projection_dim: int = 64,
    seed: int = 0,
) -> Path:
    """Save a randomly initialised `CLIPVisionModelWithProjection` (QuickGELU, 64-wide heads) to `folder`."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=max(1, hidden_size // 32),
        image_size=image_size,
        patch_size=patch_size,
        projection_dim=projection_dim,
        hidden_act="quick_gelu",
    )
    torch.manual_seed(seed)
    CLIPVisionModelWithProjection(config).save_pretrained(folder)
    return Path(folder)


# ------------------------------------------------------------------------------------------------------ training
@dataclass
class DemoConfig:
    """Settings of `run_demo` (each field is an `ila-hf demo` option); the defaults are the measured ones described in
    the module docstring."""

    output_dir: str = option("ila-demo-output", "videos, models and the PNG go here")
    seed: int = option(0, "data, initialisation and training seed")
    motions: tuple[str, ...] = option(
        DEFAULT_MOTIONS, f"the classes, from: {', '.join(MOTIONS)}", choices=MOTIONS, metavar="MOTION"
    )
    train_videos_per_class: int = option(300, "training videos written per class")
    test_videos_per_class: int = option(64, "held-out videos written per class")
    video_frames: int = option(16, "frames in each mp4")
    num_frames: int = option(8, "frames per clip, T")
    image_size: int = option(32, "model input side")
    patch_size: int = option(8, "image size / patch size must be at least 4")
    hidden_size: int = option(64, "CLIP width")
    num_layers: int = option(2, "CLIP layers")
    interaction_channels: int = option(64, "channels of ILA's interaction block (released: 256)")
    freeze_backbone: bool = option(True, "keep the random CLIP weights frozen in both models (learned faster here)")
    epochs: int = option(12, "training epochs of each model")
    batch_size: int = option(32, "clips per step")
    learning_rate: float = option(1e-3, "ILA's alignment modules and temporal skip Linears")
    head_learning_rate: float = option(1e-4, "MIT and linear heads (both models)")
    backbone_learning_rate: float = option(1e-3, "CLIP weights, when not frozen (both models)")
    warmup_steps: int = option(20, "optimizer steps of linear learning-rate warm-up")
    alignment_loss_weight: float = option(0.03, "weight of ILA's alignment loss (released: 1.0)")
    augment: bool = option(False, "the released training augmentation (without flips, which would swap left and right)")
    num_threads: int | None = option(
        1,
        "torch CPU threads; 0: torch's choice (the ops are too small to gain from more, and lose a lot on a busy "
        "machine)",
    )
    num_workers: int = option(1, "data-loader processes decoding clips while the main process trains (see the docstring)")
    keep_videos: bool = option(True, "keep the mp4 dataset in OUTPUT_DIR/videos")

    def __post_init__(self):
        unknown = [motion for motion in self.motions if motion not in MOTIONS]
        if unknown or len(self.motions) < 2:
            raise ValueError(f"motions must be at least two of {MOTIONS}, got {self.motions!r}.")
        if self.image_size // self.patch_size < 4:
            raise ValueError(
                f"ILA's point predictor needs a patch grid of at least 4 x 4; image_size {self.image_size} / "
                f"patch_size {self.patch_size} gives {self.image_size // self.patch_size}."
            )

    @property
    def frame_size(self) -> int:
        """Side of the written videos: the processor's short-side resize target, so it resizes nothing."""
        return resize_scale(self.image_size)


@dataclass
class ModelReport:
    name: str
    accuracy: float
    train_seconds: float  # the whole `train` call: training, the held-out evaluation and (ILA) the export
    steps: int
    trainable_parameters: int
    peak_memory_mb: float  # the process's peak resident memory once this model was trained
    model_dir: str | None = None  # the exported folder (ILA)
    history: list[dict] = field(default_factory=list)  # per epoch: training loss and accuracy (`TrainingResult`)


@dataclass
class DemoResult:
    config: DemoConfig
    reports: list[ModelReport]
    chance: float
    runtime_seconds: float
    peak_memory_mb: float
    model_dir: str | None = None
    video_path: str | None = None
    true_label: str | None = None
    pipeline_output: list[dict] = field(default_factory=list)
    points_image: str | None = None
    curves_image: str | None = None


def peak_memory_mb() -> float:
    """Peak resident memory of this process (`getrusage` maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def demo_training_config(config: DemoConfig, architecture: str, clip_dir: Path, video_dir: Path) -> TrainingConfig:
    """
    The demo's recipe for `ila_hf.train` (see the module docstring): AdamW without weight decay, linear warm-up over
    `warmup_steps` then a cosine decay to 1% of the peak, `epochs` shuffled passes with a new random clip of every
    video in every epoch, no mixing, smoothing or flips; evaluated once, at the end, on the held-out split.
    """
    steps_per_epoch = math.ceil(len(config.motions) * config.train_videos_per_class / config.batch_size)
    return TrainingConfig(
        train_data=str(video_dir / "train"),
        validation_data=str(video_dir / "test"),
        label_names=str(video_dir / "labels.txt"),
        clip_model=str(clip_dir),
        architecture=architecture,
        num_frames=config.num_frames,
        interaction_variant="conv",
        interaction_channels=config.interaction_channels,
        alignment_loss_weight=config.alignment_loss_weight,
        classifier_dropout=0.0,
        freeze_backbone=config.freeze_backbone,
        epochs=config.epochs,
        warmup_epochs=config.warmup_steps / steps_per_epoch,
        batch_size=config.batch_size,
        eval_batch_size=64,
        # Alignment modules and temporal skip Linears at `learning_rate`, the CLIP weights (when trained) at
        # `backbone_learning_rate`, the MIT and both heads at `head_learning_rate`.
        base_learning_rate=config.backbone_learning_rate,
        temporal_skip_lr_scale=config.learning_rate / config.backbone_learning_rate,
        alignment_learning_rate=config.learning_rate,
        mit_learning_rate=config.head_learning_rate,
        head_learning_rate=config.head_learning_rate,
        weight_decay=0.0,
        alignment_weight_decay=0.0,
        label_smoothing=0.0,
        mixup_alpha=0.0,
        cutmix_alpha=0.0,
        augment=config.augment,
        horizontal_flip=False,  # would swap left and right
        seed=config.seed,
        cpu=True,
        num_workers=config.num_workers,
        eval_every_epochs=config.epochs,
        output_dir=str(Path(config.output_dir) / architecture.replace("_", "-")),
        checkpoint_every_epochs=None,
        log_every_steps=10,  # the progress bar's loss
        export="last",
    )


def _count_trainable(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def _train_and_report(name: str, training_config: TrainingConfig, log) -> ModelReport:
    from .data import read_label_names  # datasets and the loop load only when the demo runs
    from .training import build_model, train

    trainable = _count_trainable(build_model(training_config, read_label_names(training_config.label_names)))
    log(f"training {name} ({trainable:,} trainable parameters) ...")
    started = time.perf_counter()
    result = train(training_config)
    train_seconds = time.perf_counter() - started
    accuracy = result.metrics["top1"]
    log(f"  {name}: held-out accuracy {accuracy:.1%} after {result.global_step} steps in {train_seconds:.0f} s")
    return ModelReport(
        name,
        accuracy,
        train_seconds,
        result.global_step,
        trainable,
        peak_memory_mb(),
        model_dir=result.model_dir,
        history=result.history,
    )


# ------------------------------------------------------------------------------------------------------ the demo
@contextlib.contextmanager
def torch_threads(num_threads: int | None):
    """torch's intra-op thread count set to `num_threads` (None: left as it is) inside, restored after."""
    previous = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run_demo(config: DemoConfig | None = None, log=print) -> DemoResult:
    """Run the whole demo (see the module docstring) and return its numbers; `log` receives progress lines."""
    config = config or DemoConfig()
    with torch_threads(config.num_threads):
        return _run_demo(config, log)


def _run_demo(config: DemoConfig, log) -> DemoResult:
    from transformers import pipeline

    from .video_io import read_video_metadata
    from .visualize import draw_training_curves, save_interactive_points

    started = time.perf_counter()
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    motions = list(config.motions)

    # 1. Data: real mp4 files in class folders, and the class names in the motions' order.
    video_dir = output_dir / "videos" if config.keep_videos else Path(tempfile.mkdtemp(prefix="ila-demo-videos-"))
    shutil.rmtree(video_dir, ignore_errors=True)
    render = dict(num_frames=config.video_frames, frame_size=config.frame_size)
    log(
        f"writing {config.train_videos_per_class} + {config.test_videos_per_class} mp4 videos per class "
        f"({', '.join(motions)}) to {video_dir} ..."
    )
    write_synthetic_dataset(video_dir / "train", motions, config.train_videos_per_class, rng, **render)
    write_synthetic_dataset(video_dir / "test", motions, config.test_videos_per_class, rng, **render)
    (video_dir / "labels.txt").write_text("\n".join(motions) + "\n")
    log(f"  wrote {len(motions) * (config.train_videos_per_class + config.test_videos_per_class)} videos")

    # 2. One random CLIP; ILA and the baseline on it, trained and evaluated by the same loop on the same budget.
    clip_dir = save_random_clip(
        output_dir / "random-clip",
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        seed=config.seed,
    )
    reports = [
        _train_and_report(name, demo_training_config(config, architecture, clip_dir, video_dir), log)
        for name, architecture in (("ILA", "ila"), ("frame averaging", "frame_averaging"))
    ]

    # 3. The exported ILA folder: the pipeline on a held-out file, and the interactive points.
    model_dir = reports[0].model_dir
    test_paths = sorted(str(path) for path in (video_dir / "test").glob("*/*.mp4"))
    video_path = test_paths[int(rng.integers(len(test_paths)))]
    true_label = Path(video_path).parent.name
    classifier = pipeline("video-classification", model=model_dir)
    pipeline_output = classifier(video_path, top_k=len(motions))
    best = pipeline_output[0]
    video_processor = ILAVideoProcessor.from_pretrained(model_dir)
    points_image = save_interactive_points(
        ILAForVideoClassification.from_pretrained(model_dir),
        video_processor,
        video_path,
        output_dir / "interactive_points.png",
        title=f"{true_label}/{Path(video_path).name}    true class: {true_label}    "
        f"predicted: {best['label']} (score {best['score']:.2f})",
        frame_numbers=video_processor.sample_frames(read_video_metadata(video_path)).tolist(),
    )
    curves_image = output_dir / "training_curves.png"
    draw_training_curves(
        {report.name: report.history for report in reports},
        title=f"{len(motions)} classes that differ only in temporal order: training curves on the same frozen "
        "random CLIP",
        chance=1 / len(motions),
    ).save(curves_image)
    if not config.keep_videos:
        shutil.rmtree(video_dir, ignore_errors=True)

    return DemoResult(
        config=config,
        reports=reports,
        chance=1 / len(motions),
        runtime_seconds=time.perf_counter() - started,
        peak_memory_mb=peak_memory_mb(),
        model_dir=model_dir,
        video_path=video_path,
        true_label=true_label,
        pipeline_output=pipeline_output,
        points_image=str(points_image),
        curves_image=str(curves_image),
    )


def format_report(result: DemoResult) -> str:
    """The demo's summary: the accuracy table, runtime and memory, the pipeline's answer, where things were saved."""
    config = result.config
    lines = [
        "",
        f"{len(config.motions)} classes that differ only in temporal order; held-out split of "
        f"{config.test_videos_per_class * len(config.motions)} videos; chance {result.chance:.1%}",
        f"backbone: random tiny CLIP ({config.image_size}px, patch {config.patch_size}, width {config.hidden_size}, "
        f"{config.num_layers} layers, {'frozen' if config.freeze_backbone else 'trained'}); "
        f"{config.num_frames} frames per clip",
        "",
        f"| {'model':<16} | {'held-out acc':>12} | {'train time':>10} | {'steps':>5} | {'trainable params':>16} |",
        f"| {'-' * 16} | {'-' * 12} | {'-' * 10} | {'-' * 5} | {'-' * 16} |",
    ]
    for report in result.reports:
        lines.append(
            f"| {report.name:<16} | {report.accuracy:>12.1%} | {report.train_seconds:>8.0f} s | {report.steps:>5} | "
            f"{report.trainable_parameters:>16,} |"
        )
    lines += [
        "",
        f"total runtime {result.runtime_seconds:.0f} s; peak memory (max RSS) {result.peak_memory_mb:.0f} MB",
    ]
    if result.pipeline_output:
        predictions = ", ".join(f"{item['label']} {item['score']:.2f}" for item in result.pipeline_output)
        lines += [
            "",
            f'pipeline("video-classification", model="{result.model_dir}")',
            f"  {result.video_path} (true class: {result.true_label})",
            f"  -> {predictions}",
        ]
    if result.points_image:
        lines.append(f"interactive points drawn on the clip's frames: {result.points_image}")
    if result.curves_image:
        lines.append(f"training curves (loss and accuracy per epoch): {result.curves_image}")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_MOTIONS",
    "MOTIONS",
    "DemoConfig",
    "DemoResult",
    "ModelReport",
    "format_report",
    "render_video",
    "run_demo",
    "save_random_clip",
    "demo_training_config",
    "write_mp4",
    "write_synthetic_dataset",
]
