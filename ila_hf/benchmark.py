"""
Cost and speed of ILA against its peers: `ila-hf benchmark` and `benchmarks/run.py`.

One run builds every model with random weights at real sizes from configs (nothing is downloaded), at equal frames
and resolution, and measures:

- multiply-adds per view, counted by `torch.utils.flop_counter.FlopCounterMode` on the meta device (no compute).
  Matmuls and convolutions count, as FLOPs / 2; normalisation, activations and other elementwise work do not. The
  batched matmuls of attention (scores and weighted values) are reported apart: published figures usually leave
  them out, because the flop counter does not see the CPU SDPA kernel;
- parameters, total and trainable (ILA: the released recipe's frozen CLIP backbone);
- inference latency and clips/s per batch size and dtype, and the achieved multiply-adds per second as a fraction
  of this machine's dense matmul rate;
- peak memory. CUDA: `torch.cuda.max_memory_allocated`. CPU: the resident tensors (weights, optimizer state) plus
  the peak of the tensor bytes allocated during the call, summed from the torch profiler's allocation events (the
  CPU allocator reports every allocation and free to it; the process RSS would mostly show the C allocator's cache);
- one training step (forward, cross-entropy, backward, AdamW step) with the backbone frozen or fully fine-tuned,
  with and without activation checkpointing;
- where ILA's inference time goes, by operator category (torch profiler).
"""

import copy
import datetime
import functools
import json
import os
import platform
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from torch.nn import functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
    PreTrainedModel,
    TimesformerConfig,
    TimesformerForVideoClassification,
    VideoMAEConfig,
    VideoMAEForVideoClassification,
    XCLIPVisionConfig,
    XCLIPVisionModel,
)
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.models.x_clip.modeling_x_clip import XCLIPMultiframeIntegrationTransformer

from .arguments import option
from .baselines import FrameAveragingClassifier
from .configuration_ila import ILAVideoConfig
from .modeling_ila import ILAForVideoClassification


@dataclass(frozen=True)
class ViTSize:
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    patch_size: int
    projection_dim: int


SIZES = {
    "B/32": ViTSize(768, 3072, 12, 12, 32, 512),
    "B/16": ViTSize(768, 3072, 12, 12, 16, 512),
    "L/14": ViTSize(1024, 4096, 24, 16, 14, 768),
    "tiny": ViTSize(64, 128, 2, 4, 16, 64),  # for tests
}

MODELS = {
    "ila": "ILA, K400 recipe (depthwise interaction, text head)",
    "ila-fused": "ILA, K400 recipe, fuse_for_inference()",
    "ila-ssv2": "ILA, SSv2 recipe (conv interaction, linear head)",
    "clip": "CLIP per frame + mean (frame averaging)",
    "xclip": "X-CLIP vision + MIT",
    "timesformer": "TimeSformer (divided space-time)",
    "videomae": "VideoMAE (tubelets 2x16x16)",
}
# TimeSformer and VideoMAE come as ViT-B models with 16x16 patches: they join at patch-16 sizes only.
PATCH_16_ONLY = ("timesformer", "videomae")
NUM_CLASSES = {"ila-ssv2": 174}  # the SSv2 label set; every other model classifies the 400 Kinetics classes
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class BenchmarkOptions:
    """What one run measures (each field is an `ila-hf benchmark` option). The defaults are a quick CPU run (a few
    minutes on 2 cores)."""

    models: list[str] = field(
        default_factory=lambda: list(MODELS), metadata={"help": "models to measure", "choices": list(MODELS)}
    )
    sizes: list[str] = field(
        default_factory=lambda: ["B/32"],
        metadata={"help": "sizes to time (and count)", "choices": list(SIZES), "nargs": "*"},
    )
    count_sizes: list[str] = field(
        default_factory=lambda: ["B/16", "L/14"],
        metadata={"help": "sizes to count only (multiply-adds, parameters)", "choices": list(SIZES), "nargs": "*"},
    )
    frames: int = option(8, "frames per view")
    image_size: int = option(224, "input side in pixels")
    batch_sizes: list[int] = field(default_factory=lambda: [1], metadata={"help": "inference batch sizes"})
    dtypes: list[str] = field(
        default_factory=lambda: ["fp32"], metadata={"help": "inference dtypes", "choices": list(DTYPES)}
    )
    warmup: int = option(1, "untimed rounds of inference calls before timing (every model is called once a round)")
    repeats: int = option(3, "timed rounds of inference calls")
    onnxruntime: bool = option(False, "also time ILA exported to ONNX in onnxruntime, in the same rounds (CPU)")
    train: bool = option(True, "measure training steps")
    train_batch_size: int = option(1, "clips per training step")
    train_repeats: int = option(2, "timed rounds of training steps (each of a model's variants once a round)")
    train_dtype: str = option("fp32", "bf16: autocast mixed precision, fp32 weights", choices=list(DTYPES))
    memory: bool = option(True, "measure peak memory")
    profile: bool = option(True, "profile ILA's inference by operator category")
    device: str = field(
        default_factory=lambda: "cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "torch device"}
    )
    compile: bool = option(False, "also time ILA's training step through torch.compile, beside eager")
    max_call_seconds: float | None = option(
        None, "skip inference timings whose predicted time per call (multiply-adds at the matmul rate) exceeds this"
    )
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)")
    matmul_size: int = option(2048, "side of the dense matmul that measures the machine's rate")
    command: str = ""  # the command line, for the record

    def __post_init__(self):
        for name in self.models:
            if name not in MODELS:
                raise ValueError(f"Unknown model {name!r}; choose from {', '.join(MODELS)}.")
        for size in (*self.sizes, *self.count_sizes):
            if size not in SIZES:
                raise ValueError(f"Unknown size {size!r}; choose from {', '.join(SIZES)}.")
        for dtype in (*self.dtypes, self.train_dtype):
            if dtype not in DTYPES:
                raise ValueError(f"Unknown dtype {dtype!r}; choose from {', '.join(DTYPES)}.")
        if self.onnxruntime and self.device != "cpu":
            raise ValueError(f"--onnxruntime times onnxruntime's CPU provider: use --device cpu, not {self.device!r}.")
        if self.onnxruntime and "fp32" not in self.dtypes:
            raise ValueError(f"--onnxruntime times the fp32 ONNX graphs: add fp32 to --dtypes (given {self.dtypes}).")


# ---------------------------------------------------------------------------------------------------------------
# The models. Each maps pixel_values (B, T, 3, H, W) [and labels] to an output with `.logits` [and `.loss`].
# ---------------------------------------------------------------------------------------------------------------


class XCLIPVideoClassifier(nn.Module):
    """
    X-CLIP's video side from transformers' pieces: `XCLIPVisionModel` (cross-frame message tokens), the visual
    projection and the multi-frame integration transformer, as in `XCLIPModel.get_video_features`; a linear classifier
    stands in for the text side.
    """

    def __init__(self, config: XCLIPVisionConfig, projection_dim: int, num_labels: int):
        super().__init__()
        self.vision_model = XCLIPVisionModel(config)
        self.visual_projection = nn.Linear(config.hidden_size, projection_dim, bias=False)
        # Built after the vision model, so the copied config carries its attention implementation (SDPA).
        mit_config = copy.copy(self.vision_model.config)
        mit_config.hidden_size = config.mit_hidden_size
        mit_config.intermediate_size = config.mit_intermediate_size
        mit_config.num_hidden_layers = config.mit_num_hidden_layers
        mit_config.num_attention_heads = config.mit_num_attention_heads
        self.mit = XCLIPMultiframeIntegrationTransformer(mit_config)
        nn.init.normal_(self.mit.position_embedding, std=0.02)
        self.classifier = nn.Linear(projection_dim, num_labels)

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> ImageClassifierOutput:
        batch_size, num_frames = pixel_values.shape[:2]
        frame_embeds = self.visual_projection(self.vision_model(pixel_values.flatten(0, 1)).pooler_output)
        video_embeds = self.mit(frame_embeds.unflatten(0, (batch_size, num_frames))).pooler_output  # (B, E)
        logits = self.classifier(video_embeds)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return ImageClassifierOutput(loss=loss, logits=logits)


def ila_config(name: str, size: ViTSize, frames: int, image_size: int, **settings) -> ILAVideoConfig:
    k400 = name != "ila-ssv2"
    return ILAVideoConfig(
        hidden_size=size.hidden_size,
        intermediate_size=size.intermediate_size,
        num_hidden_layers=size.num_layers,
        num_attention_heads=size.num_heads,
        patch_size=size.patch_size,
        image_size=image_size,
        projection_dim=size.projection_dim,
        num_frames=frames,
        interaction_variant="depthwise" if k400 else "conv",
        head="text" if k400 else "linear",
        num_labels=NUM_CLASSES.get(name, 400),
        **settings,
    )


def build_model(name: str, size: ViTSize, frames: int, image_size: int, **ila_settings) -> nn.Module:
    """
    A randomly initialised model at `size`, in eval mode; ILA models with the released frozen backbone and any
    `ILAVideoConfig` settings given.
    """
    num_labels = NUM_CLASSES.get(name, 400)
    transformer = {
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": size.num_layers,
        "num_attention_heads": size.num_heads,
        "image_size": image_size,
        "patch_size": size.patch_size,
    }
    if name.startswith("ila"):
        model = ILAForVideoClassification(ila_config(name, size, frames, image_size, **ila_settings)).eval()
        if model.config.head == "text":  # stand-ins for the class-name embeddings, which cost nothing per video
            torch.nn.init.normal_(model.head.class_embeddings)
        return model.fuse_for_inference() if name == "ila-fused" else model
    if name == "clip":
        config = CLIPVisionConfig(**transformer, projection_dim=size.projection_dim, hidden_act="quick_gelu")
        return FrameAveragingClassifier(CLIPVisionModelWithProjection(config), num_labels, freeze_backbone=False).eval()
    if name == "xclip":
        config = XCLIPVisionConfig(
            **transformer,
            num_frames=frames,
            mit_hidden_size=size.projection_dim,
            mit_intermediate_size=4 * size.projection_dim,
            mit_num_attention_heads=size.projection_dim // 64,
        )
        return XCLIPVideoClassifier(config, size.projection_dim, num_labels).eval()
    labels = {"num_labels": num_labels}
    if name == "timesformer":
        return TimesformerForVideoClassification(TimesformerConfig(**transformer, num_frames=frames, **labels)).eval()
    if name == "videomae":
        return VideoMAEForVideoClassification(VideoMAEConfig(**transformer, num_frames=frames, **labels)).eval()
    raise ValueError(f"Unknown model {name!r}; choose from {', '.join(MODELS)}.")


def model_exists_at(name: str, size_name: str) -> bool:
    return name not in PATCH_16_ONLY or SIZES[size_name].patch_size == 16


def set_backbone_trainable(model: nn.Module, trainable: bool) -> None:
    """ILA: freeze or unfreeze the CLIP backbone. The peers have no frozen variant (they train fully)."""
    if isinstance(model, ILAForVideoClassification):
        model.ila.freeze_clip_backbone(not trainable)
    else:
        model.requires_grad_(True)


@dataclass(frozen=True)
class TrainingVariant:
    """How one training step is run: which parameters train and what is recomputed or compiled."""

    trainable_backbone: bool
    checkpointing: bool
    recompute_frozen_mlp: bool = True  # ILA: the frozen MLPs' hidden activations are recomputed in the backward pass
    compiled: bool = False  # the model's forward (and so its backward) through torch.compile


def training_variants(name: str, options: "BenchmarkOptions") -> list[TrainingVariant]:
    """
    The variants of a model's training step to time against each other: backbone frozen (ILA) or fine-tuned, with
    and without activation checkpointing; for ILA's K400 recipe also without `recompute_frozen_mlp` and, with
    `--compile`, through torch.compile. The fused model does not train.
    """
    if name == "ila-fused":
        return []
    backbones = (False, True) if name.startswith("ila") else (True,)
    variants = [TrainingVariant(backbone, checkpointing) for backbone in backbones for checkpointing in (False, True)]
    if name == "ila":
        variants.append(TrainingVariant(False, False, recompute_frozen_mlp=False))
        if options.compile:
            variants.append(TrainingVariant(False, False, compiled=True))
    return variants


def enable_activation_checkpointing(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, PreTrainedModel) and module.supports_gradient_checkpointing:
            module.activation_checkpointing_enable()


# ---------------------------------------------------------------------------------------------------------------
# Measurements.
# ---------------------------------------------------------------------------------------------------------------

ATTENTION_OPS = {
    torch.ops.aten.bmm,
    torch.ops.aten.baddbmm,
    torch.ops.aten._scaled_dot_product_efficient_attention,
    torch.ops.aten._scaled_dot_product_flash_attention,
    torch.ops.aten._scaled_dot_product_cudnn_attention,
}


def count_cost(name: str, size: ViTSize, frames: int, image_size: int) -> dict:
    """Multiply-adds of one view (batch 1) and parameter counts; the model is built on the meta device."""
    with torch.device("meta"):
        # `.to("meta")` too: once transformers' `from_pretrained` has run in the process, `torch.linspace` ignores
        # device contexts (torch caches the constructor list while transformers has it patched).
        model = build_model(name, size, frames, image_size).to("meta")
        pixel_values = torch.empty(1, frames, 3, image_size, image_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(pixel_values=pixel_values)
    flops_by_op = counter.get_flop_counts()["Global"]
    attention_flops = sum(count for op, count in flops_by_op.items() if op in ATTENTION_OPS)
    head_flops = sum(
        sum(counts.values())
        for module_name, counts in counter.get_flop_counts().items()
        if module_name.count(".") == 1 and module_name.split(".")[1] in ("head", "classifier", "fc_norm")
    )
    return {
        "gmacs": counter.get_total_flops() / 2e9,
        "attention_gmacs": attention_flops / 2e9,
        "head_gmacs": head_flops / 2e9,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "trainable_m": sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6,
    }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    function: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> tuple[list[float], list[float]]:
    """
    Seconds per call, `repeats` times after `warmup` calls: elapsed (CUDA events on a GPU, the wall clock on the CPU)
    and this process's CPU time (all threads), which waiting for a shared machine's cores does not inflate.
    """
    for _ in range(warmup):
        function()
    elapsed, cpu = [], []
    for _ in range(repeats):
        cpu_start = time.process_time()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            function()
            end.record()
            torch.cuda.synchronize(device)
            elapsed.append(start.elapsed_time(end) / 1e3)
        else:
            start_time = time.perf_counter()
            function()
            elapsed.append(time.perf_counter() - start_time)
        cpu.append(time.process_time() - cpu_start)
    return elapsed, cpu


def _profiler_allocation_peak(function: Callable[[], object]) -> int | None:
    """Peak of the CPU tensor bytes allocated (net of frees) while `function` runs, from profiler allocation events."""
    try:
        from torch._C._profiler import _EventType
    except ImportError:  # a private API; without it no CPU memory figure is reported
        return None
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as profiler:
        function()

    def walk(events):
        for event in events:
            yield event
            yield from walk(event.children)

    allocations = [
        event
        for event in walk(profiler.profiler.kineto_results.experimental_event_tree())
        if event.tag == _EventType.Allocation and event.extra_fields.device.type == "cpu"
    ]
    allocated = peak = 0
    for event in sorted(allocations, key=lambda event: event.start_time_ns):
        allocated += event.extra_fields.alloc_size
        peak = max(peak, allocated)
    return peak


def peak_memory_bytes(function: Callable[[], object], device: torch.device, resident_bytes: int) -> int | None:
    """Peak bytes of tensors during `function`, including the `resident_bytes` (weights, optimizer state) on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        function()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    transient = _profiler_allocation_peak(function)
    return None if transient is None else resident_bytes + transient


def tensor_bytes(tensors) -> int:
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def model_bytes(model: nn.Module) -> int:
    return tensor_bytes(model.parameters()) + tensor_bytes(model.buffers())


def matmul_rate(dtype: torch.dtype, device: torch.device, size: int, repeats: int = 5) -> float:
    """Dense matmul rate of this machine: GFLOP/s of the best of `repeats` (size x size) @ (size x size) products."""
    left = torch.randn(size, size, device=device, dtype=dtype)
    right = torch.randn(size, size, device=device, dtype=dtype)
    seconds = min(time_calls(lambda: left @ right, device, warmup=1, repeats=repeats)[0])
    return 2 * size**3 / seconds / 1e9


OPERATOR_CATEGORIES = (
    ("attention (SDPA)", ("scaled_dot_product", "flash_attention", "efficient_attention")),
    ("matmul (linear layers)", ("addmm", "aten::mm", "bmm", "matmul")),
    ("convolution", ("conv",)),
    ("normalisation", ("norm",)),
    ("pooling", ("pool", "amax")),
    ("copies and layout (cat, pad, copy)", ("cat", "copy", "clone", "contiguous", "pad", "index", "unfold")),
    ("activations", ("sigmoid", "gelu", "relu", "clamp", "tanh", "softmax")),
    ("other elementwise", ("add", "mul", "div", "sub", "where", "abs", "sum", "mean", "exp", "pow", "sqrt")),
)


def profile_categories(function: Callable[[], object], device: torch.device) -> dict[str, float]:
    """Self time (ms) of one call, summed over operator categories."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        function()
        _synchronize(device)
    milliseconds: dict[str, float] = {}
    for event in profiler.key_averages():
        if not event.key.startswith("aten::"):
            continue  # on a GPU the kernels are listed too; their time is already their aten operator's
        self_time = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        category = next(
            (category for category, keys in OPERATOR_CATEGORIES if any(key in event.key for key in keys)), "other"
        )
        milliseconds[category] = milliseconds.get(category, 0.0) + self_time / 1e3
    return dict(sorted(milliseconds.items(), key=lambda item: -item[1]))


def random_video(batch_size: int, frames: int, image_size: int, device, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(batch_size, frames, 3, image_size, image_size, device=device, dtype=dtype)


def infer(model: Callable[..., object], pixel_values: torch.Tensor) -> None:
    with torch.inference_mode():
        model(pixel_values=pixel_values)


def interleaved_times(
    functions: dict[Any, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[Any, tuple[list[float], list[float]]]:
    """
    (elapsed, CPU) seconds per call of every function, called in turn: `warmup` untimed rounds, then `repeats` timed
    ones. On a shared machine all see the same load in each round, so the per-round ratios between them hold even
    when the absolute times drift.
    """
    times = {key: ([], []) for key in functions}
    for round_index in range(warmup + repeats):
        for key, function in functions.items():
            (elapsed,), (cpu,) = time_calls(function, device, warmup=0, repeats=1)
            if round_index >= warmup:
                times[key][0].append(elapsed)
                times[key][1].append(cpu)
    return times


def spread(values: Sequence[float]) -> dict:
    return {"n": len(values), "median": statistics.median(values), "min": min(values), "max": max(values)}


def paired_ratios(numerators: Sequence[float], denominators: Sequence[float]) -> dict:
    """The spread of the per-round ratios of two interleaved samples."""
    return spread([numerator / denominator for numerator, denominator in zip(numerators, denominators, strict=True)])


class OnnxRuntimeModel:
    """A model exported to ONNX (`ila-hf export`'s graph) in an onnxruntime CPU session, called like the others."""

    def __init__(self, model: ILAForVideoClassification, threads: int):
        import onnxruntime  # the `export` extra

        from .serving import export_program, save_onnx

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.onnx"
            save_onnx(export_program(model), path)
            session_options = onnxruntime.SessionOptions()
            session_options.intra_op_num_threads = threads
            session_options.inter_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(
                str(path), session_options, providers=["CPUExecutionProvider"]
            )

    def __call__(self, pixel_values: torch.Tensor) -> list:
        return self.session.run(None, {"pixel_values": pixel_values.numpy()})


def build_runtimes(models: dict[str, nn.Module], options: BenchmarkOptions) -> dict[tuple[str, str], Callable]:
    """(model, runtime) -> what to call: every model in PyTorch ("eager"), and ILA's exported to onnxruntime."""
    runtimes = {(name, "eager"): model for name, model in models.items()}
    if options.onnxruntime:
        for name, model in models.items():
            if isinstance(model, ILAForVideoClassification):
                runtimes[(name, "onnxruntime")] = OnnxRuntimeModel(model, torch.get_num_threads())
    return runtimes


def measure_inference(
    models: dict[str, nn.Module], size_name: str, options: BenchmarkOptions, costs: dict, rates: dict
) -> tuple[list[dict], list[dict]]:
    """
    Latency, throughput and achieved multiply-add rate per runtime, dtype and batch size, all the models (and their
    onnxruntime sessions, fp32) called in turn round after round; peak memory per PyTorch model; and what was skipped
    because its predicted time per call (multiply-adds at the dense matmul rate) is over the limit.
    """
    device = torch.device(options.device)
    runtimes = build_runtimes(models, options)
    rows, skipped = [], []
    for dtype_name in options.dtypes:
        for model in models.values():
            model.to(dtype=DTYPES[dtype_name])
        for batch_size in options.batch_sizes:
            pixel_values = random_video(batch_size, options.frames, options.image_size, device, DTYPES[dtype_name])
            calls = {}
            for (name, runtime), runner in runtimes.items():
                if runtime == "onnxruntime" and dtype_name != "fp32":
                    continue  # the ONNX graphs are exported in fp32
                predicted_s = costs[name]["gmacs"] * batch_size / (rates[dtype_name] / 2)
                position = {"model": name, "size": size_name, "runtime": runtime, "dtype": dtype_name}
                if options.max_call_seconds and predicted_s > options.max_call_seconds:
                    skipped.append({**position, "batch_size": batch_size, "predicted_s": predicted_s})
                else:
                    calls[(name, runtime)] = functools.partial(infer, runner, pixel_values)
            for (name, runtime), (elapsed, cpu) in interleaved_times(
                calls, device, options.warmup, options.repeats
            ).items():
                latency = spread(elapsed)
                macs_per_second = costs[name]["gmacs"] * batch_size / latency["median"]
                row = {
                    "model": name,
                    "size": size_name,
                    "runtime": runtime,
                    "dtype": dtype_name,
                    "batch_size": batch_size,
                    "n": latency["n"],
                    "latency_ms": 1e3 * latency["median"],
                    "latency_min_ms": 1e3 * latency["min"],
                    "latency_max_ms": 1e3 * latency["max"],
                    "times_s": elapsed,
                    "cpu_s": statistics.median(cpu),
                    "clips_per_s": batch_size / latency["median"],
                    "gmacs_per_s": macs_per_second,
                    "matmul_fraction": macs_per_second / (rates[dtype_name] / 2),
                    "peak_mb": None,
                }
                if options.memory and runtime == "eager":
                    peak = peak_memory_bytes(calls[(name, runtime)], device, model_bytes(models[name]))
                    row["peak_mb"] = None if peak is None else peak / 2**20
                rows.append(row)
    for model in models.values():
        model.to(dtype=torch.float32)
    return rows, skipped


def paired_baselines(name: str, runtime: str) -> list[tuple[str, str]]:
    """What a (model, runtime) is compared with: an onnxruntime session with its PyTorch model; a PyTorch model with
    CLIP frame averaging, and the fused ILA also with the unfused one."""
    if runtime == "onnxruntime":
        return [(name, "eager")]
    if name == "clip":
        return []
    return [("clip", "eager"), *([("ila", "eager")] if name == "ila-fused" else [])]


def paired_comparisons(inference: list[dict], costs: dict[tuple[str, str], dict]) -> list[dict]:
    """The `paired_baselines` comparisons of the interleaved inference times, as per-round time ratios and the
    multiply-add rate ratio."""
    rows = {(row["model"], row["size"], row["runtime"], row["dtype"], row["batch_size"]): row for row in inference}
    comparisons = []
    for (name, size, runtime, dtype, batch_size), row in rows.items():
        for baseline_name, baseline_runtime in paired_baselines(name, runtime):
            baseline = rows.get((baseline_name, size, baseline_runtime, dtype, batch_size))
            if baseline is None:
                continue
            ratio = paired_ratios(row["times_s"], baseline["times_s"])
            mac_ratio = costs[(name, size)]["gmacs"] / costs[(baseline_name, size)]["gmacs"]
            comparisons.append(
                {
                    "model": name,
                    "runtime": runtime,
                    "size": size,
                    "dtype": dtype,
                    "batch_size": batch_size,
                    "baseline": f"{baseline_name} ({baseline_runtime})",
                    "time_ratio": ratio,
                    "mac_ratio": mac_ratio,
                    "rate_vs_baseline": mac_ratio / ratio["median"],
                }
            )
    return comparisons


def prepare_training_step(
    name: str, size: ViTSize, options: BenchmarkOptions, variant: TrainingVariant
) -> tuple[Callable[[], None], dict, int]:
    """
    A fresh model and AdamW in `variant`, after a first step (which creates the optimizer state, and compiles):
    the step to time (forward, cross-entropy, backward, AdamW step), what it trains, and the resident bytes (weights
    and optimizer state).
    """
    device = torch.device(options.device)
    torch.manual_seed(0)
    settings = {"recompute_frozen_mlp": variant.recompute_frozen_mlp} if name.startswith("ila") else {}
    model = build_model(name, size, options.frames, options.image_size, **settings).to(device).train()
    set_backbone_trainable(model, variant.trainable_backbone)
    if variant.checkpointing:
        enable_activation_checkpointing(model)
    forward = torch.compile(model) if variant.compiled else model
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5)
    pixel_values = random_video(options.train_batch_size, options.frames, options.image_size, device)
    labels = torch.randint(0, NUM_CLASSES.get(name, 400), (options.train_batch_size,), device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=options.train_dtype == "bf16")

    def backward():
        with autocast:
            loss = forward(pixel_values=pixel_values, labels=labels).loss
        loss.backward()

    def step():
        backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    backward()
    gradient_numel = sum(parameter.numel() for parameter in model.parameters() if parameter.grad is not None)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    optimizer_state = [
        value for state in optimizer.state.values() for value in state.values() if torch.is_tensor(value)
    ]
    trains = {
        "gradients_m": gradient_numel / 1e6,
        "trainable_m": sum(parameter.numel() for parameter in trainable) / 1e6,
        "optimizer_state_mb": tensor_bytes(optimizer_state) / 2**20,
    }
    return step, trains, model_bytes(model) + tensor_bytes(optimizer_state)


def measure_training(name: str, size_name: str, options: BenchmarkOptions) -> list[dict]:
    """One training step of each of the model's variants (`training_variants`), timed in turn round after round."""
    device = torch.device(options.device)
    prepared = {
        variant: prepare_training_step(name, SIZES[size_name], options, variant)
        for variant in training_variants(name, options)
    }
    steps = {variant: step for variant, (step, _, _) in prepared.items()}
    times = interleaved_times(steps, device, warmup=0, repeats=options.train_repeats)
    rows = []
    for variant, (step, trains, resident_bytes) in prepared.items():
        elapsed, cpu = times[variant]
        step_time = spread(elapsed)
        row = {
            "model": name,
            "size": size_name,
            "backbone": "fine-tuned" if variant.trainable_backbone else "frozen",
            "checkpointing": variant.checkpointing,
            "recompute_frozen_mlp": variant.recompute_frozen_mlp if name.startswith("ila") else None,
            "runtime": "torch.compile" if variant.compiled else "eager",
            "batch_size": options.train_batch_size,
            "dtype": options.train_dtype,
            "n": step_time["n"],
            "step_s": step_time["median"],
            "step_min_s": step_time["min"],
            "step_max_s": step_time["max"],
            "times_s": elapsed,
            "cpu_s": statistics.median(cpu),
            **trains,
            "peak_mb": None,
        }
        if options.memory:
            peak = peak_memory_bytes(step, device, resident_bytes)
            row["peak_mb"] = None if peak is None else peak / 2**20
        rows.append(row)
    return rows


def training_comparisons(training: list[dict]) -> list[dict]:
    """
    From the interleaved training steps of ILA's K400 recipe (frozen backbone, no activation checkpointing), as
    per-round time ratios and a peak-memory ratio: `recompute_frozen_mlp` on against off (what the recomputation
    costs), and torch.compile against eager.
    """
    comparisons = []
    for size in dict.fromkeys(row["size"] for row in training if row["model"] == "ila"):
        variants = {
            (row["recompute_frozen_mlp"], row["runtime"]): row
            for row in training
            if (row["model"], row["size"], row["backbone"], row["checkpointing"]) == ("ila", size, "frozen", False)
        }
        default = variants.get((True, "eager"))
        pairs = (
            ("recompute_frozen_mlp on vs off", default, variants.get((False, "eager"))),
            ("torch.compile vs eager", variants.get((True, "torch.compile")), default),
        )
        for comparison, row, baseline in pairs:
            if row is None or baseline is None:
                continue
            memory_ratio = row["peak_mb"] / baseline["peak_mb"] if row["peak_mb"] and baseline["peak_mb"] else None
            comparisons.append(
                {
                    "size": size,
                    "comparison": comparison,
                    "time_ratio": paired_ratios(row["times_s"], baseline["times_s"]),
                    "memory_ratio": memory_ratio,
                }
            )
    return comparisons


def machine_description(device: torch.device) -> dict:
    if device.type == "cuda":
        processor = torch.cuda.get_device_name(device)
    else:
        processor = platform.processor() or platform.machine()
        try:
            lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
            processor = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines() if "Model name" in line)
        except (OSError, subprocess.CalledProcessError, StopIteration):
            pass
    return {
        "device": device.type,
        "processor": processor,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }


def run_benchmark(options: BenchmarkOptions, log: Callable[[str], None] = print) -> dict:
    """Run every measurement `options` asks for; returns the results as a JSON-ready dict."""
    if options.threads:
        torch.set_num_threads(options.threads)
    device = torch.device(options.device)
    started = time.time()
    results = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": options.command,
        "options": asdict(options),
        "machine": machine_description(device),
        "matmul_gflops": {},
        "cost": [],
        "inference": [],
        "skipped": [],
        "training": [],
        "profile": [],
    }
    for dtype_name in options.dtypes:
        rate = matmul_rate(DTYPES[dtype_name], device, options.matmul_size)
        results["matmul_gflops"][dtype_name] = rate
        log(f"dense {options.matmul_size}^3 matmul, {dtype_name}: {rate:.1f} GFLOP/s")

    for size_name in dict.fromkeys([*options.sizes, *options.count_sizes]):
        names = [name for name in options.models if model_exists_at(name, size_name)]
        for name in names:
            cost = count_cost(name, SIZES[size_name], options.frames, options.image_size)
            results["cost"].append({"model": name, "size": size_name, **cost})
            log(f"{name} {size_name}: {cost['gmacs']:.1f} GMACs/view, {cost['params_m']:.1f} M parameters")
        if size_name not in options.sizes:
            continue

        torch.manual_seed(0)
        models = {
            name: build_model(name, SIZES[size_name], options.frames, options.image_size).to(device) for name in names
        }
        costs = {row["model"]: row for row in results["cost"] if row["size"] == size_name}
        rows, skipped = measure_inference(models, size_name, options, costs, results["matmul_gflops"])
        for row in rows:
            log(
                f"  inference {row['model']} ({row['runtime']}) {row['dtype']} batch {row['batch_size']}: "
                f"median {row['latency_ms']:.0f} ms of {row['n']}"
            )
        results["inference"] += rows
        results["skipped"] += skipped
        if options.profile:
            pixel_values = random_video(1, options.frames, options.image_size, device)
            for name in ("ila", "clip"):
                if name in models:
                    categories = profile_categories(functools.partial(infer, models[name], pixel_values), device)
                    results["profile"].append({"model": name, "size": size_name, "self_ms": categories})
        del models

        if options.train:
            for name in names:
                for row in measure_training(name, size_name, options):
                    results["training"].append(row)
                    log(
                        f"  training {name}, backbone {row['backbone']}, checkpointing {row['checkpointing']}, "
                        f"recompute {row['recompute_frozen_mlp']}, {row['runtime']}: median {row['step_s']:.1f} s"
                    )
    results["targets"] = evaluate_targets(results)
    results["wall_time_s"] = time.time() - started
    results["machine"]["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    return results


def evaluate_targets(results: dict) -> dict:
    """
    The comparisons the README quotes: ILA's multiply-add rate against CLIP's and onnxruntime against PyTorch (from
    the interleaved inference), fusion savings, frozen against full training memory, and the training-step variants.
    """
    cost = {(row["model"], row["size"]): row for row in results["cost"]}
    comparisons = paired_comparisons(results["inference"], cost)
    for row in comparisons:
        if row["model"].startswith("ila") and row["baseline"] == "clip (eager)" and row["dtype"] == "fp32":
            row["met"] = row["rate_vs_baseline"] >= 0.9
    fusion = []
    for (model, size), row in cost.items():
        if model == "ila-fused" and ("ila", size) in cost:
            fusion.append({"size": size, "gmacs": cost[("ila", size)]["gmacs"], "fused_gmacs": row["gmacs"]})
    training = {
        (row["model"], row["size"], row["backbone"], row["checkpointing"]): row
        for row in results["training"]
        if row["runtime"] == "eager" and row["recompute_frozen_mlp"] in (None, True)
    }
    frozen_memory = []
    for (model, size, backbone, checkpointing), row in training.items():
        full = training.get((model, size, "fine-tuned", checkpointing))
        if backbone == "frozen" and full is not None and row["peak_mb"] and full["peak_mb"]:
            ratio = row["peak_mb"] / full["peak_mb"]
            # Weights plus gradients and AdamW's two moments of what trains: the ratio no activation saving can beat.
            total, trainable = full["trainable_m"], row["trainable_m"]
            frozen_memory.append(
                {
                    "model": model,
                    "size": size,
                    "checkpointing": checkpointing,
                    "frozen_mb": row["peak_mb"],
                    "full_mb": full["peak_mb"],
                    "ratio": ratio,
                    "weights_and_optimizer_ratio": (total + 3 * trainable) / (4 * total),
                    "met": ratio <= 0.6,
                    "frozen_gradients_only_trainable": row["gradients_m"] == row["trainable_m"],
                }
            )
    return {
        "inference_comparisons": comparisons,
        "fusion": fusion,
        "frozen_vs_full_memory": frozen_memory,
        "training_comparisons": training_comparisons(results["training"]),
    }


# ---------------------------------------------------------------------------------------------------------------
# Report.
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    """One column of a results table: its header and its cell's value, a row's key or a function of the row."""

    header: str
    value: str | Callable[[dict], Any]

    def cell(self, row: dict) -> str:
        value = row[self.value] if isinstance(self.value, str) else self.value(row)
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.1f}"
        return str(value)


def _model_name(row: dict) -> str:
    return MODELS[row["model"]]


_COST_COLUMNS = (
    _Column("model", _model_name),
    _Column("size", "size"),
    _Column("GMACs", "gmacs"),
    _Column("attention", "attention_gmacs"),
    _Column("head", "head_gmacs"),
    _Column("GMACs w/o attention", lambda row: row["gmacs"] - row["attention_gmacs"]),
    _Column("params (M)", "params_m"),
    _Column("trainable (M)", "trainable_m"),
)
def _milliseconds_range(low: str, high: str) -> Callable[[dict], str]:
    return lambda row: f"{row[low]:.0f}-{row[high]:.0f}"


def _ratio_spread(key: str) -> Callable[[dict], str]:
    return lambda row: f"{row[key]['median']:.3f} ({row[key]['min']:.3f}-{row[key]['max']:.3f}, n={row[key]['n']})"


_INFERENCE_COLUMNS = (
    _Column("model", _model_name),
    _Column("size", "size"),
    _Column("runtime", "runtime"),
    _Column("dtype", "dtype"),
    _Column("batch", "batch_size"),
    _Column("n", "n"),
    _Column("median (ms)", "latency_ms"),
    _Column("min-max (ms)", _milliseconds_range("latency_min_ms", "latency_max_ms")),
    _Column("CPU (s)", "cpu_s"),
    _Column("clips/s", "clips_per_s"),
    _Column("GMAC/s", "gmacs_per_s"),
    _Column("of matmul rate", "matmul_fraction"),
    _Column("peak (MiB)", "peak_mb"),
)
_INFERENCE_COMPARISON_COLUMNS = (
    _Column("model", _model_name),
    _Column("runtime", "runtime"),
    _Column("size", "size"),
    _Column("dtype", "dtype"),
    _Column("batch", "batch_size"),
    _Column("against", "baseline"),
    _Column("time ratio: median (min-max, rounds)", _ratio_spread("time_ratio")),
    _Column("MAC ratio", "mac_ratio"),
    _Column("multiply-add rate ratio", "rate_vs_baseline"),
)
_TRAINING_COLUMNS = (
    _Column("model", _model_name),
    _Column("size", "size"),
    _Column("backbone", "backbone"),
    _Column("act. checkpointing", "checkpointing"),
    _Column("recompute frozen MLP", "recompute_frozen_mlp"),
    _Column("runtime", "runtime"),
    _Column("batch", "batch_size"),
    _Column("n", "n"),
    _Column("median step (s)", "step_s"),
    _Column("min-max (s)", lambda row: f"{row['step_min_s']:.2f}-{row['step_max_s']:.2f}"),
    _Column("CPU (s)", "cpu_s"),
    _Column("peak (MiB)", "peak_mb"),
    _Column("params with gradients (M)", "gradients_m"),
    _Column("optimizer state (MiB)", "optimizer_state_mb"),
)
_TRAINING_COMPARISON_COLUMNS = (
    _Column("size", "size"),
    _Column("ILA K400 recipe, frozen backbone", "comparison"),
    _Column("step time ratio: median (min-max, rounds)", _ratio_spread("time_ratio")),
    _Column("peak memory ratio", "memory_ratio"),
)
_PROFILE_COLUMNS = (_Column("operators", "operators"), _Column("ms", "ms"), _Column("share", "share"))


def _table(columns: Sequence[_Column], rows: Sequence[dict]) -> str:
    lines = ["| " + " | ".join(column.header for column in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(column.cell(row) for column in columns) + " |" for row in rows]
    return "\n".join(lines)


def _section(heading: str, explanation: str, columns: Sequence[_Column], rows: Sequence[dict]) -> str:
    return f"### {heading}\n\n" + (f"{explanation}\n\n" if explanation else "") + _table(columns, rows)


def format_markdown(results: dict) -> str:
    """The benchmark's report: the machine, then one table per measurement and the targets."""
    options, machine = results["options"], results["machine"]
    view = f"{options['frames']}x{options['image_size']}"
    rates = ", ".join(f"{dtype} {rate:.0f} GFLOP/s" for dtype, rate in results["matmul_gflops"].items())
    header = (
        f"Date: {results['date']}. Machine: {machine['processor']} ({machine['device']}, {machine['cpu_count']} CPUs, "
        f"{machine['torch_threads']} torch threads), torch {machine['torch']}, transformers {machine['transformers']}. "
        f"Load average at start {machine['load_average']}, at end {machine.get('load_average_end')}."
    )
    parts = [
        header,
        f"Command: `{results['command']}`",
        f"Dense {options['matmul_size']}x{options['matmul_size']} matmul: {rates}.",
        _section(
            f"Cost per view ({view}), random weights at real sizes",
            "GMACs: multiply-adds of matmuls and convolutions (FlopCounterMode / 2) for the whole model; attention: "
            "the part in batched matmuls (attention scores and weighted values); head: the classification head's "
            "share.",
            _COST_COLUMNS,
            results["cost"],
        ),
    ]
    if results["inference"]:
        parts.append(
            _section(
                "Inference",
                "The models (and the onnxruntime sessions) are called in turn, round after round, so that all see the "
                "same load; n: timed rounds. CPU: the process's CPU time per call, median. Peak memory: weights plus "
                "the peak of tensors allocated during the call. Of matmul rate: achieved multiply-adds/s over the "
                "dense matmul rate.",
                _INFERENCE_COLUMNS,
                results["inference"],
            )
        )
    if results["targets"]["inference_comparisons"]:
        parts.append(
            _section(
                "Inference, paired",
                "Ratios of the times of the same round (one call each), so that load changes between rounds cancel: "
                "each model against CLIP frame averaging (the fused ILA also against the unfused), onnxruntime against "
                "PyTorch. Multiply-add rate ratio: MAC ratio over the median time ratio (1: the same efficiency per "
                "multiply-add).",
                _INFERENCE_COMPARISON_COLUMNS,
                results["targets"]["inference_comparisons"],
            )
        )
    if results["skipped"]:
        parts.append(
            "Not timed (predicted time per call over --max-call-seconds): "
            + "; ".join(
                f"{row['model']} {row['size']} {row['dtype']} batch {row['batch_size']} (~{row['predicted_s']:.0f} s)"
                for row in results["skipped"]
            )
            + "."
        )
    if results["training"]:
        parts.append(
            _section(
                "One training step (forward, loss, backward, AdamW)",
                "Each model's variants are timed in turn, round after round (n rounds); the first step (optimizer "
                "state, compilation) is not timed. Peak memory: weights, optimizer state and the peak of tensors "
                "allocated during the step (activations, gradients).",
                _TRAINING_COLUMNS,
                results["training"],
            )
        )
    if results["targets"]["training_comparisons"]:
        parts.append(
            _section(
                "Training step, paired",
                "Per-round ratios of the step times, and the ratio of peak memories.",
                _TRAINING_COMPARISON_COLUMNS,
                results["targets"]["training_comparisons"],
            )
        )
    for profile in results["profile"]:
        total = sum(profile["self_ms"].values())
        rows = [
            {"operators": category, "ms": ms, "share": f"{100 * ms / total:.1f}%"}
            for category, ms in profile["self_ms"].items()
        ]
        model = f"{MODELS[profile['model']]}, {profile['size']}"
        heading = f"Where the time goes: {model}, batch 1 (torch profiler, self time)"
        parts.append(_section(heading, "", _PROFILE_COLUMNS, rows))
    targets = results["targets"]
    target_lines = [
        f"- ILA's multiply-add rate vs CLIP's (fp32, interleaved), {row['model']} {row['size']} batch "
        f"{row['batch_size']}: time ratio {row['time_ratio']['median']:.3f} (median of {row['time_ratio']['n']} "
        f"rounds), MAC ratio {row['mac_ratio']:.3f} -> {row['rate_vs_baseline']:.3f} (target >= 0.9: "
        f"{'met' if row['met'] else 'not met'})"
        for row in targets["inference_comparisons"]
        if "met" in row
    ]
    target_lines += [
        f"- fuse_for_inference, {row['size']}: {row['gmacs']:.1f} -> {row['fused_gmacs']:.1f} GMACs per view"
        for row in targets["fusion"]
    ]
    target_lines += [
        f"- frozen vs full fine-tuning peak memory, {row['model']} {row['size']}, checkpointing "
        f"{'on' if row['checkpointing'] else 'off'}: {row['frozen_mb']:.0f} / {row['full_mb']:.0f} MiB = "
        f"{row['ratio']:.2f} (target <= 0.6: {'met' if row['met'] else 'not met'}; weights, gradients and AdamW "
        f"state alone: {row['weights_and_optimizer_ratio']:.2f}); gradients only for trainable parameters: "
        f"{'yes' if row['frozen_gradients_only_trainable'] else 'no'}"
        for row in targets["frozen_vs_full_memory"]
    ]
    if target_lines:
        parts.append("### Targets\n\n" + "\n".join(target_lines))
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# Command line.
# ---------------------------------------------------------------------------------------------------------------


def benchmark_command(options: BenchmarkOptions, json_path: str | None = None, markdown_path: str | None = None) -> int:
    """Run the benchmark; print the markdown report, and write it and the JSON results where asked."""
    results = run_benchmark(options)
    report = format_markdown(results)
    print(report)
    if json_path:
        with open(json_path, "w") as file:
            json.dump(results, file, indent=1)
    if markdown_path:
        with open(markdown_path, "w") as file:
            file.write(report)
    return 0


__all__ = ["MODELS", "SIZES", "BenchmarkOptions", "build_model", "count_cost", "format_markdown", "run_benchmark"]
