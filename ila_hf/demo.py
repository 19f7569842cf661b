"""The embedded demo (`ila-hf demo`): ILA against frame averaging on videos whose classes differ only in time order.

What it does, with nothing downloaded:

1. Writes a synthetic video dataset as real mp4 files (PyAV), one folder per class: a bright shape on a dark
   background moving left, right, up or down (optionally also growing / shrinking / turning clockwise /
   anticlockwise). Positions live on a torus (the shape wraps around the edges) and angles on the circle, both
   uniformly random, and sizes, shapes, colours and backgrounds are drawn independently of the class, so a single
   frame has the same distribution in every class. Classes come in time-reversed pairs: within a pair the frames of
   a video are equally likely in either order, so only their order tells left from right.
2. Saves a randomly initialised tiny CLIP vision tower and builds two classifiers on it: ILA
   (`ILAForVideoClassification.from_clip`) and `FrameAveragingClassifier` (per-frame CLIP embeddings averaged over
   time, then the same head as ILA's linear head; no alignment and no temporal modelling).
3. Trains both with one loop (`train_classifier`): the same videos, clips, schedule, number of steps and head
   learning rate, on the CPU; prints their held-out accuracy, training time and the process's peak memory.
4. Exports the ILA model with its video processor (`hub.export_model`), classifies a held-out mp4 through
   `pipeline("video-classification", model=folder)` and draws the predicted interactive points on its frames
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
"""

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
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import ImageClassifierOutput

from .configuration_ila import ILAVideoConfig
from .modeling_ila import ILAForVideoClassification
from .sampling import segment_indices
from .transforms import EvalClipTransform, TrainClipTransform, resize_scale
from .video_io import load_video


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


class FrameAveragingClassifier(nn.Module):
    """
    The baseline without temporal modelling: each frame through the CLIP vision tower on its own, the image
    embeddings averaged over time, then the same head as ILA's linear head (L2-normalise, LayerNorm, Linear).
    Permuting the frames cannot change its output.
    """

    def __init__(self, clip, num_labels: int, freeze_backbone: bool = True):
        super().__init__()
        self.clip = clip
        projection_dim = clip.config.projection_dim
        self.norm = nn.LayerNorm(projection_dim, eps=clip.config.layer_norm_eps)
        self.classifier = nn.Linear(projection_dim, num_labels)
        self.clip.requires_grad_(not freeze_backbone)

    @classmethod
    def from_clip(cls, clip_path: str | Path, num_labels: int, freeze_backbone: bool = True):
        from transformers import CLIPVisionModelWithProjection

        return cls(CLIPVisionModelWithProjection.from_pretrained(clip_path), num_labels, freeze_backbone)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        """pixel_values (B, T, 3, H, W), labels (B,) -> loss, logits (B, K)."""
        batch_size, num_frames = pixel_values.shape[:2]
        frame_embeds = self.clip(pixel_values=pixel_values.flatten(0, 1)).image_embeds  # (B*T, E)
        video_embeds = frame_embeds.unflatten(0, (batch_size, num_frames)).mean(dim=1)  # (B, E)
        logits = self.classifier(self.norm(F.normalize(video_embeds, dim=-1)))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits)


def ila_parameter_groups(model: ILAForVideoClassification, config: "DemoConfig") -> list[dict]:
    """The recipe's groups (`training.parameter_group_name`) with the demo's learning rates."""
    from .training import parameter_group_name

    learning_rates = {
        "alignment": config.learning_rate,
        "temporal_skip": config.learning_rate,
        "mit": config.head_learning_rate,
        "head": config.head_learning_rate,
        "backbone": config.backbone_learning_rate,
        "other": config.learning_rate,
    }
    backbone_names = {f"ila.{name}" for name, _ in model.ila.clip_backbone_parameters()}
    groups: dict[str, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(parameter_group_name(name, backbone_names), []).append(parameter)
    return [{"params": params, "lr": learning_rates[group], "name": group} for group, params in groups.items()]


def frame_averaging_parameter_groups(model: FrameAveragingClassifier, config: "DemoConfig") -> list[dict]:
    head = [*model.norm.parameters(), *model.classifier.parameters()]
    groups = [{"params": head, "lr": config.head_learning_rate, "name": "head"}]
    backbone = [parameter for parameter in model.clip.parameters() if parameter.requires_grad]
    if backbone:
        groups.append({"params": backbone, "lr": config.backbone_learning_rate, "name": "backbone"})
    return groups


# ------------------------------------------------------------------------------------------------------ training
@dataclass
class DemoConfig:
    """Settings of `run_demo`; the defaults are the measured ones described in the module docstring."""

    output_dir: str = "ila-demo-output"
    seed: int = 0
    motions: tuple[str, ...] = DEFAULT_MOTIONS
    train_videos_per_class: int = 300
    test_videos_per_class: int = 64
    video_frames: int = 16  # frames in each mp4
    num_frames: int = 8  # frames per clip, T
    image_size: int = 32
    patch_size: int = 8
    hidden_size: int = 64
    num_layers: int = 2
    interaction_channels: int = 64
    freeze_backbone: bool = True
    epochs: int = 12
    batch_size: int = 32
    learning_rate: float = 1e-3  # ILA's alignment modules and temporal skip Linears
    head_learning_rate: float = 1e-4  # MIT and linear heads (both models)
    backbone_learning_rate: float = 1e-3  # CLIP weights, when not frozen (both models)
    warmup_steps: int = 20
    alignment_loss_weight: float = 0.03
    augment: bool = False  # the released training augmentation (without flips, which would swap left and right)
    num_threads: int | None = 1  # torch CPU threads; None: torch's choice (see `run_demo`)
    keep_videos: bool = True  # keep the mp4 dataset in output_dir/videos

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
    train_seconds: float
    steps: int
    trainable_parameters: int
    final_train_loss: float
    peak_memory_mb: float  # the process's peak resident memory once this model was trained


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


def peak_memory_mb() -> float:
    """Peak resident memory of this process (`getrusage` maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def decode_split(folder: Path, motions: Sequence[str]) -> tuple[list[np.ndarray], torch.Tensor, list[str]]:
    """Decode every mp4 of a class-folder split once with PyAV: (frames per video, labels, paths)."""
    from .data import dataset_from_class_folders

    dataset = dataset_from_class_folders(folder, class_names=list(motions))
    videos = [load_video(path)[0] for path in dataset["video"]]
    return videos, torch.tensor(dataset["label"]), list(dataset["video"])


class ClipSampler:
    """Clips (B, T, 3, H, W) from decoded videos: TSN segment sampling, then the training or evaluation transform."""

    def __init__(self, videos: list[np.ndarray], num_frames: int, image_size: int, augment: bool = False):
        self.videos = videos
        self.num_frames = num_frames
        self.train_transform = TrainClipTransform(image_size, flip_p=0.0) if augment else EvalClipTransform(image_size)
        self.eval_transform = EvalClipTransform(image_size)

    def clips(self, indices: Sequence[int], rng: np.random.Generator | None = None) -> torch.Tensor:
        """Training clips (random frame per segment) with `rng`; the evaluation clips (middle frames) without."""
        training = rng is not None
        transform = self.train_transform if training else self.eval_transform
        clips = []
        for index in indices:
            frames = self.videos[index]
            frame_indices = segment_indices(len(frames), self.num_frames, random=training, generator=rng)
            generator = torch.Generator().manual_seed(int(rng.integers(2**31))) if training else None
            clips.append(transform(frames[frame_indices], generator))
        return torch.stack(clips)


def train_classifier(
    model: nn.Module,
    param_groups: list[dict],
    sampler: ClipSampler,
    labels: torch.Tensor,
    config: DemoConfig,
    rng: np.random.Generator,
) -> tuple[int, float]:
    """
    The demo's training loop, the same for both models: AdamW, linear warm-up then cosine decay
    (`training.lr_multiplier`), `config.epochs` shuffled passes in batches of `config.batch_size`, a new random clip
    of every video in every epoch. Returns (optimizer steps, mean loss of the last epoch).
    """
    from .training import build_scheduler

    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    optimizer = torch.optim.AdamW(param_groups, betas=(0.9, 0.98), weight_decay=0.0)
    scheduler = build_scheduler(optimizer, config.warmup_steps, total_steps, min_lr_ratio=0.01)
    model.train()
    epoch_loss = float("nan")
    for _ in range(config.epochs):
        order = rng.permutation(len(labels))
        losses = []
        for start in range(0, len(order), config.batch_size):
            batch = order[start : start + config.batch_size]
            outputs = model(pixel_values=sampler.clips(batch, rng), labels=labels[batch])
            optimizer.zero_grad(set_to_none=True)
            outputs.loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(outputs.loss.item())
        epoch_loss = float(np.mean(losses))
    return total_steps, epoch_loss


@torch.no_grad()
def evaluate_accuracy(model: nn.Module, sampler: ClipSampler, labels: torch.Tensor, batch_size: int = 64) -> float:
    """Top-1 accuracy on the evaluation clips (the middle frame of every segment) of every video."""
    model.eval()
    predictions = [
        model(pixel_values=sampler.clips(range(start, min(start + batch_size, len(labels))))).logits.argmax(-1)
        for start in range(0, len(labels), batch_size)
    ]
    return (torch.cat(predictions) == labels).float().mean().item()


def _count_trainable(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def _train_and_report(name, model, param_groups, train_sampler, train_labels, test_sampler, test_labels, config, log):
    log(f"training {name} ({_count_trainable(model):,} trainable parameters) ...")
    started = time.perf_counter()
    steps, final_loss = train_classifier(
        model, param_groups, train_sampler, train_labels, config, np.random.default_rng(config.seed + 1)
    )
    train_seconds = time.perf_counter() - started
    accuracy = evaluate_accuracy(model, test_sampler, test_labels)
    log(f"  {name}: held-out accuracy {accuracy:.1%} after {steps} steps in {train_seconds:.0f} s")
    return ModelReport(
        name, accuracy, train_seconds, steps, _count_trainable(model), final_loss, peak_memory_mb()
    )


# ------------------------------------------------------------------------------------------------------ the demo
def run_demo(config: DemoConfig | None = None, log=print) -> DemoResult:
    """Run the whole demo (see the module docstring) and return its numbers; `log` receives progress lines."""
    from transformers import pipeline

    from .hub import export_model
    from .training import build_video_processor
    from .visualize import save_interactive_points

    config = config or DemoConfig()
    started = time.perf_counter()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    motions = list(config.motions)

    # 1. Data: real mp4 files, decoded once.
    video_dir = output_dir / "videos" if config.keep_videos else Path(tempfile.mkdtemp(prefix="ila-demo-videos-"))
    shutil.rmtree(video_dir, ignore_errors=True)
    render = dict(num_frames=config.video_frames, frame_size=config.frame_size)
    log(
        f"writing {config.train_videos_per_class} + {config.test_videos_per_class} mp4 videos per class "
        f"({', '.join(motions)}) to {video_dir} ..."
    )
    write_synthetic_dataset(video_dir / "train", motions, config.train_videos_per_class, rng, **render)
    write_synthetic_dataset(video_dir / "test", motions, config.test_videos_per_class, rng, **render)
    train_videos, train_labels, _ = decode_split(video_dir / "train", motions)
    test_videos, test_labels, test_paths = decode_split(video_dir / "test", motions)
    log(f"  wrote and decoded {len(train_videos) + len(test_videos)} videos in {time.perf_counter() - started:.0f} s")
    train_sampler = ClipSampler(train_videos, config.num_frames, config.image_size, config.augment)
    test_sampler = ClipSampler(test_videos, config.num_frames, config.image_size)

    # 2. One random CLIP, two classifiers on it.
    clip_dir = save_random_clip(
        output_dir / "random-clip",
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        num_layers=config.num_layers,
        seed=config.seed,
    )
    id2label = dict(enumerate(motions))
    torch.manual_seed(config.seed)
    ila = ILAForVideoClassification.from_clip(
        str(clip_dir),
        num_frames=config.num_frames,
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
        interaction_variant="conv",
        interaction_channels=config.interaction_channels,
        freeze_backbone=config.freeze_backbone,
        alignment_loss_weight=config.alignment_loss_weight,
        classifier_dropout=0.0,
    )
    torch.manual_seed(config.seed)
    baseline = FrameAveragingClassifier.from_clip(clip_dir, len(motions), config.freeze_backbone)

    # 3. The same loop, data and budget for both.
    data = (train_sampler, train_labels, test_sampler, test_labels, config, log)
    reports = [
        _train_and_report("ILA", ila, ila_parameter_groups(ila, config), *data),
        _train_and_report(
            "frame averaging", baseline, frame_averaging_parameter_groups(baseline, config), *data
        ),
    ]

    # 4. Export, pipeline on a held-out file, interactive points.
    model_dir = output_dir / "ila-model"
    video_processor = build_video_processor(ila)
    export_model(ila, model_dir, video_processor=video_processor)
    video_path = test_paths[int(rng.integers(len(test_paths)))]
    true_label = Path(video_path).parent.name
    classifier = pipeline("video-classification", model=str(model_dir))
    pipeline_output = classifier(video_path, top_k=len(motions))
    points_image = save_interactive_points(
        ila, video_processor, video_path, output_dir / "interactive_points.png", title=f"{Path(video_path).name}"
    )
    if not config.keep_videos:
        shutil.rmtree(video_dir, ignore_errors=True)

    return DemoResult(
        config=config,
        reports=reports,
        chance=1 / len(motions),
        runtime_seconds=time.perf_counter() - started,
        peak_memory_mb=peak_memory_mb(),
        model_dir=str(model_dir),
        video_path=video_path,
        true_label=true_label,
        pipeline_output=pipeline_output,
        points_image=str(points_image),
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
    return "\n".join(lines)


__all__ = [
    "DEFAULT_MOTIONS",
    "MOTIONS",
    "DemoConfig",
    "DemoResult",
    "FrameAveragingClassifier",
    "ModelReport",
    "format_report",
    "render_video",
    "run_demo",
    "save_random_clip",
    "train_classifier",
    "write_mp4",
    "write_synthetic_dataset",
]
