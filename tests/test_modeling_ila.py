"""Behaviour of the ILA model: CLIP equivalence at init, the alignment maths, heads, save/load and remote code."""

import itertools
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from torch.nn import functional as F
from transformers import (
    AutoConfig,
    AutoModelForVideoClassification,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from ila_hf import ILAForVideoClassification, ILAVideoConfig, ILAVideoModel
from ila_hf.modeling_ila import merge_pairs_into_frames

from .conftest import TINY_CLIP_VISION
from .helpers import randomise_ila_modules
from .helpers import tiny_ila_config


NUM_FRAMES = 4
LABELS = {0: "left", 1: "right", 2: "up"}


def tiny_config(**overrides) -> ILAVideoConfig:
    return tiny_ila_config(**{"num_frames": NUM_FRAMES, "id2label": LABELS, **overrides})


def random_video(batch_size: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, NUM_FRAMES, 3, 64, 64, generator=generator)


def test_fresh_model_reproduces_clip_frame_embeddings(tiny_clip_dir):
    clip = CLIPVisionModelWithProjection.from_pretrained(tiny_clip_dir).eval()
    model = ILAForVideoClassification.from_clip(str(tiny_clip_dir), num_frames=NUM_FRAMES, id2label=LABELS).eval()
    video = random_video()

    with torch.no_grad():
        frame_embeds = model(pixel_values=video).frame_embeds
        clip_embeds = clip(pixel_values=video.flatten(0, 1)).image_embeds.view(2, NUM_FRAMES, -1)

    torch.testing.assert_close(frame_embeds, clip_embeds, rtol=0, atol=1e-6)


def test_from_clip_accepts_a_full_clip_model_checkpoint(tmp_path, tiny_clip_dir):
    clip_config = CLIPConfig(
        text_config=CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2),
        vision_config=TINY_CLIP_VISION,
        projection_dim=64,
    )
    torch.manual_seed(1)
    clip = CLIPModel(clip_config).eval()
    clip.save_pretrained(tmp_path)

    model = ILAForVideoClassification.from_clip(str(tmp_path), num_frames=NUM_FRAMES, id2label=LABELS).eval()
    video = random_video()
    with torch.no_grad():
        expected = clip.get_image_features(pixel_values=video.flatten(0, 1)).pooler_output.view(2, NUM_FRAMES, -1)
        torch.testing.assert_close(model(pixel_values=video).frame_embeds, expected, rtol=0, atol=1e-6)


def save_full_clip(folder, clip_tokenizer_dir, projection_dim=64):
    """A tiny CLIPModel whose sub-configs do not repeat the top-level projection_dim (they keep the default 512), saved
    with CLIP's tokenizer, as Hub CLIP repositories are."""
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    vision = {key: value for key, value in TINY_CLIP_VISION.items() if key != "projection_dim"}
    text = dict(
        vocab_size=tokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
        num_attention_heads=2, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(1)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)).eval()
    assert clip.config.vision_config.projection_dim == clip.config.text_config.projection_dim == 512
    clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return clip, tokenizer


def test_from_clip_takes_projection_dim_from_the_top_of_a_clip_model_and_reports_nothing(
    tmp_path, clip_tokenizer_dir, capfd
):
    clip, _ = save_full_clip(tmp_path, clip_tokenizer_dir)
    capfd.readouterr()
    model = ILAForVideoClassification.from_clip(str(tmp_path), num_frames=NUM_FRAMES, id2label=LABELS).eval()
    assert "LOAD REPORT" not in capfd.readouterr().err  # the unused text_model.* weights are expected
    video = random_video()
    with torch.no_grad():
        expected = clip.get_image_features(pixel_values=video.flatten(0, 1)).pooler_output.view(2, NUM_FRAMES, 64)
        torch.testing.assert_close(model(pixel_values=video).frame_embeds, expected, rtol=0, atol=1e-6)


def test_from_clip_with_class_names_is_ready_to_classify_with_the_text_head(tmp_path, clip_tokenizer_dir, capfd):
    clip, tokenizer = save_full_clip(tmp_path, clip_tokenizer_dir)
    names = ["abseiling", "playing cello", "zumba"]
    capfd.readouterr()
    model = ILAForVideoClassification.from_clip(str(tmp_path), num_frames=NUM_FRAMES, head="text", class_names=names)
    assert "LOAD REPORT" not in capfd.readouterr().err  # neither for the vision nor for the text tower
    with torch.no_grad():
        expected = clip.get_text_features(**tokenizer(names, padding=True, return_tensors="pt")).pooler_output
    torch.testing.assert_close(model.head.class_embeddings, expected)
    assert model.config.id2label == dict(enumerate(names)) and model.config.label2id["zumba"] == 2
    with torch.no_grad():
        logits = model.eval()(pixel_values=random_video()).logits
    assert logits.shape == (2, 3) and logits.std(dim=-1).min() > 0


def test_from_clip_validates_the_config_before_reading_weights(tmp_path):
    clip_config = CLIPConfig(vision_config=TINY_CLIP_VISION, projection_dim=48)
    clip_config.save_pretrained(tmp_path)  # no weights at all: the config alone must be refused
    with pytest.raises(StrictDataclassClassValidationError, match="projection_dim must be a multiple of 64, got 48"):
        ILAForVideoClassification.from_clip(str(tmp_path), num_frames=NUM_FRAMES)


def test_a_text_head_without_class_embeddings_refuses_to_score():
    model = ILAForVideoClassification(tiny_config(head="text")).eval()
    message = r"text head has no class embeddings .*set_class_names\(class_names, clip_text\)"
    with pytest.raises(ValueError, match=message):
        model(pixel_values=random_video())


def test_alignment_masks_follow_the_spec_formula():
    model = ILAVideoModel(tiny_config()).eval()
    alignment = model.encoder.layers[0].alignment
    points = torch.tensor([[0.1, -0.6], [-0.9, 0.35], [0.0, 0.0]])
    grid = [-1 + 2 * i / 3 for i in range(4)]

    def weight(g: float, p: float) -> float:
        distance = abs(g - p)
        return 1.0 if distance <= 0.25 else max(0.0, 1 - 1.5 * (distance - 0.25))

    def mask(x: float, y: float) -> torch.Tensor:
        return torch.tensor([[weight(grid[row], y) * weight(grid[col], x) for col in range(4)] for row in range(4)])

    expected_eval = torch.stack([mask(x, y) for x, y in points.tolist()])
    torch.testing.assert_close(alignment.alignment_masks(points), expected_eval)

    alignment.train()
    alignment.jitter_delta.fill_(0.2)
    offsets = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0), (1, 1), (-1, -1), (1, -1), (-1, 1)]
    expected_train = torch.stack(
        [torch.stack([mask(x + 0.2 * dx, y + 0.2 * dy) for dx, dy in offsets]).mean(0) for x, y in points.tolist()]
    )
    torch.testing.assert_close(alignment.alignment_masks(points), expected_train)


def test_merge_pairs_into_frames_takes_ends_and_averages_the_middle():
    earlier = torch.tensor([[10.0, 20.0, 30.0]])  # pairs (0,1), (1,2), (2,3) of a 4-frame clip
    later = torch.tensor([[1.0, 2.0, 3.0]])
    assert merge_pairs_into_frames(earlier, later).tolist() == [[10.0, (20 + 1) / 2, (30 + 2) / 2, 3.0]]


def test_alignment_module_matches_a_direct_computation():
    """Steps 2-8 for one layer, written here with explicit loops over pairs and frames."""
    torch.manual_seed(0)
    config = tiny_config()
    model = ILAVideoModel(config).eval()
    randomise_ila_modules(model)
    alignment = model.encoder.layers[0].alignment
    batch_size, grid, hidden = 2, config.grid_size, config.hidden_size
    messages = torch.randn(batch_size, NUM_FRAMES, 1 + grid * grid, hidden)

    with torch.no_grad():
        aligned, interaction, loss, points = alignment(messages)
        maps = messages[:, :, 1:].permute(0, 1, 3, 2).reshape(batch_size, NUM_FRAMES, hidden, grid, grid)
        expected_aligned = torch.zeros_like(messages)
        expected_aligned[:, :, 0] = messages[:, :, 0]
        masked = {}
        losses = []
        for b, pair in itertools.product(range(batch_size), range(NUM_FRAMES - 1)):
            features = alignment.interaction_block(torch.cat([maps[b, pair], maps[b, pair + 1]])[None])
            for side, frame in ((0, pair), (1, pair + 1)):
                masked[b, pair, side] = alignment.alignment_masks(points[b, pair, side]) * maps[b, frame]
            pooled = [masked[b, pair, side].sum(dim=(-2, -1)) for side in (0, 1)]
            losses.append(1 - F.cosine_similarity(pooled[0], pooled[1], dim=0))
            assert features.shape == (1, config.interaction_channels, grid, grid)
        for b, frame in itertools.product(range(batch_size), range(NUM_FRAMES)):
            sides = []
            if frame < NUM_FRAMES - 1:
                sides.append(masked[b, frame, 0])
            if frame > 0:
                sides.append(masked[b, frame - 1, 1])
            expected_aligned[b, frame, 1:] = torch.stack(sides).mean(0).flatten(1).T

    torch.testing.assert_close(aligned, expected_aligned, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss, torch.stack(losses).mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(interaction[:, :, 0], messages[:, :, 0])
    assert points.shape == (batch_size, NUM_FRAMES - 1, 2, 2)
    assert points.abs().max() <= config.point_scale


def test_interaction_variants_have_the_released_layers():
    depthwise = ILAVideoModel(tiny_config(interaction_variant="depthwise")).encoder.layers[0].alignment
    conv = ILAVideoModel(tiny_config(interaction_variant="conv")).encoder.layers[0].alignment
    pair_channels = 2 * TINY_CLIP_VISION["hidden_size"]

    depthwise_convs = [block.conv for block in depthwise.interaction_block]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.groups) for c in depthwise_convs] == [
        (pair_channels, pair_channels, (3, 3), pair_channels),
        (pair_channels, 256, (1, 1), 1),
        (256, 256, (3, 3), 1),
    ]
    conv_convs = [block.conv for block in conv.interaction_block]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.groups) for c in conv_convs] == [
        (pair_channels, 256, (3, 3), 1),
        (256, 256, (3, 3), 1),
    ]


@pytest.mark.slow
def test_saved_folder_loads_with_trust_remote_code_without_ila_hf(tmp_path):
    torch.manual_seed(0)
    model = ILAForVideoClassification(tiny_config()).eval()
    randomise_ila_modules(model)
    model.save_pretrained(tmp_path / "model")
    video = random_video()
    torch.save(video, tmp_path / "video.pt")
    with torch.no_grad():
        torch.save(model(pixel_values=video).logits, tmp_path / "expected.pt")

    assert json.loads((tmp_path / "model" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_ila.ILAVideoConfig",
        "AutoModelForVideoClassification": "modeling_ila.ILAForVideoClassification",
        "AutoModel": "modeling_ila.ILAVideoModel",
    }
    with torch.no_grad():
        torch.save(model.ila(pixel_values=video).frame_embeds, tmp_path / "frame_embeds.pt")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["ila_hf"] = None  # any import of the package now fails
        import torch
        from transformers import AutoModel, AutoModelForVideoClassification
        torch.set_num_threads({torch.get_num_threads()})  # the expected outputs' thread count: the same sums' order
        try:
            import ila_hf
        except ImportError:
            pass
        else:
            raise SystemExit("ila_hf should not be importable here")
        model = AutoModelForVideoClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True)
        model.eval()
        with torch.no_grad():
            logits = model(pixel_values=torch.load({str(tmp_path / "video.pt")!r})).logits
        torch.testing.assert_close(logits, torch.load({str(tmp_path / "expected.pt")!r}), rtol=0, atol=0)
        encoder = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert type(encoder).__name__ == "ILAVideoModel", type(encoder)
        with torch.no_grad():
            frame_embeds = encoder(pixel_values=torch.load({str(tmp_path / "video.pt")!r})).frame_embeds
        torch.testing.assert_close(frame_embeds, torch.load({str(tmp_path / "frame_embeds.pt")!r}), rtol=0, atol=0)
        print(type(model).__module__, type(model).__name__)
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    module_name, class_name = result.stdout.split()
    assert class_name == "ILAForVideoClassification" and module_name.startswith("transformers_modules")


def test_frozen_backbone_gets_no_gradients(tiny_clip_dir):
    model = ILAForVideoClassification.from_clip(str(tiny_clip_dir), num_frames=NUM_FRAMES, id2label=LABELS)
    model.train()
    model(pixel_values=random_video(), labels=torch.tensor([0, 2])).loss.backward()

    clip_names = {f"ila.{name}" for name, _ in model.ila.clip_backbone_parameters()}
    with_gradient = {name for name, p in model.named_parameters() if p.grad is not None}
    assert clip_names and not clip_names & with_gradient
    assert all(not p.requires_grad for name, p in model.named_parameters() if name in clip_names)
    # The release's zero-initialised modules still receive gradient at step 0.
    assert {"ila.encoder.layers.1.aligned_tokens_proj.weight", "ila.encoder.layers.0.alignment.point_predictor"
            ".pair_fc2.bias", "mit.position_embedding", "head.classifier.weight"} <= with_gradient


def test_unfrozen_backbone_trains_every_parameter(tiny_clip_dir):
    model = ILAForVideoClassification.from_clip(
        str(tiny_clip_dir), num_frames=NUM_FRAMES, id2label=LABELS, freeze_backbone=False
    )
    model.train()
    randomise_ila_modules(model)
    model(pixel_values=random_video(), labels=torch.tensor([0, 2])).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_eval_is_deterministic_and_training_jitters_the_masks():
    torch.manual_seed(0)
    model = ILAForVideoClassification(tiny_config()).eval()
    randomise_ila_modules(model)
    video = random_video()
    with torch.no_grad():
        first, second = model(pixel_values=video), model(pixel_values=video)
        torch.testing.assert_close(first.logits, second.logits, rtol=0, atol=0)

        # Switch only the alignment modules themselves to training (BatchNorm and dropout stay in eval).
        for layer in model.ila.encoder.layers:
            layer.alignment.training = True
        model.set_jitter_delta(0.0)
        no_jitter = model(pixel_values=video)
        model.set_jitter_delta(0.2)
        jittered = model(pixel_values=video)

    torch.testing.assert_close(no_jitter.logits, first.logits, rtol=1e-5, atol=1e-6)
    assert (jittered.logits - first.logits).abs().max() > 1e-4
    # Layer 0 predicts its points before any mask is applied; later layers see the jittered tokens.
    torch.testing.assert_close(jittered.interactive_points[:, 0], first.interactive_points[:, 0])


def test_jitter_delta_is_not_saved(tmp_path):
    model = ILAForVideoClassification(tiny_config())
    model.set_jitter_delta(0.025)
    model.save_pretrained(tmp_path)
    reloaded = ILAForVideoClassification.from_pretrained(tmp_path)
    assert reloaded.ila.encoder.layers[1].alignment.jitter_delta.item() == pytest.approx(0.2)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((2, 3, 3, 64, 64), r"num_frames=4.*got \(2, 3, 3, 64, 64\)"),
        ((2 * NUM_FRAMES, 3, 64, 64), r"got \(8, 3, 64, 64\)"),
        ((2, NUM_FRAMES, 3, 32, 32), r"height=64, width=64\), got \(2, 4, 3, 32, 32\)"),
    ],
)
def test_wrong_input_shapes_raise_value_error_naming_the_expected_shape(shape, message):
    model = ILAForVideoClassification(tiny_config())
    with pytest.raises(ValueError, match=message):
        model(pixel_values=torch.zeros(shape))


def test_a_frozen_mlp_is_recomputed_in_training_with_the_same_gradients_and_less_kept():
    torch.manual_seed(0)
    model = ILAForVideoClassification(tiny_config(intermediate_size=96, classifier_dropout=0.0, drop_path_rate=0.1))
    randomise_ila_modules(model)
    model.train()
    video, labels = random_video(), torch.tensor([1, 0])
    intermediate = model.config.intermediate_size  # a width no other tensor of this model has

    def train_step():
        """Loss, gradients and the activations of the MLP's hidden width kept for the backward (their storages)."""
        kept = set()

        def keep(tensor):
            if tensor.dim() and tensor.shape[-1] == intermediate:
                kept.add(tensor.untyped_storage().data_ptr())
            return tensor

        model.zero_grad()
        torch.manual_seed(1)  # the same drop-path draws
        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            loss = model(pixel_values=video, labels=labels).loss
        loss.backward()
        gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        return loss.detach(), gradients, kept

    recomputed = train_step()
    for layer in model.ila.encoder.layers:
        layer.recompute_frozen_mlp = False
    stored = train_step()

    torch.testing.assert_close(recomputed[0], stored[0], rtol=0, atol=0)
    assert recomputed[1].keys() == stored[1].keys()
    assert not [name for name in stored[1] if name.startswith("ila.encoder") and ".mlp." in name]  # frozen
    for name, gradient in stored[1].items():
        torch.testing.assert_close(recomputed[1][name], gradient, rtol=1e-6, atol=1e-7, msg=name)
    # QuickGELU keeps its input and its sigmoid: 2 hidden-width tensors per frozen layer; recomputed, none.
    weights = {parameter.untyped_storage().data_ptr() for parameter in model.parameters()}
    assert len(stored[2] - weights) == 2 * model.config.num_hidden_layers and not recomputed[2] - weights


def test_loss_adds_weighted_alignment_loss_and_accepts_soft_labels():
    torch.manual_seed(0)
    model = ILAForVideoClassification(tiny_config(alignment_loss_weight=0.5)).eval()
    randomise_ila_modules(model)
    video, labels = random_video(), torch.tensor([2, 0])
    with torch.no_grad():
        hard = model(pixel_values=video, labels=labels)
        soft = model(pixel_values=video, labels=F.one_hot(labels, 3).float())

    torch.testing.assert_close(hard.classification_loss, F.cross_entropy(hard.logits, labels))
    torch.testing.assert_close(hard.loss, hard.classification_loss + 0.5 * hard.alignment_loss)
    torch.testing.assert_close(soft.loss, hard.loss)
    assert hard.alignment_loss > 0


def test_text_head_scores_cosine_similarity_with_class_name_embeddings(tmp_path, clip_tokenizer_dir):
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    torch.manual_seed(0)
    text_model = CLIPTextModelWithProjection(
        CLIPTextConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            projection_dim=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    ).eval()
    names = ["abseiling", "playing cello", "zumba"]
    model = ILAForVideoClassification(tiny_config(head="text", id2label={0: "x"})).eval()
    model.set_class_names(names, text_model, tokenizer)

    with torch.no_grad():
        tokens = tokenizer(names, padding=True, return_tensors="pt")
        expected_embeddings = text_model(**tokens).text_embeds
    torch.testing.assert_close(model.head.class_embeddings, expected_embeddings)
    assert model.config.id2label == {0: "abseiling", 1: "playing cello", 2: "zumba"}

    # With the prompts switched off the logits are exp(logit_scale) * cos(video, class).
    with torch.no_grad():
        model.head.prompt_generator.alpha.zero_()
        output = model(pixel_values=random_video())
    expected_logits = (1 / 0.07) * F.cosine_similarity(
        output.video_embeds[:, None], expected_embeddings[None], dim=-1
    )
    torch.testing.assert_close(output.logits, expected_logits, rtol=1e-5, atol=1e-5)

    model.save_pretrained(tmp_path)
    reloaded = ILAForVideoClassification.from_pretrained(tmp_path)
    torch.testing.assert_close(reloaded.head.class_embeddings, expected_embeddings)
    assert reloaded.config.id2label[1] == "playing cello"


@pytest.mark.parametrize("variant", ["depthwise", "conv"])
def test_released_eval_statistics_equal_train_mode_without_jitter_and_update_nothing(variant):
    torch.manual_seed(0)
    config = tiny_config(interaction_variant=variant, batchnorm_eval_statistics="batch", classifier_dropout=0.0)
    model = ILAForVideoClassification(config)
    randomise_ila_modules(model)
    video = random_video(batch_size=3)
    running_statistics = {name: buffer.clone() for name, buffer in model.named_buffers() if "running" in name}
    with torch.no_grad():
        released = model.eval()(pixel_values=video).logits
        for name, buffer in model.named_buffers():
            if name in running_statistics:
                torch.testing.assert_close(buffer, running_statistics[name], rtol=0, atol=0, msg=name)
        model.set_jitter_delta(0.0)
        train_mode = model.train()(pixel_values=video).logits  # batch statistics (and updates them)
        standard = ILAForVideoClassification(tiny_config(interaction_variant=variant, classifier_dropout=0.0)).eval()
        standard.load_state_dict({**model.state_dict(), **running_statistics})
        running = standard(pixel_values=video).logits

    torch.testing.assert_close(released, train_mode, rtol=0, atol=1e-6)
    assert (released - running).abs().max() > 1e-3  # the setting does change evaluation
    with pytest.raises(ValueError, match="folds BatchNorm's running statistics.*batchnorm_eval_statistics='batch'"):
        model.eval().fuse_for_inference()


def test_set_class_names_refuses_the_linear_head():
    model = ILAForVideoClassification(tiny_config())
    with pytest.raises(ValueError, match="needs the text head.*head='linear'"):
        model.set_class_names(["a"], None)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"num_frames": 1}, "num_frames must be >= 2, got 1"),
        ({"image_size": 64, "patch_size": 24}, r"image_size \(64\) must be divisible by patch_size \(24\)"),
        ({"image_size": 48, "patch_size": 16}, "at least 4x4, got 3x3"),
        ({"interaction_variant": "k400"}, "interaction_variant must be one of .*'k400'"),
        ({"head": "mlp"}, "head must be one of"),
        ({"projection_dim": 48}, "multiple of 64, got 48"),
        ({"batchnorm_eval_statistics": "train"}, r"batchnorm_eval_statistics must be one of \('running', 'batch'\)"),
    ],
)
def test_config_validation_says_what_to_change(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        tiny_config(**overrides)


HOSTILE_CONFIGS = [
    ({"num_hidden_layers": 100000}, "num_hidden_layers may be at most 128, got 100000"),
    ({"hidden_size": -64}, "hidden_size is a size, so it must be >= 1, got -64"),
    ({"num_attention_heads": 0}, "num_attention_heads is a size, so it must be >= 1, got 0"),
    ({"num_frames": 10**7}, "num_frames may be at most 1024, got 10000000"),
    ({"image_size": 60000, "patch_size": 1}, "image_size may be at most 4096, got 60000"),
    ({"image_size": 4096, "patch_size": 16}, "at most 64 patches per side, got 256"),
    ({"layer_norm_eps": 0.0}, "layer_norm_eps must be a positive number, got 0.0"),
    (
        {"hidden_size": 8192, "intermediate_size": 32768, "num_hidden_layers": 128, "num_attention_heads": 64},
        r"a model of about 1.3e\+11 weights .*; at most 4e\+09 are allowed",
    ),
]


@pytest.mark.parametrize("overrides, message", HOSTILE_CONFIGS)
def test_a_hostile_config_json_is_refused_on_loading_at_once(tmp_path, overrides, message):
    config = tiny_config().to_dict()
    (tmp_path / "config.json").write_text(json.dumps({**config, **overrides}))
    started = time.perf_counter()
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        AutoModelForVideoClassification.from_pretrained(tmp_path)
    assert time.perf_counter() - started < 10  # 100000 layers kept from_pretrained busy for minutes


@pytest.mark.parametrize(
    "sizes",
    [
        dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16, image_size=336,
             patch_size=14, projection_dim=768),  # ViT-L/14@336
        dict(hidden_size=1664, intermediate_size=8192, num_hidden_layers=48, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=1280),  # ViT-bigG/14
    ],
)
@pytest.mark.parametrize("variant", ["depthwise", "conv"])
def test_bounds_admit_real_configs_and_the_size_bound_holds(sizes, variant):
    config = ILAVideoConfig(**sizes, num_frames=32, interaction_variant=variant, num_labels=400)
    with torch.device("meta"):
        model = ILAForVideoClassification(config)
    weights = sum(parameter.numel() for parameter in model.parameters())
    assert weights <= config.parameter_count_bound <= 1.1 * weights


def test_config_from_clip_config_keeps_vision_settings():
    clip_config = CLIPConfig(vision_config={**TINY_CLIP_VISION, "projection_dim": 128}, projection_dim=128)
    config = ILAVideoConfig.from_clip_vision_config(clip_config, num_frames=16, head="text")
    assert (config.hidden_size, config.patch_size, config.projection_dim) == (64, 16, 128)
    assert (config.num_frames, config.head, config.model_type) == (16, "text", "ila")
    assert type(AutoConfig.for_model("ila")) is ILAVideoConfig
