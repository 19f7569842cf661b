"""ila_hf.training: fine-tuning an ILA model trained on other classes (e.g. the converted K400 model on one's own):
the video encoder and the MIT are kept, the head is made for the new classes, and the log says which is which."""

import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

from ila_hf import ILAForVideoClassification
from ila_hf.training import TrainingConfig, build_model, train
from tests.conftest import TRAINING_CLASSES
from tests.helpers import loop_settings, tiny_ila_config


SOURCE_CLASSES = {0: "abseiling", 1: "baking", 2: "canoeing"}


def save_source_model(folder: Path, **config_overrides) -> dict[str, torch.Tensor]:
    """A tiny ILA model for 3 classes, saved in `folder`; returns its state dict."""
    torch.manual_seed(1)
    model = ILAForVideoClassification(tiny_ila_config(id2label=SOURCE_CLASSES, **config_overrides))
    model.save_pretrained(folder)
    return {name: tensor.clone() for name, tensor in model.state_dict().items()}


def start_from(folder: Path, **kwargs) -> TrainingConfig:
    return TrainingConfig(train_data="unused", model_name_or_path=str(folder), num_frames=4, **kwargs)


@pytest.fixture(scope="module")
def tiny_clip_text_dir(tmp_path_factory, clip_tokenizer_dir) -> Path:
    """A random CLIP text tower projecting into the tiny vision model's 64 dims, with CLIP's real tokenizer."""
    folder = tmp_path_factory.mktemp("tiny_clip_text")
    torch.manual_seed(2)
    text_config = CLIPTextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, projection_dim=64
    )
    CLIPTextModelWithProjection(text_config).save_pretrained(folder)
    CLIPTokenizer.from_pretrained(clip_tokenizer_dir).save_pretrained(folder)
    return folder


def test_linear_head_is_reinitialised_for_new_classes_and_everything_else_kept(tmp_path, caplog):
    source = save_source_model(tmp_path)
    with caplog.at_level(logging.INFO, logger="ila_hf.training.loop"):
        model = build_model(start_from(tmp_path), list(TRAINING_CLASSES))

    state = model.state_dict()
    new_head = {"head.classifier.weight", "head.classifier.bias"}
    assert set(state) == set(source)
    for name in set(source) - new_head:
        torch.testing.assert_close(state[name], source[name], rtol=0, atol=0, msg=name)
    weight, bias = state["head.classifier.weight"], state["head.classifier.bias"]
    assert weight.shape == (6, 64) and bias.shape == (6,)
    assert torch.equal(bias, torch.zeros(6))
    assert weight.std().item() == pytest.approx(model.config.initializer_range, rel=0.2)  # normal(0, 0.02), 384 draws
    assert model.config.id2label == dict(enumerate(TRAINING_CLASSES)) and model.config.num_labels == 6
    assert model(pixel_values=torch.randn(1, 4, 3, 64, 64)).logits.shape == (1, 6)
    assert (
        f"Starting from {tmp_path} (3 classes) for 6 classes: kept video encoder, MIT and the linear head's LayerNorm; "
        "new: a re-initialised classifier for 6 classes." in caplog.messages
    )


def test_text_head_embeds_the_new_class_names_with_the_given_text_tower(tmp_path, tiny_clip_text_dir, caplog):
    source = save_source_model(tmp_path, head="text")
    with caplog.at_level(logging.INFO, logger="ila_hf.training.loop"):
        model = build_model(start_from(tmp_path, clip_text_model=str(tiny_clip_text_dir)), list(TRAINING_CLASSES))

    state = model.state_dict()
    for name in set(source) - {"head.class_embeddings"}:
        torch.testing.assert_close(state[name], source[name], rtol=0, atol=0, msg=name)
    tokenizer = CLIPTokenizer.from_pretrained(tiny_clip_text_dir)
    text_model = CLIPTextModelWithProjection.from_pretrained(tiny_clip_text_dir).eval()
    with torch.no_grad():
        expected = text_model(**tokenizer(list(TRAINING_CLASSES), padding=True, return_tensors="pt")).text_embeds
    torch.testing.assert_close(state["head.class_embeddings"], expected)
    assert model.config.id2label == dict(enumerate(TRAINING_CLASSES))
    assert any(
        message.endswith(f"new: class embeddings of the 6 class names from {tiny_clip_text_dir}'s text tower.")
        for message in caplog.messages
    )


def test_text_head_for_new_classes_without_a_text_tower_says_what_to_give(tmp_path):
    save_source_model(tmp_path, head="text")
    with pytest.raises(ValueError, match=r"set clip_text_model \(--clip-text-model\) to the CLIP checkpoint"):
        build_model(start_from(tmp_path), list(TRAINING_CLASSES))


def test_a_model_for_the_same_classes_is_kept_whole(tmp_path):
    source = save_source_model(tmp_path)
    model = build_model(start_from(tmp_path), list(SOURCE_CLASSES.values()))
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0, msg=name)


def test_other_clip_length_than_the_model_takes_is_refused_before_training(tmp_path):
    save_source_model(tmp_path)
    with pytest.raises(ValueError, match=r"takes clips of 4 frames, the run's num_frames is 8: set num_frames"):
        build_model(TrainingConfig(train_data="unused", model_name_or_path=str(tmp_path)), list(TRAINING_CLASSES))


def test_training_from_a_model_for_other_classes_runs_and_exports_the_new_classes(
    tiny_video_dataset, tiny_clip_dir, tmp_path, one_torch_thread
):
    source = save_source_model(tmp_path / "source")
    settings = loop_settings(tiny_video_dataset, tiny_clip_dir, epochs=1, batch_size=4, validation_data=None)
    settings.update(clip_model=None, model_name_or_path=str(tmp_path / "source"), output_dir=str(tmp_path / "run"))
    result = train(TrainingConfig(**settings))

    assert result.global_step == 3 and not result.stopped_early
    exported = load_file(Path(result.model_dir) / "model.safetensors")
    assert exported["head.classifier.weight"].shape == (6, 64)
    # The CLIP backbone is frozen (the default): it leaves training exactly as it came from the source model.
    for name in ("ila.embeddings.patch_embedding.weight", "ila.encoder.layers.1.self_attn.q_proj.weight"):
        torch.testing.assert_close(exported[name], source[name], rtol=0, atol=0)
    assert not torch.equal(exported["mit.position_embedding"], source["mit.position_embedding"])  # MIT trained
    assert ILAForVideoClassification.from_pretrained(result.model_dir).config.id2label == dict(
        enumerate(TRAINING_CLASSES)
    )
