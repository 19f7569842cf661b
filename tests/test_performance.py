"""Performance work: the benchmark suite, fuse_for_inference, torch.compile, and the released architectures' cost."""

import json
import statistics

import pytest
import torch

from ila_hf import ILAForVideoClassification, ILAVideoConfig
from ila_hf.benchmark import NUM_CLASSES, SIZES, BenchmarkOptions, ViTSize, count_cost
from ila_hf.cli import main as cli_main
from ila_hf.modeling_ila import ILAEncoderLayer
from tests.helpers import tiny_ila_config


def tiny_config(**overrides) -> ILAVideoConfig:
    """Narrower than the shared tiny config (width 32, 16 interaction channels): these tests build many models."""
    settings = {"hidden_size": 32, "intermediate_size": 64, "interaction_channels": 16, "num_labels": 5}
    return tiny_ila_config(**{**settings, **overrides})


def trained_looking(model: ILAForVideoClassification) -> ILAForVideoClassification:
    """Give the zero-initialised parts (skip Linears, point head) and BatchNorm statistics non-trivial values."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "tokens_proj" in name or "pair_fc2" in name or "norm.weight" in name or "norm.bias" in name:
                parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
            elif name.startswith("head.classifier"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator))
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.2 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))
            elif name.endswith("class_embeddings"):
                buffer.copy_(torch.randn(buffer.shape, generator=generator))
    return model


# --- fuse_for_inference -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("interaction_variant", ["depthwise", "conv"])
@pytest.mark.parametrize("head", ["linear", "text"])
def test_fused_model_gives_the_same_outputs(interaction_variant, head):
    torch.manual_seed(0)
    model = trained_looking(ILAForVideoClassification(tiny_config(interaction_variant=interaction_variant, head=head)))
    pixel_values = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        reference = model.eval()(pixel_values)
        fused = model.fuse_for_inference()(pixel_values)
    assert reference.logits.abs().max() > 0.1
    torch.testing.assert_close(fused.logits, reference.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused.interactive_points, reference.interactive_points, atol=1e-5, rtol=0)
    torch.testing.assert_close(fused.alignment_loss, reference.alignment_loss, atol=1e-5, rtol=0)


def test_fusing_a_model_in_training_mode_raises():
    model = ILAForVideoClassification(tiny_config()).train()
    with pytest.raises(RuntimeError, match="eval"):
        model.fuse_for_inference()


def test_a_fused_model_refuses_to_train():
    model = ILAForVideoClassification(tiny_config()).eval().fuse_for_inference()
    assert model.is_fused
    with pytest.raises(RuntimeError, match="fused for inference"):
        model.train()


# --- multiply-adds of the released architectures (counted on the meta device: no compute) -----------------------


def analytic_macs(name: str, size: ViTSize, frames: int = 8, image_size: int = 224) -> tuple[int, int]:
    """
    (multiply-adds of the Linears and convolutions, of the attention products) of one view, module by module from
    the architecture (released defaults: 256 interaction channels, 1 MIT layer, 2 prompt layers).
    """
    D, I, E, patch = size.hidden_size, size.intermediate_size, size.projection_dim, size.patch_size
    T, S, C = frames, image_size // patch, 256
    N, L, P = S * S, S * S + 1, frames - 1  # patches, tokens and adjacent-frame pairs
    K = NUM_CLASSES.get(name, 400)
    # CLIP per frame: patch embedding; per layer q, k, v, out and the MLP; the projection of the class token.
    linear = T * (N * 3 * patch * patch * D + size.num_layers * (4 * L * D * D + 2 * L * D * I) + D * E)
    attention = T * size.num_layers * 2 * L * L * D  # scores and weighted values
    if name == "clip":
        return linear + E * K, attention  # + the linear classifier
    # Per ILA layer (B = 1): message_fc and the two skip Linears on every token of every frame ...
    ila_layer = 3 * T * L * D * D
    # ... the interaction block on each pair's (2D, S, S) map: depthwise 3x3, pointwise 2D -> C, 3x3 C -> C (K400)
    # or 3x3 2D -> C, 3x3 C -> C (SSv2) ...
    if name == "ila":
        ila_layer += P * N * (2 * D * 9 + 2 * D * C + C * C * 9)
    else:
        ila_layer += P * N * (2 * D * C * 9 + C * C * 9)
    # ... the point predictor: 3x3 C -> C/2, 2x2 max-pool, 3x3 C/2 -> C/2, then the grouped pair Linears ...
    ila_layer += P * (N * C * (C // 2) * 9 + (S // 2) ** 2 * (C // 2) ** 2 * 9 + (C // 4) ** 2 + 4 * (C // 8))
    # ... the temporal conv over 3 frames (C/2 -> C/2) and interaction_fc (C/2 -> D) on every patch of every frame.
    ila_layer += T * N * (3 * C // 2) * (C // 2) + T * N * (C // 2) * D
    linear += size.num_layers * ila_layer + T * 12 * E * E  # + the MIT layer: q, k, v, out and a 4E MLP
    attention += size.num_layers * 2 * P * N * D + 2 * T * T * E  # + pooling the masked tokens; the MIT's products
    if name == "ila-ssv2":
        return linear + E * K, attention  # + the linear classifier
    # Text head: the visual projection of the frame-averaged patch tokens, 2 prompt layers of cross-attention from
    # the K classes to the N patches (q and out on K, k and v on N, a 4E MLP on K), the class similarities.
    linear += N * D * E + 2 * (2 * K * E * E + 2 * N * E * E + 8 * K * E * E)
    attention += 2 * 2 * K * N * E + K * E
    return linear, attention


@pytest.mark.parametrize(("name", "size"), [("ila", "B/16"), ("ila-ssv2", "B/16"), ("ila", "B/32"), ("clip", "B/16")])
def test_multiply_adds_match_an_analytic_count_of_every_module(name, size):
    linear, attention = analytic_macs(name, SIZES[size])
    cost = count_cost(name, SIZES[size], frames=8, image_size=224)
    assert cost["gmacs"] == pytest.approx((linear + attention) / 1e9, rel=1e-9)
    assert cost["attention_gmacs"] == pytest.approx(attention / 1e9, rel=1e-9)


def test_fusion_saves_the_interaction_projection():
    saved = count_cost("ila", SIZES["B/16"], 8, 224)["gmacs"] - count_cost("ila-fused", SIZES["B/16"], 8, 224)["gmacs"]
    # Per layer and position: 3*128*128 + 128*768 + 768*768 multiply-adds become 3*128*768.
    expected = 12 * 8 * 196 * (3 * 128 * 128 + 128 * 768 + 768 * 768 - 3 * 128 * 768) / 1e9
    assert saved == pytest.approx(expected, rel=1e-9)


# --- torch.compile ----------------------------------------------------------------------------------------------


def test_model_compiles_without_graph_breaks():
    model = ILAForVideoClassification(tiny_config(num_hidden_layers=1, num_frames=3)).eval()
    pixel_values = torch.randn(1, 3, 3, 64, 64)
    compiled = torch.compile(model, fullgraph=True, backend="eager")  # fullgraph: any graph break raises
    with torch.no_grad():
        torch.testing.assert_close(compiled(pixel_values).logits, model(pixel_values).logits)


@pytest.mark.parametrize("frozen_clip", [False, True], ids=["trained CLIP layer", "frozen CLIP layer"])
def test_encoder_layer_compiles_with_inductor_in_training_mode(frozen_clip):
    torch.manual_seed(0)
    config = tiny_config(num_frames=3)
    config._attn_implementation = "sdpa"  # what a model sets; a bare layer's config would leave it unset
    layer = ILAEncoderLayer(config).train()
    for clip_part in (layer.self_attn, layer.layer_norm1, layer.mlp, layer.layer_norm2):
        clip_part.requires_grad_(not frozen_clip)  # frozen: the MLP's hidden activations are recomputed
    hidden_states = torch.randn(1, 3, 17, 32, requires_grad=True)  # (B, T, L, D)
    compiled = torch.compile(layer, fullgraph=True)
    outputs, _, alignment_loss, _ = compiled(hidden_states)
    (outputs.sum() + alignment_loss).backward()
    assert hidden_states.grad is not None and layer.message_fc.weight.grad is not None
    assert (layer.mlp.fc1.weight.grad is None) == frozen_clip


# --- the benchmark suite ----------------------------------------------------------------------------------------


def test_peers_build_and_count_at_tiny_size():
    for name in ("xclip", "timesformer", "videomae"):
        cost = count_cost(name, SIZES["tiny"], frames=4, image_size=64)
        assert cost["gmacs"] > cost["attention_gmacs"] > 0
        assert cost["trainable_m"] == cost["params_m"]


def test_onnxruntime_timing_is_refused_where_it_would_time_nothing():
    with pytest.raises(ValueError, match=r"onnxruntime's CPU provider: use --device cpu, not 'cuda'"):
        BenchmarkOptions(onnxruntime=True, device="cuda")
    with pytest.raises(ValueError, match=r"fp32 ONNX graphs: add fp32 to --dtypes \(given \['bf16'\]\)"):
        BenchmarkOptions(onnxruntime=True, dtypes=["bf16"], device="cpu")


@pytest.mark.slow  # two ONNX exports and the training variants, ~1 min
def test_benchmark_command_writes_json_and_markdown(tmp_path, capsys):
    json_path, markdown_path = tmp_path / "results.json", tmp_path / "results.md"
    arguments = [
        "benchmark",
        *("--models", "ila", "ila-fused", "clip"),
        *("--sizes", "tiny", "--count-sizes"),
        *("--frames", "4", "--image-size", "64"),
        *("--warmup", "0", "--repeats", "3", "--train-repeats", "2", "--matmul-size", "128"),
        "--onnxruntime",
        *("--json", str(json_path), "--markdown", str(markdown_path)),
    ]
    assert cli_main(arguments) == 0

    results = json.loads(json_path.read_text())
    inference = {(row["model"], row["runtime"]): row for row in results["inference"]}
    assert set(inference) == {
        ("ila", "eager"),
        ("ila-fused", "eager"),
        ("clip", "eager"),
        ("ila", "onnxruntime"),
        ("ila-fused", "onnxruntime"),
    }
    for row in inference.values():
        assert row["n"] == len(row["times_s"]) == 3
        assert row["latency_min_ms"] <= row["latency_ms"] <= row["latency_max_ms"]
        assert row["latency_ms"] == pytest.approx(1e3 * statistics.median(row["times_s"]))
        assert row["peak_mb"] > 0 if row["runtime"] == "eager" else row["peak_mb"] is None  # PyTorch's allocations
    # The paired comparisons are the medians of the ratios of the same rounds' times.
    comparisons = {
        (row["model"], row["runtime"], row["baseline"]): row for row in results["targets"]["inference_comparisons"]
    }
    assert set(comparisons) == {
        ("ila", "eager", "clip (eager)"),
        ("ila-fused", "eager", "clip (eager)"),
        ("ila-fused", "eager", "ila (eager)"),
        ("ila", "onnxruntime", "ila (eager)"),
        ("ila-fused", "onnxruntime", "ila-fused (eager)"),
    }
    for (model, runtime, baseline), row in comparisons.items():
        baseline_model, baseline_runtime = baseline[:-1].split(" (")  # "name (runtime)"
        times = zip(inference[(model, runtime)]["times_s"], inference[(baseline_model, baseline_runtime)]["times_s"])
        ratios = [time / baseline_time for time, baseline_time in times]
        assert row["time_ratio"]["median"] == pytest.approx(statistics.median(ratios))
        assert row["time_ratio"]["n"] == 3

    ila_training = [row for row in results["training"] if row["model"] == "ila"]
    assert sorted((row["backbone"], row["checkpointing"], row["recompute_frozen_mlp"]) for row in ila_training) == [
        ("fine-tuned", False, True),
        ("fine-tuned", True, True),
        ("frozen", False, False),
        ("frozen", False, True),
        ("frozen", True, True),
    ]
    for row in ila_training:
        assert row["n"] == len(row["times_s"]) == 2
        # Gradients and optimizer state (two fp32 moments) for the trainable parameters only.
        assert row["gradients_m"] == pytest.approx(row["trainable_m"])
        assert row["optimizer_state_mb"] == pytest.approx(2 * 4 * row["trainable_m"] * 1e6 / 2**20, rel=0.01)
    frozen, full = ila_training[0], next(row for row in ila_training if row["backbone"] == "fine-tuned")
    assert frozen["trainable_m"] < results["cost"][0]["params_m"]
    for memory in results["targets"]["frozen_vs_full_memory"]:  # P weights + 3 x T (gradients, two moments) vs 4 x P
        expected = (full["trainable_m"] + 3 * frozen["trainable_m"]) / (4 * full["trainable_m"])
        assert memory["weights_and_optimizer_ratio"] == pytest.approx(expected)
    (recompute,) = results["targets"]["training_comparisons"]
    frozen_default_steps = [row for row in ila_training if row["backbone"] == "frozen" and not row["checkpointing"]]
    on, off = sorted(frozen_default_steps, key=lambda row: not row["recompute_frozen_mlp"])
    assert recompute["comparison"] == "recompute_frozen_mlp on vs off"
    expected_ratio = statistics.median(a / b for a, b in zip(on["times_s"], off["times_s"]))
    assert recompute["time_ratio"]["median"] == pytest.approx(expected_ratio)
    # At this size the optimizer step's peak hides the MLP activations; test_modeling_ila counts what is kept.
    assert recompute["memory_ratio"] == pytest.approx(on["peak_mb"] / off["peak_mb"])

    markdown = markdown_path.read_text()
    for heading in ("### Inference", "### Inference, paired", "### Training step, paired", "### Targets"):
        assert heading in markdown
    assert markdown in capsys.readouterr().out
