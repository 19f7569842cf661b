"""`ila_hf.convert`: released ILA checkpoints -> Transformers folders.

Checkpoints are built by tests/released_checkpoint.py in exactly the published layout (random weights, non-trivial
BatchNorm statistics, the zero-initialised tensors made non-zero); the converted model must reproduce
tests/ila_reference.py, an independent functional implementation run on the raw released state dict.
"""

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForVideoClassification, CLIPTokenizer

import ila_hf.convert
from ila_hf.cli import main as cli_main
from ila_hf.convert import (
    CheckpointConversionError,
    convert_checkpoint,
    infer_architecture,
    load_released_checkpoint,
    released_class_names,
)
from ila_hf.video_processing_ila import ILAVideoProcessor
from tests.ila_reference import reference_forward, tokenize_class_names
from tests.released_checkpoint import (
    LAYOUT_JSON_SIZES,
    VARIANTS,
    released_state_dict,
    save_released_checkpoint,
    write_released_checkpoint,
)

LAYOUT_DIR = Path(__file__).resolve().parent / "data"
# Sizes chosen so that no two dimensions coincide by accident: 2D = 384 != 256 interaction channels (K400),
# an odd 7x7 grid (max-pools floor 7 -> 3 -> 1), 3 attention heads, 5 frames.
SIZES = {
    "k400": dict(width=192, layers=2, patch_size=16, image_size=112, num_frames=5, embed_dim=64),
    "ssv2": dict(width=128, layers=2, patch_size=16, image_size=64, num_frames=4, embed_dim=128, num_classes=174),
}


def _convert(tmp_path, variant, clip_tokenizer_dir, **kwargs):
    checkpoint = tmp_path / f"{variant}.pth"
    state_dict = write_released_checkpoint(checkpoint, variant, **SIZES[variant])
    result = convert_checkpoint(
        checkpoint, tmp_path / f"{variant}-hf", variant, SIZES[variant]["num_frames"],
        clip_text=clip_tokenizer_dir, **kwargs,
    )
    return state_dict, result


@pytest.fixture(scope="module", params=VARIANTS)
def converted(request, tmp_path_factory, clip_tokenizer_dir):
    """(variant, raw released state dict, ConversionResult), converted once per variant."""
    state_dict, result = _convert(tmp_path_factory.mktemp("convert"), request.param, clip_tokenizer_dir)
    return request.param, state_dict, result


# ----------------------------------------------------------------------------------------------- the fixture itself


@pytest.mark.parametrize("variant", VARIANTS)
def test_fixture_checkpoint_has_exactly_the_published_keys_and_shapes(variant):
    published = json.loads((LAYOUT_DIR / f"released_layout_tiny_{variant}.json").read_text())["keys"]
    state_dict = released_state_dict(variant, **LAYOUT_JSON_SIZES)
    assert list(state_dict) == list(published)
    assert {key: list(value.shape) for key, value in state_dict.items()} == published


def test_fixture_checkpoint_pickles_a_yacs_config_global(tmp_path):
    path = tmp_path / "released.pth"
    write_released_checkpoint(path, "ssv2", **SIZES["ssv2"])
    assert "yacs" not in sys.modules
    with pytest.raises(pickle.UnpicklingError, match="yacs.config.CfgNode"):
        torch.load(path, weights_only=True)


# ----------------------------------------------------------------------------------------------- loading


def test_loading_needs_neither_yacs_nor_unsafe_unpickling(tmp_path):
    path = tmp_path / "released.pth"
    expected = write_released_checkpoint(path, "ssv2", **SIZES["ssv2"])
    state_dict, training_entries = load_released_checkpoint(path)
    assert "yacs" not in sys.modules
    assert sorted(training_entries) == ["config", "epoch", "lr_scheduler", "max_accuracy", "optimizer"]
    assert training_entries["config"]["DATA"]["NUM_FRAMES"] == 4
    assert training_entries["epoch"] == 29
    assert state_dict.keys() == expected.keys()
    assert all(torch.equal(state_dict[key], expected[key]) for key in expected)


def test_architecture_is_read_off_the_state_dict():
    architecture = infer_architecture(released_state_dict("k400", **SIZES["k400"]))
    assert (architecture.variant, architecture.interaction_variant, architecture.head) == ("k400", "depthwise", "text")
    assert architecture.hidden_size == 192 and architecture.num_attention_heads == 3
    assert architecture.num_hidden_layers == 2 and architecture.intermediate_size == 768
    assert (architecture.patch_size, architecture.image_size, architecture.num_frames) == (16, 112, 5)
    assert architecture.projection_dim == 64 and architecture.interaction_channels == 256
    assert (architecture.mit_layers, architecture.prompt_layers) == (1, 2)
    assert (architecture.text_hidden_size, architecture.text_layers, architecture.text_vocab_size) == (64, 1, 49408)
    ssv2 = infer_architecture(released_state_dict("ssv2", **SIZES["ssv2"]))
    assert (ssv2.variant, ssv2.head, ssv2.num_labels, ssv2.projection_dim) == ("ssv2", "linear", 174, 128)


# ----------------------------------------------------------------------------------------------- equivalence


def test_converted_model_reproduces_the_reference_logits_points_and_loss(converted, clip_tokenizer_dir):
    variant, state_dict, result = converted
    model = AutoModelForVideoClassification.from_pretrained(result.output_dir).eval()
    size, frames = SIZES[variant]["image_size"], SIZES[variant]["num_frames"]
    pixel_values = torch.randn(2, frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    class_token_ids = None
    if variant == "k400":
        tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
        class_token_ids = tokenize_class_names(released_class_names("k400"), tokenizer)

    expected = reference_forward(state_dict, pixel_values, class_token_ids)
    with torch.no_grad():
        output = model(pixel_values)

    torch.testing.assert_close(output.logits, expected.logits, atol=1e-5, rtol=1e-5)
    points = output.interactive_points.flatten(-2)  # (B, layers, P, 4): x, y earlier frame; x, y later frame
    torch.testing.assert_close(points, torch.stack(expected.interactive_points, dim=1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(output.alignment_loss, expected.alignment_loss, atol=1e-5, rtol=1e-5)
    assert expected.logits.std() > 0.1 and points.std() > 0.05  # a meaningful comparison, not all zeros


def test_released_eval_flag_reproduces_the_released_k400_evaluation(tmp_path, clip_tokenizer_dir):
    checkpoint = tmp_path / "k400.pth"
    state_dict = write_released_checkpoint(checkpoint, "k400", **SIZES["k400"])
    frames, size = SIZES["k400"]["num_frames"], SIZES["k400"]["image_size"]
    arguments = ["convert", str(checkpoint), str(tmp_path / "out"), "--variant", "k400", "--num-frames", str(frames)]
    assert cli_main([*arguments, "--clip-text", str(clip_tokenizer_dir), "--released-eval"]) == 0

    model = AutoModelForVideoClassification.from_pretrained(tmp_path / "out").eval()
    pixel_values = torch.randn(3, frames, 3, size, size, generator=torch.Generator().manual_seed(0))
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    class_token_ids = tokenize_class_names(released_class_names("k400"), tokenizer)
    with torch.no_grad():
        logits = model(pixel_values).logits
    expected = reference_forward(state_dict, pixel_values, class_token_ids, batch_statistics=True).logits
    standard = reference_forward(state_dict, pixel_values, class_token_ids).logits

    assert model.config.batchnorm_eval_statistics == "batch"
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    assert (expected - standard).abs().max() > 1e-3
    assert "converted with `--released-eval`" in (tmp_path / "out" / "README.md").read_text()


def test_saved_folder_loads_with_every_weight_present(converted):
    variant, _, result = converted
    model, loading_info = AutoModelForVideoClassification.from_pretrained(result.output_dir, output_loading_info=True)
    assert loading_info["missing_keys"] == set() and loading_info["unexpected_keys"] == set()
    assert model.config.num_frames == SIZES[variant]["num_frames"]
    assert list(model.config.id2label.values()) == released_class_names(variant)
    assert (result.output_dir / "model.safetensors").is_file()
    assert (result.output_dir / "README.md").is_file()


def test_folder_has_the_released_preprocessing_and_a_model_card(converted):
    variant, _, result = converted
    processor = ILAVideoProcessor.from_pretrained(result.output_dir)
    size = SIZES[variant]["image_size"]
    assert processor.num_frames == SIZES[variant]["num_frames"]
    assert (processor.crop_size.height, processor.crop_size.width) == (size, size)
    assert processor.size.shortest_edge == int(256 / 224 * size)
    assert list(processor.image_mean) == pytest.approx([123.675 / 255, 116.28 / 255, 103.53 / 255])
    card = ModelCard.load(result.output_dir / "README.md")
    assert result.report.source["sha256"] in card.text and "{{" not in card.text
    assert card.data.base_model is None  # a tiny test checkpoint is no OpenAI CLIP
    assert (card.data.library_name, card.data.pipeline_tag, card.data.license) == (
        "transformers",
        "video-classification",
        None,
    )


def test_every_source_key_is_mapped_or_dropped_on_purpose(converted):
    variant, state_dict, result = converted
    report = json.loads((result.output_dir / "conversion_report.json").read_text())
    assert set(report["mapped"]) | set(report["dropped"]) == set(state_dict)
    assert not set(report["mapped"]) & set(report["dropped"])
    assert report["dropped_entries"] == ["config", "epoch", "lr_scheduler", "max_accuracy", "optimizer"]
    assert report["mapped"]["visual.transformer.resblocks.1.attn.in_proj_weight"] == [
        "ila.encoder.layers.1.self_attn.q_proj.weight",
        "ila.encoder.layers.1.self_attn.k_proj.weight",
        "ila.encoder.layers.1.self_attn.v_proj.weight",
    ]
    text_keys = {key for key in state_dict if key.startswith(("transformer.", "token_embedding", "ln_final"))}
    text_keys |= {"positional_embedding", "text_projection"} & set(state_dict)
    assert bool(text_keys) == (variant == "k400")
    # K400: the text tower is kept in the folder's text_model/ (open vocabulary), every key of it mapped there.
    assert report["dropped"] == {}
    assert all(target.startswith("text_model/") for key in text_keys for target in report["mapped"][key])


def test_ssv2_checkpoint_carrying_an_unused_clip_text_tower_converts_and_lists_it(tmp_path):
    checkpoint = tmp_path / "ssv2-with-text.pth"
    state_dict = write_released_checkpoint(checkpoint, "ssv2", ssv2_text_tower=True, vocab_size=500, **SIZES["ssv2"])
    result = convert_checkpoint(checkpoint, tmp_path / "out", "ssv2", 4)
    text_keys = {key for key in state_dict if not key.startswith(("visual.", "mit."))}
    assert "logit_scale" in text_keys and "token_embedding.weight" in text_keys
    assert set(result.report.dropped) == text_keys
    assert set(result.report.mapped) == set(state_dict) - text_keys
    pixel_values = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        logits = result.model(pixel_values).logits
    torch.testing.assert_close(logits, reference_forward(state_dict, pixel_values).logits, atol=1e-5, rtol=1e-5)


def test_ssv2_checkpoint_with_a_partial_text_tower_is_an_error(tmp_path):
    path = _save_modified(tmp_path, lambda state_dict: state_dict.update({"token_embedding.weight": torch.ones(9, 64)}))
    with pytest.raises(CheckpointConversionError, match=r"unexpected 1 key\(s\): 'token_embedding.weight'"):
        convert_checkpoint(path, tmp_path / "out", "ssv2", 4)


def test_batch_norm_running_statistics_are_carried_exactly(converted):
    _, state_dict, result = converted
    converted_state = result.model.state_dict()
    prefix = "visual.transformer.resblocks.1.message_attn.prediction_block.5"
    target = "ila.encoder.layers.1.alignment.point_predictor.spatial.1.norm"
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(converted_state[f"{target}.{name}"], state_dict[f"{prefix}.{name}"])


def test_half_precision_checkpoint_converts_to_float32(tmp_path, clip_tokenizer_dir):
    checkpoint = tmp_path / "half.pth"
    state_dict = write_released_checkpoint(checkpoint, "ssv2", dtype=torch.float16, **SIZES["ssv2"])
    result = convert_checkpoint(checkpoint, tmp_path / "out", "ssv2", 4)
    pixel_values = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        logits = result.model(pixel_values).logits
    assert result.model.dtype == torch.float32
    torch.testing.assert_close(logits, reference_forward(state_dict, pixel_values).logits, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- errors


class _RunsShellCommand:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("writer", ["torch.save", "pickle protocol 2", "pickle protocol 5"])
def test_foreign_pickle_is_refused_without_executing_it(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    payload = {"model": {}, "config": _RunsShellCommand(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=int(writer[-1])))
    refusal = "Refused to unpickle .*Nothing from the file was executed"
    with pytest.raises(CheckpointConversionError, match=refusal) as error:
        convert_checkpoint(path, tmp_path / "out", "ssv2", 4)
    if writer != "pickle protocol 5":  # protocols 4+ are refused at their first opcode, before naming a global
        assert "system" in str(error.value)
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_reported_as_corrupted(tmp_path):
    good = tmp_path / "good.pth"
    write_released_checkpoint(good, "ssv2", **SIZES["ssv2"])
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointConversionError, match="truncated or corrupted"):
        convert_checkpoint(truncated, tmp_path / "out", "ssv2", 4)


def test_random_bytes_are_reported_as_corrupted(tmp_path):
    path = tmp_path / "noise.pth"
    noise = torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    path.write_bytes(bytes(noise.tolist()))
    with pytest.raises(CheckpointConversionError, match="not a torch checkpoint .* truncated or corrupted"):
        convert_checkpoint(path, tmp_path / "out", "ssv2", 4)


def test_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="No checkpoint file"):
        convert_checkpoint(tmp_path / "absent.pth", tmp_path / "out", "ssv2", 4)


def _save_modified(tmp_path, modify):
    state_dict = released_state_dict("ssv2", **SIZES["ssv2"])
    modify(state_dict)
    path = tmp_path / "modified.pth"
    save_released_checkpoint(path, state_dict, variant="ssv2", image_size=64, num_frames=4, num_classes=174)
    return path


def test_missing_key_is_an_error_naming_it(tmp_path):
    key = "visual.transformer.resblocks.1.temporal_skip_align_fc.bias"
    path = _save_modified(tmp_path, lambda state_dict: state_dict.pop(key))
    with pytest.raises(CheckpointConversionError, match=rf"missing 1 key\(s\): '{key}'"):
        convert_checkpoint(path, tmp_path / "out", "ssv2", 4)


def test_unexpected_key_is_an_error_naming_it(tmp_path):
    path = _save_modified(tmp_path, lambda state_dict: state_dict.update({"visual.extra_scale": torch.ones(1)}))
    with pytest.raises(CheckpointConversionError, match=r"unexpected 1 key\(s\): 'visual.extra_scale'"):
        convert_checkpoint(path, tmp_path / "out", "ssv2", 4)


def test_not_an_ila_checkpoint_is_an_error(tmp_path):
    def strip_ila(state_dict):
        for key in [key for key in state_dict if "message_attn" in key]:
            del state_dict[key]

    with pytest.raises(CheckpointConversionError, match="no ILA interaction block"):
        convert_checkpoint(_save_modified(tmp_path, strip_ila), tmp_path / "out")


def test_requested_variant_must_match_the_checkpoint(tmp_path):
    path = tmp_path / "ssv2.pth"
    write_released_checkpoint(path, "ssv2", **SIZES["ssv2"])
    message = r"Variant 'k400' was requested \(variant / --variant\), but the checkpoint is a 'ssv2' checkpoint"
    with pytest.raises(ValueError, match=message):
        convert_checkpoint(path, tmp_path / "out", "k400", 4)


def test_requested_frame_count_must_match_the_checkpoint(tmp_path):
    path = tmp_path / "ssv2.pth"
    write_released_checkpoint(path, "ssv2", **SIZES["ssv2"])
    message = r"8 frames were requested \(num_frames / --num-frames\), but the checkpoint was trained with 4 frames"
    with pytest.raises(ValueError, match=message):
        convert_checkpoint(path, tmp_path / "out", "ssv2", 8)


def test_class_names_must_match_the_linear_head(tmp_path):
    path = tmp_path / "ssv2.pth"
    write_released_checkpoint(path, "ssv2", **SIZES["ssv2"])
    with pytest.raises(ValueError, match="classifier has 174 classes but 3 class names were given"):
        convert_checkpoint(path, tmp_path / "out", "ssv2", 4, class_names=["a", "b", "c"])


def test_tokenizer_must_fit_the_text_tower(tmp_path, clip_tokenizer_dir):
    path = tmp_path / "k400.pth"
    write_released_checkpoint(path, "k400", **LAYOUT_JSON_SIZES)  # the published tiny layout: vocabulary of 500
    with pytest.raises(ValueError, match="has 49408 tokens but the checkpoint's text tower embeds 500"):
        convert_checkpoint(path, tmp_path / "out", "k400", 4, clip_text=clip_tokenizer_dir)


def test_custom_class_names_from_a_csv(tmp_path, clip_tokenizer_dir):
    labels = tmp_path / "labels.csv"
    labels.write_text('id,name\n1,"pouring, slowly"\n0,juggling\n')
    _, result = _convert(tmp_path, "k400", clip_tokenizer_dir, class_names=labels)
    assert result.model.config.id2label == {0: "juggling", 1: "pouring, slowly"}
    assert result.model.head.class_embeddings.shape == (2, 64)


def _save_with_claimed_tensor(path, key, claimed_bytes):
    """A released ssv2 state dict with `key` a stride-0 view of one float claiming `claimed_bytes` (a small file)."""
    state_dict = released_state_dict("ssv2", **SIZES["ssv2"])
    state_dict[key] = torch.zeros(1).expand(claimed_bytes // 4)
    torch.save({"model": state_dict}, path)
    assert path.stat().st_size < 20 * 2**20


PEAK_MEMORY_SCRIPT = """
import resource, sys
from ila_hf.convert import CheckpointConversionError, convert_checkpoint
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    convert_checkpoint(sys.argv[1], sys.argv[2])
except CheckpointConversionError as error:
    print("error:", error)
print("peak growth MiB:", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


def test_tensors_claiming_gigabytes_are_refused_before_they_cost_memory(tmp_path):
    path = tmp_path / "claims-3GiB.pth"
    _save_with_claimed_tensor(path, "visual.ln_post.weight", 3 * 2**30)  # under the total cap: the shape check
    run = subprocess.run(
        [sys.executable, "-c", PEAK_MEMORY_SCRIPT, str(path), str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert run.returncode == 0, run.stderr
    error_line, growth_line = run.stdout.splitlines()[-2:]
    assert f"error: {path}: 1 tensor(s) do not have the shape" in error_line
    assert "'visual.ln_post.weight' (805306368,) (the model's ila.post_layernorm.weight is (128,))" in error_line
    assert int(growth_line.split(":")[1]) < 200  # the claimed 3 GiB was never allocated (3.9 GB before the check)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_claiming_more_than_the_total_cap_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "claims-48GiB.pth"
    _save_with_claimed_tensor(path, "visual.ln_post.weight", 48 * 2**30)
    with pytest.raises(CheckpointConversionError, match=r"claims-48GiB.pth claims 1.29e\+10 tensor elements .* 2e\+09"):
        convert_checkpoint(path, tmp_path / "out")


def test_an_architecture_out_of_the_config_bounds_is_refused_before_loading(tmp_path):
    path = tmp_path / "frames.pth"
    state_dict = released_state_dict("ssv2", **SIZES["ssv2"])
    state_dict["mit.positional_embedding"] = torch.zeros(1, 1, 1).expand(1, 2**20, 128)
    torch.save({"model": state_dict}, path)
    with pytest.raises(CheckpointConversionError, match=r"frames.pth: .* num_frames may be at most 1024, got 1048576"):
        convert_checkpoint(path, tmp_path / "out")


def test_compressed_zip_entries_are_refused_before_reading(tmp_path):
    plain, deflated = tmp_path / "plain.pth", tmp_path / "deflated.pth"
    write_released_checkpoint(plain, "ssv2", **SIZES["ssv2"])
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    with pytest.raises(CheckpointConversionError, match="deflated.pth is a zip archive with compressed entries"):
        convert_checkpoint(deflated, tmp_path / "out")


def test_a_safetensors_file_is_named_with_what_convert_expects(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, path)
    message = r"model.safetensors is a safetensors file, not a torch checkpoint; convert reads .* released .*\.pth"
    with pytest.raises(CheckpointConversionError, match=message) as error:
        convert_checkpoint(path, tmp_path / "out")
    assert "corrupted" not in str(error.value)


def test_k400_without_a_reachable_tokenizer_fails_at_once_saying_how_to_pass_one(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # an offline machine: no request is made
    monkeypatch.setattr(ila_hf.convert, "DEFAULT_CLIP_TEXT", "ila-hf-tests/uncached-clip-tokenizer")
    path = tmp_path / "k400.pth"
    write_released_checkpoint(path, "k400", **SIZES["k400"])
    message = (
        r"^Could not load the CLIP tokenizer 'ila-hf-tests/uncached-clip-tokenizer' that embeds the K400 class names "
        r"\(.+\)\. Pass a local tokenizer folder \(clip_text / --clip-text\)"
    )
    with pytest.raises(CheckpointConversionError, match=message) as error:
        convert_checkpoint(path, tmp_path / "out")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------- Hub


def test_push_to_hub_creates_the_repo_and_uploads_the_folder(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(
        huggingface_hub.HfApi, "create_repo",
        lambda self, repo_id, **kwargs: calls.append(("create_repo", repo_id, kwargs)) or f"https://hf.co/{repo_id}",
    )
    commit = huggingface_hub.CommitInfo(
        commit_url="https://hf.co/someone/ila-ssv2/commit/1", commit_message="", commit_description="", oid="1"
    )
    monkeypatch.setattr(
        huggingface_hub.HfApi, "upload_folder",
        lambda self, **kwargs: calls.append(("upload_folder", sorted(os.listdir(kwargs["folder_path"])), kwargs))
        or commit,
    )
    path = tmp_path / "ssv2.pth"
    write_released_checkpoint(path, "ssv2", **SIZES["ssv2"])
    result = convert_checkpoint(path, tmp_path / "out", "ssv2", 4, push_to_hub="someone/ila-ssv2", private=True)

    (_, repo_id, create_kwargs), (_, uploaded_files, upload_kwargs) = calls
    assert repo_id == "someone/ila-ssv2" and create_kwargs["private"] is True and create_kwargs["exist_ok"] is True
    assert upload_kwargs["repo_id"] == "someone/ila-ssv2"
    assert Path(upload_kwargs["folder_path"]) == tmp_path / "out"
    assert {"config.json", "model.safetensors", "README.md", "conversion_report.json"} <= set(uploaded_files)
    assert result.commit_url == "https://hf.co/someone/ila-ssv2/commit/1"
