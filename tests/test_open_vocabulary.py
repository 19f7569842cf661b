"""Open vocabulary: the text side saved with a text-head model (`text_model/`), new class names in one call, the
zero-shot-video-classification pipeline and `ila-hf predict --labels`."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F
from transformers import CLIPConfig, CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer, pipeline

from ila_hf import ILAForVideoClassification
from ila_hf.cli import main as cli_main
from ila_hf.convert import convert_checkpoint
from ila_hf.hub import export_model
from ila_hf.video_processing_ila import ILAVideoProcessor
from tests.conftest import TINY_CLIP_VISION
from tests.helpers import randomise_ila_modules
from tests.released_checkpoint import write_released_checkpoint
from tests.videos import write_video


TRAINED_CLASSES = ["archery", "bowling", "cycling"]
NEW_CLASSES = ["surfing", "playing cello", "walking the dog", "kayaking"]
NUM_FRAMES = 4
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory, clip_tokenizer_dir) -> Path:
    """A tiny random CLIPModel (vision and text towers) and CLIP's tokenizer, saved with save_pretrained."""
    tokenizer = CLIPTokenizer.from_pretrained(clip_tokenizer_dir)
    text_config = dict(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(text_config=text_config, vision_config=TINY_CLIP_VISION, projection_dim=64))
    folder = tmp_path_factory.mktemp("tiny_clip_model")
    clip.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def model_dir(clip_dir, tmp_path_factory) -> Path:
    """A text-head ILA model made from the tiny CLIP (every module non-trivial), exported with its processor."""
    model = ILAForVideoClassification.from_clip(
        str(clip_dir), num_frames=NUM_FRAMES, head="text", prompt_layers=1, class_names=TRAINED_CLASSES
    )
    randomise_ila_modules(model)
    processor = ILAVideoProcessor(num_frames=NUM_FRAMES, crop_size={"height": 64, "width": 64})
    return export_model(model.eval(), tmp_path_factory.mktemp("ila_text"), video_processor=processor)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("open_vocabulary_videos") / "clip.mp4", 24)


def _pixel_values(folder: Path, video: Path) -> torch.Tensor:
    return ILAVideoProcessor.from_pretrained(folder)(str(video), return_tensors="pt")["pixel_values"]


def test_converted_k400_folder_keeps_the_text_tower_that_made_its_class_embeddings(tmp_path, clip_tokenizer_dir):
    checkpoint = tmp_path / "k400.pth"
    sizes = dict(width=64, layers=1, patch_size=16, image_size=64, num_frames=2, embed_dim=64)
    write_released_checkpoint(checkpoint, "k400", **sizes)
    names = ["abseiling", "air drumming", "zumba"]
    result = convert_checkpoint(checkpoint, tmp_path / "hf", "k400", 2, class_names=names, clip_text=clip_tokenizer_dir)

    text_folder = result.output_dir / "text_model"
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {path.name for path in text_folder.iterdir()}
    text_model = CLIPTextModelWithProjection.from_pretrained(text_folder).eval()
    tokens = CLIPTokenizer.from_pretrained(text_folder)(names, padding=True, return_tensors="pt")
    with torch.no_grad():
        saved_side_embeddings = text_model(**tokens).text_embeds
    model = ILAForVideoClassification.from_pretrained(result.output_dir)
    torch.testing.assert_close(saved_side_embeddings, model.head.class_embeddings, rtol=1e-5, atol=1e-6)
    report = json.loads((result.output_dir / "conversion_report.json").read_text())
    assert report["mapped"]["ln_final.weight"] == ["text_model/text_model.final_layer_norm.weight"]
    assert report["dropped"] == {}

    model.set_class_names(names[::-1])  # the folder's own text side, found where the model was loaded from
    torch.testing.assert_close(model.head.class_embeddings, saved_side_embeddings.flip(0), rtol=1e-5, atol=1e-6)
    assert model.config.id2label == {0: "zumba", 1: "air drumming", 2: "abseiling"}


def _prompted_logits(model, pixel_values: torch.Tensor, class_embeddings: torch.Tensor) -> torch.Tensor:
    """The text head written out: prompts from the video's patch tokens, then scaled cosine similarity (B, K)."""
    head = model.head
    outputs = model.ila(pixel_values)
    video_embeds = model.mit(outputs.frame_embeds).mean(dim=1)  # (B, E)
    patch_tokens = outputs.last_hidden_state[:, :, 1:]  # (B, T, N, D)
    context = head.visual_proj(head.visual_norm(patch_tokens)).mean(dim=1)  # (B, N, E)
    context = head.prompt_generator.norm(context)
    prompts = class_embeddings.expand(len(video_embeds), -1, -1)  # (B, K, E)
    for layer in head.prompt_generator.layers:
        attention = layer.cross_attn
        heads = attention.num_heads

        def split(states):  # (B, L, E) -> (B, heads, L, E / heads)
            return states.unflatten(-1, (heads, -1)).transpose(1, 2)

        queries = split(attention.q_proj(layer.norm1(prompts)))
        keys, values = split(attention.k_proj(context)), split(attention.v_proj(context))
        weights = (queries @ keys.transpose(-1, -2) / queries.shape[-1] ** 0.5).softmax(dim=-1)
        prompts = prompts + attention.out_proj((weights @ values).transpose(1, 2).flatten(2))
        hidden = layer.mlp.fc1(layer.norm3(prompts))
        prompts = prompts + layer.mlp.fc2(hidden * torch.sigmoid(1.702 * hidden))  # QuickGELU
    refined = class_embeddings + head.prompt_generator.alpha * prompts
    cosine = F.normalize(video_embeds, dim=-1)[:, None] * F.normalize(refined, dim=-1)
    return head.logit_scale.exp() * cosine.sum(dim=-1)


def test_new_class_names_give_the_logits_of_an_independent_computation(model_dir, clip_dir, video, tmp_path):
    model = ILAForVideoClassification.from_pretrained(model_dir).eval()
    model.set_class_names(NEW_CLASSES)  # no other argument: the folder's text_model/
    assert model.config.id2label == dict(enumerate(NEW_CLASSES))
    assert model.config.label2id["walking the dog"] == 2

    clip = CLIPModel.from_pretrained(clip_dir).eval()
    tokens = CLIPTokenizer.from_pretrained(clip_dir)(NEW_CLASSES, padding=True, return_tensors="pt")
    pixel_values = _pixel_values(model_dir, video)
    with torch.no_grad():
        class_embeddings = clip.get_text_features(**tokens).pooler_output  # CLIP's own text features
        expected = _prompted_logits(model, pixel_values, class_embeddings)
        logits = model(pixel_values=pixel_values).logits
    assert expected.std() > 0.01  # the classes are told apart
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)

    # A plain save_pretrained carries the text side and the new names on.
    model.save_pretrained(tmp_path / "resaved")
    reloaded = ILAForVideoClassification.from_pretrained(tmp_path / "resaved").eval()
    assert (tmp_path / "resaved" / "text_model" / "model.safetensors").is_file()
    reloaded.set_class_names(NEW_CLASSES[:2])
    torch.testing.assert_close(reloaded.head.class_embeddings, class_embeddings[:2], rtol=1e-5, atol=1e-6)


def test_pipeline_scores_sum_to_one_over_the_candidates_and_rank_like_the_logits(model_dir, video):
    classifier = pipeline("zero-shot-video-classification", model=str(model_dir))
    predictions = classifier(str(video), candidate_labels=NEW_CLASSES)

    model = ILAForVideoClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        logits = model(_pixel_values(model_dir, video), class_embeddings=model.embed_class_names(NEW_CLASSES)).logits
    probabilities = logits[0].softmax(dim=-1)
    ranked = [NEW_CLASSES[index] for index in probabilities.argsort(descending=True)]
    assert [prediction["label"] for prediction in predictions] == ranked
    assert sum(prediction["score"] for prediction in predictions) == pytest.approx(1.0)
    assert predictions[0]["score"] == pytest.approx(probabilities.max().item(), abs=1e-5)
    assert model.config.id2label == dict(enumerate(TRAINED_CLASSES))  # scoring other names changed nothing

    templated = classifier([str(video)], candidate_labels="surfing, kayaking", hypothesis_template="a video of {}.")
    assert [{prediction["label"] for prediction in result} for result in templated] == [{"surfing", "kayaking"}]


def test_pipeline_runs_with_trust_remote_code_without_ila_hf(model_dir, video):
    """A fresh interpreter that never imports ila_hf finds the pipeline declared in the folder's config."""
    script = f"""
import json, sys
from transformers import pipeline
classifier = pipeline("zero-shot-video-classification", model={str(model_dir)!r}, trust_remote_code=True)
predictions = classifier({str(video)!r}, candidate_labels={NEW_CLASSES!r})
assert not any(name == "ila_hf" or name.startswith("ila_hf.") for name in sys.modules)
print(type(classifier).__module__)
print(json.dumps(predictions))
"""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    environment.pop("PYTHONPATH", None)
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/", env=environment, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    module, predictions = completed.stdout.strip().splitlines()[-2:]
    assert module.startswith("transformers_modules.")
    in_process = pipeline("zero-shot-video-classification", model=str(model_dir))(
        str(video), candidate_labels=NEW_CLASSES
    )
    assert [p["label"] for p in json.loads(predictions)] == [p["label"] for p in in_process]
    assert [p["score"] for p in json.loads(predictions)] == pytest.approx([p["score"] for p in in_process], abs=1e-6)


def test_predict_with_labels_prints_the_pipelines_scores(model_dir, video, capsys):
    arguments = ["predict", str(video), "--model", str(model_dir), "--labels", " kayaking,surfing ,sailing", "--json"]
    assert cli_main(arguments) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    expected = pipeline("zero-shot-video-classification", model=str(model_dir))(
        str(video), candidate_labels=["kayaking", "surfing", "sailing"]
    )
    assert [p["label"] for p in printed] == [p["label"] for p in expected]
    assert [p["score"] for p in printed] == pytest.approx([p["score"] for p in expected], abs=1e-5)


def test_a_folder_without_a_text_side_asks_for_a_text_tower(model_dir, clip_dir, tmp_path, capsys):
    folder = tmp_path / "no_text_side"
    shutil.copytree(model_dir, folder, ignore=shutil.ignore_patterns("text_model"))
    model = ILAForVideoClassification.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"no text side .*no text_model/ subfolder.*set_class_names\(names, '"):
        model.set_class_names(NEW_CLASSES)
    assert model.config.id2label == dict(enumerate(TRAINED_CLASSES))
    assert cli_main(["predict", "x.mp4", "--model", str(folder), "--labels", "a,b"]) == 2
    assert "ila-hf predict: error: This model has no text side" in capsys.readouterr().err

    model.set_class_names(NEW_CLASSES, str(clip_dir))  # given once, it becomes the model's text side
    model.save_pretrained(folder)
    assert (folder / "text_model" / "model.safetensors").is_file()
    assert ILAForVideoClassification.from_pretrained(folder).class_name_encoder is not None


def test_the_class_embedding_check_runs_once_per_state_of_the_buffer(model_dir, video, monkeypatch):
    model = ILAForVideoClassification.from_pretrained(model_dir).eval()
    pixel_values = _pixel_values(model_dir, video)
    checks = []
    original_any = torch.Tensor.any
    monkeypatch.setattr(torch.Tensor, "any", lambda self, *args: checks.append(1) or original_any(self, *args))
    with torch.no_grad():
        for _ in range(3):
            model(pixel_values=pixel_values)
        assert len(checks) == 1
        model.head.class_embeddings.zero_()  # an in-place write is a new state: checked again
        with pytest.raises(ValueError, match="text head has no class embeddings"):
            model(pixel_values=pixel_values)
