"""examples/finetune_with_trainer.py: the stock transformers Trainer fine-tunes ILA for a few steps on tiny data."""

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoVideoProcessor, pipeline

from ila_hf import ILAForVideoClassification, ILAVideoProcessor
from ila_hf.cli import main
from tests.conftest import TRAINING_CLASSES
from tests.helpers import tiny_run_arguments


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "finetune_with_trainer.py"


def load_example():
    spec = importlib.util.spec_from_file_location("finetune_with_trainer", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trainer_run(one_torch_thread, tiny_video_dataset, tiny_clip_dir, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("trainer")
    results = load_example().main(
        [
            *tiny_run_arguments(tiny_video_dataset, tiny_clip_dir),
            "--output-dir",
            str(output_dir),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--gradient-accumulation-steps",
            "2",
            "--num-workers",
            "0",
            "--logging-steps",
            "1",
            "--save-strategy",
            "no",
        ]
    )
    return results, output_dir


def test_training_logs_carry_the_classification_and_alignment_losses(trainer_run):
    results, _ = trainer_run
    train_logs = [entry for entry in results["log_history"] if "loss" in entry and "eval_loss" not in entry]
    assert len(train_logs) == 4  # 12 videos, 4 per batch, 2 batches per step: 2 steps per epoch
    for entry in train_logs:
        assert entry["alignment_loss"] >= 0
        assert entry["loss"] == pytest.approx(entry["classification_loss"] + entry["alignment_loss"], abs=1e-4)


def test_evaluation_reports_top1_top5_and_alignment_loss_on_every_video(trainer_run):
    results, _ = trainer_run
    evaluation = results["eval"]
    assert evaluation["eval_num_samples"] == 7
    assert 0 <= evaluation["eval_top1"] <= evaluation["eval_top5"] <= 1
    assert evaluation["eval_alignment_loss"] >= 0
    assert sum("eval_top1" in entry for entry in results["log_history"]) == 3  # 2 epochs + the final call


def test_trained_model_is_saved_for_from_pretrained(trainer_run):
    _, output_dir = trainer_run
    model = ILAForVideoClassification.from_pretrained(output_dir)
    assert model.config.num_frames == 4 and model.config.num_labels == 6


def test_output_folder_is_complete_and_served_by_pipeline_auto_processor_and_predict(
    trainer_run, tiny_video_dataset, capsys
):
    """The folder the example ends with is what a user serves: every file, and the three ways of loading it."""
    results, output_dir = trainer_run
    files = {path.name for path in output_dir.iterdir()}
    assert {"model.safetensors", "config.json", "video_preprocessor_config.json", "README.md"} <= files
    assert {"modeling_ila.py", "configuration_ila.py", "video_processing_ila.py"} <= files  # trust_remote_code
    card = (output_dir / "README.md").read_text()
    assert "pipeline_tag: video-classification" in card and "6 classes" in card
    assert f"| validation top1 | {results['eval']['eval_top1']:.4g} |" in card

    processor = AutoVideoProcessor.from_pretrained(output_dir)
    assert isinstance(processor, ILAVideoProcessor) and processor.num_frames == 4
    model = ILAForVideoClassification.from_pretrained(output_dir).eval()
    video = tiny_video_dataset / "videos" / "rowing" / "rowing_0.mp4"
    with torch.no_grad():
        expected = model(**processor(str(video), return_tensors="pt")).logits.softmax(-1)[0].topk(2)
    expected_labels = [TRAINING_CLASSES[index] for index in expected.indices.tolist()]

    classifier = pipeline("video-classification", model=str(output_dir))
    predictions = classifier(str(video), top_k=2)
    assert [prediction["label"] for prediction in predictions] == expected_labels
    assert [prediction["score"] for prediction in predictions] == pytest.approx(expected.values.tolist(), abs=1e-5)

    assert main(["predict", str(video), "--model", str(output_dir), "--top-k", "2", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert [prediction["label"] for prediction in json.loads(line)["predictions"]] == expected_labels


def test_epoch_callback_applies_align_decay_and_the_clip_epoch(tiny_clip_dir):
    example = load_example()
    model = ILAForVideoClassification.from_clip(str(tiny_clip_dir), num_frames=4, id2label={0: "a", 1: "b"})
    clips = SimpleNamespace(epoch=None, set_epoch=lambda epoch: setattr(clips, "epoch", epoch))
    example.EpochCallback(clips).on_epoch_begin(None, SimpleNamespace(epoch=31.0), None, model=model)
    assert clips.epoch == 31
    assert model.ila.encoder.layers[0].alignment.jitter_delta.item() == pytest.approx(0.05)


def test_streamed_csv_of_paths_and_class_names_trains_and_evaluates_every_video(
    one_torch_thread, tiny_video_dataset, tiny_clip_dir, tmp_path
):
    # A load_dataset source with the column names: `video_path` and class names in `labels`.
    rows = ["video_path,labels"]
    for line in (tiny_video_dataset / "val.txt").read_text().split("\n"):
        if line:
            relative, label = line.rsplit(maxsplit=1)
            rows.append(f"{tiny_video_dataset / relative},{TRAINING_CLASSES[int(label)]}")
    (tmp_path / "val.csv").write_text("\n".join(rows) + "\n")
    results = load_example().main(
        ["--clip-model", str(tiny_clip_dir), "--train-data", str(tmp_path / "val.csv")]
        + ["--validation-data", str(tmp_path / "val.csv"), "--label-names", str(tiny_video_dataset / "labels.csv")]
        + ["--streaming", "--max-steps", "2", "--output-dir", str(tmp_path / "run"), "--num-frames", "4"]
        + ["--batch-size", "4", "--num-workers", "0", "--logging-steps", "1", "--save-strategy", "no"]
    )
    assert results["train"]["train_loss"] > 0
    assert sum("loss" in entry and "eval_loss" not in entry for entry in results["log_history"]) == 2
    assert results["eval"]["eval_num_samples"] == 7
