"""ila_hf.training: the recipe's parameter groups and schedules, and the accelerate loop (train, checkpoint, resume,
evaluate, export, several processes)."""

import json
import math
from pathlib import Path

import pytest
import torch
from accelerate.tracking import GeneralTracker
from huggingface_hub import ModelCard

from ila_hf import ILAForVideoClassification
from ila_hf.training import (
    TrainingConfig,
    build_optimizer,
    build_scheduler,
    jitter_delta,
    top_k_accuracy,
    train,
)
from tests.conftest import TRAINING_CLASSES
from tests.helpers import REPO_ROOT, launch_two_processes, loop_settings, tiny_run_arguments


LABELS = dict(enumerate(TRAINING_CLASSES))


def tiny_model(clip_dir, **kwargs) -> ILAForVideoClassification:
    return ILAForVideoClassification.from_clip(str(clip_dir), num_frames=4, id2label=LABELS, **kwargs)


def recipe_config(**kwargs) -> TrainingConfig:
    return TrainingConfig(train_data="unused", clip_model="unused", **kwargs)


def groups_by_parameter_name(model, optimizer) -> dict[str, dict]:
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    return {names[id(parameter)]: group for group in optimizer.param_groups for parameter in group["params"]}


# ------------------------------------------------------------------------------------------------------ recipe
def test_parameter_groups_follow_the_released_recipe(tiny_clip_dir):
    model = tiny_model(tiny_clip_dir)
    by_name = groups_by_parameter_name(model, build_optimizer(model, recipe_config()))
    expected = {
        "ila.encoder.layers.0.message_fc.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.1.message_fc.bias": ("alignment_no_decay", 5e-4, 0.0),
        "ila.encoder.layers.0.message_ln.weight": ("alignment_no_decay", 5e-4, 0.0),
        "ila.encoder.layers.0.alignment.interaction_block.0.conv.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.0.alignment.interaction_block.0.norm.weight": ("alignment_no_decay", 5e-4, 0.0),
        "ila.encoder.layers.1.alignment.point_predictor.pair_fc2.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.0.alignment.temporal_conv.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.0.alignment.interaction_fc.weight": ("alignment", 5e-4, 1e-2),
        "ila.encoder.layers.0.aligned_tokens_proj.weight": ("temporal_skip", 8e-5, 1e-3),
        "ila.encoder.layers.1.interaction_tokens_proj.weight": ("temporal_skip", 8e-5, 1e-3),
        "ila.encoder.layers.1.interaction_tokens_proj.bias": ("temporal_skip_no_decay", 8e-5, 0.0),
        "mit.position_embedding": ("mit_no_decay", 4e-4, 0.0),
        "mit.layers.0.self_attn.q_proj.weight": ("mit", 4e-4, 1e-3),
        "mit.layers.0.layer_norm1.weight": ("mit_no_decay", 4e-4, 0.0),
        "head.classifier.weight": ("head", 4e-4, 1e-3),
        "head.classifier.bias": ("head_no_decay", 4e-4, 0.0),
        "head.norm.weight": ("head_no_decay", 4e-4, 0.0),
    }
    for name, (group, learning_rate, weight_decay) in expected.items():
        assert (by_name[name]["name"], by_name[name]["lr"], by_name[name]["weight_decay"]) == pytest.approx(
            (group, learning_rate, weight_decay)
        ), name


def test_frozen_clip_weights_get_no_group_and_no_optimizer_state(tiny_clip_dir):
    model = tiny_model(tiny_clip_dir)
    optimizer = build_optimizer(model, recipe_config())
    by_name = groups_by_parameter_name(model, optimizer)
    frozen = {f"ila.{name}" for name, _ in model.ila.clip_backbone_parameters()}
    trainable = {name for name, parameter in model.named_parameters() if parameter.requires_grad}
    assert "ila.encoder.layers.0.self_attn.q_proj.weight" in frozen
    assert set(by_name) == trainable and not frozen & trainable
    assert "backbone" not in {group["name"].removesuffix("_no_decay") for group in optimizer.param_groups}

    pixel_values = torch.randn(2, 4, 3, 64, 64)
    model(pixel_values, labels=torch.tensor([0, 1])).loss.backward()
    optimizer.step()
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    assert {names[id(parameter)] for parameter in optimizer.state} <= trainable


def test_unfrozen_backbone_trains_at_the_base_rate_without_decay_on_embeddings(tiny_clip_dir):
    model = tiny_model(tiny_clip_dir, freeze_backbone=False)
    by_name = groups_by_parameter_name(model, build_optimizer(model, recipe_config()))
    assert by_name["ila.encoder.layers.0.self_attn.q_proj.weight"]["name"] == "backbone"
    assert by_name["ila.encoder.layers.0.self_attn.q_proj.weight"]["lr"] == 8e-6
    assert by_name["ila.embeddings.position_embedding.weight"]["name"] == "backbone_no_decay"
    assert by_name["ila.embeddings.class_embedding"]["name"] == "backbone_no_decay"
    assert by_name["ila.visual_projection.weight"]["weight_decay"] == 1e-3


def test_the_baselines_norm_and_classifier_form_the_head_group(tiny_clip_dir):
    from ila_hf.baselines import FrameAveragingClassifier

    model = FrameAveragingClassifier.from_clip(tiny_clip_dir, num_labels=len(LABELS))
    by_name = groups_by_parameter_name(model, build_optimizer(model, recipe_config()))
    assert {name: (group["name"], group["lr"]) for name, group in by_name.items()} == {
        "norm.weight": ("head_no_decay", 4e-4),
        "norm.bias": ("head_no_decay", 4e-4),
        "classifier.weight": ("head", 4e-4),
        "classifier.bias": ("head_no_decay", 4e-4),
    }


def test_align_decay_halves_the_jitter_every_epoch_from_epoch_30():
    assert [jitter_delta(epoch) for epoch in (0, 1, 29)] == [0.2, 0.2, 0.2]
    assert [jitter_delta(epoch) for epoch in (30, 31, 32, 49)] == pytest.approx([0.1, 0.05, 0.025, 0.2 / 2**20])
    assert jitter_delta(3, initial=0.4, decay_start_epoch=2) == pytest.approx(0.1)


def test_learning_rate_warms_up_linearly_then_follows_a_cosine_to_the_floor_on_the_last_step():
    warmup, total, floor = 4, 14, 0.01
    peaks = (5e-4, 4e-4)
    optimizer = torch.optim.SGD([{"params": [torch.zeros(1, requires_grad=True)], "lr": lr} for lr in peaks])
    scheduler = build_scheduler(optimizer, warmup, total, min_lr_ratio=floor)
    used = []  # the learning rates each optimizer step ran with
    for _ in range(total):
        used.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (step + 1 - warmup) / (total - warmup)))

    for step, rates in enumerate(used):
        assert rates == pytest.approx([peak * factor(step) for peak in peaks], rel=1e-12), step
    assert [rates[0] / peaks[0] for rates in used[:warmup]] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert used[-1] == pytest.approx([peak * floor for peak in peaks])  # the last step runs at the floor
    assert all(later[0] < earlier[0] for earlier, later in zip(used[warmup - 1 :], used[warmup:]))


def test_top_k_accuracy_counts_hits_within_the_k_best_scores():
    scores = torch.tensor([[0.1, 0.5, 0.4, 0.0], [0.7, 0.2, 0.1, 0.0], [0.3, 0.35, 0.4, 0.0], [0.1, 0.2, 0.3, 0.4]])
    labels = torch.tensor([2, 0, 1, 1])
    assert top_k_accuracy(scores, labels, ks=(1, 2, 3)) == pytest.approx({"top1": 1 / 4, "top2": 3 / 4, "top3": 1.0})


def test_top_k_accuracy_leaves_out_k_beyond_the_number_of_classes():
    scores, labels = torch.tensor([[0.1, 0.5, 0.4], [0.7, 0.2, 0.1]]), torch.tensor([2, 0])
    assert top_k_accuracy(scores, labels) == pytest.approx({"top1": 1 / 2})  # no "top5" of 3 classes
    assert set(top_k_accuracy(torch.rand(4, 5), torch.arange(4))) == {"top1", "top5"}


# ------------------------------------------------------------------------------------------------------ the loop
pytestmark = pytest.mark.usefixtures("one_torch_thread")


class RecordingTracker(GeneralTracker):
    """An offline accelerate tracker that keeps what it is given."""

    name = "recording"
    requires_logging_directory = False

    def __init__(self):
        super().__init__()
        self.configuration, self.logs = None, []

    @property
    def tracker(self):
        return self

    def store_init_configuration(self, values):
        self.configuration = values

    def log(self, values, step=None, **kwargs):
        self.logs.append((step, dict(values)))


def loop_config(data: Path, clip_dir: Path, output_dir: Path, **kwargs) -> TrainingConfig:
    return TrainingConfig(**loop_settings(data, clip_dir, output_dir=str(output_dir), **kwargs))


def exported_weights(result) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(Path(result.model_dir) / "model.safetensors")


@pytest.fixture(scope="module")
def uninterrupted_run(tiny_video_dataset, tiny_clip_dir, tmp_path_factory):
    tracker = RecordingTracker()
    output_dir = tmp_path_factory.mktemp("uninterrupted")
    config = loop_config(
        tiny_video_dataset,
        tiny_clip_dir,
        output_dir,
        log_with=[tracker],
        log_every_steps=3,
        final_num_clips=2,
        final_num_crops=3,
    )
    forward_inputs = []  # (training?, clips) of every forward pass of the model, in order
    original_forward = ILAForVideoClassification.forward

    def recording_forward(self, *args, **kwargs):
        pixel_values = kwargs["pixel_values"] if "pixel_values" in kwargs else args[0]
        forward_inputs.append((self.training, pixel_values.shape[0]))
        return original_forward(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ILAForVideoClassification, "forward", recording_forward)
        result = train(config)
    return result, tracker, forward_inputs


def evaluation_clips(forward_inputs: list[tuple[bool, int]]) -> list[int]:
    """Clips the model saw in each stretch of evaluation-mode forward passes between training steps."""
    stretches, previous_training = [], True
    for training, clips in forward_inputs:
        if not training:
            if previous_training:
                stretches.append(0)
            stretches[-1] += clips
        previous_training = training
    return stretches


def test_training_evaluates_every_epoch_on_every_validation_video(uninterrupted_run):
    result, _, _ = uninterrupted_run
    assert not result.stopped_early
    assert (result.global_step, result.epoch) == (12, 2)
    assert [entry["epoch"] for entry in result.history] == [0, 1]
    assert all(entry["num_samples"] == 7 for entry in result.history)
    assert all(0 <= entry["top1"] <= entry["top5"] <= 1 for entry in result.history)


def test_final_evaluation_sums_six_views_per_video(uninterrupted_run):
    result, _, forward_inputs = uninterrupted_run
    # One clip per validation video after each epoch; then (no training step in between) the final evaluation's
    # 2 clips x 3 crops of each of the 7 videos.
    assert evaluation_clips(forward_inputs) == [7, 7 + 7 * 2 * 3]
    assert result.metrics["num_samples"] == 7
    saved = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    assert saved["final"] == pytest.approx(result.metrics)
    assert saved["history"] == result.history


def test_trackers_get_the_configuration_losses_learning_rates_and_metrics(uninterrupted_run):
    _, tracker, _ = uninterrupted_run
    assert tracker.configuration["num_frames"] == 4
    train_steps = [step for step, values in tracker.logs if "train/loss" in values]
    assert train_steps == [3, 6, 9, 12]
    first = next(values for _, values in tracker.logs if "train/loss" in values)
    assert {"train/alignment_loss", "train/classification_loss", "lr/alignment", "lr/mit", "train/jitter_delta"} <= set(
        first
    )
    assert first["lr/alignment"] == pytest.approx(5e-4 * 3 / 6)  # step 3 of a 6-step warm-up (logged after it)
    assert sum("eval/top1" in values for _, values in tracker.logs) == 2
    assert any("final/top1" in values for _, values in tracker.logs)


def test_checkpoints_are_named_by_step_and_pruned_to_the_limit(uninterrupted_run):
    result, _, _ = uninterrupted_run
    checkpoints = sorted(path.name for path in (Path(result.output_dir) / "checkpoints").iterdir())
    # Every 2 steps, and at each epoch's end (steps 6 and 12, replacing the step checkpoints there); the limit keeps 2.
    assert checkpoints == ["checkpoint_step_10", "checkpoint_step_12"]
    run_file = json.loads((Path(result.output_dir) / "checkpoints" / "checkpoint_step_12" / "run.json").read_text())
    assert run_file["labels"] == list(TRAINING_CLASSES) and run_file["data"]["num_train_videos"] == 12
    assert run_file["model"]["num_frames"] == 4 and run_file["recipe"]["seed"] == 0


def test_exported_folder_loads_with_from_pretrained_and_classifies_a_real_video(uninterrupted_run, tiny_video_dataset):
    from transformers import pipeline

    result, _, _ = uninterrupted_run
    model = ILAForVideoClassification.from_pretrained(result.model_dir)
    weights = exported_weights(result)
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in weights.items())
    assert model.config.id2label == LABELS and model.config.num_frames == 4
    classifier = pipeline("video-classification", model=result.model_dir)
    predictions = classifier(str(tiny_video_dataset / "videos" / "diving" / "diving_0.mp4"), top_k=3)
    assert len(predictions) == 3 and {prediction["label"] for prediction in predictions} <= set(TRAINING_CLASSES)
    card = ModelCard.load(Path(result.model_dir) / "README.md")
    assert f"\n# {Path(result.output_dir).name}\n" in card.text
    assert card.data.base_model is None  # a local checkpoint: the Hub's base_model takes only repo ids
    top1 = card.data.eval_results[0]
    assert (top1.dataset_type, top1.dataset_split, top1.metric_type) == ("val.txt", "validation", "accuracy")
    assert top1.metric_name == "Top-1 accuracy (2 clip(s) x 3 crop(s))"
    assert top1.metric_value == result.metrics["top1"]


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(
    uninterrupted_run, tiny_video_dataset, tiny_clip_dir, tmp_path
):
    """Stop at step 5 (mid-epoch), lose the step-5 checkpoint as a kill would, resume from step 4, finish."""
    import shutil

    reference, _, _ = uninterrupted_run
    stopped = train(loop_config(tiny_video_dataset, tiny_clip_dir, tmp_path, stop_after_steps=5))
    assert stopped.stopped_early and stopped.global_step == 5 and stopped.model_dir is None
    checkpoints = tmp_path / "checkpoints"
    # Saved at steps 2, 4 and at the stop (5); the limit keeps the last two.
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint_step_4", "checkpoint_step_5"]
    shutil.rmtree(checkpoints / "checkpoint_step_5")
    resumed = train(loop_config(tiny_video_dataset, tiny_clip_dir, tmp_path, resume=True))
    assert (resumed.global_step, resumed.epoch) == (12, 2)
    expected, actual = exported_weights(reference), exported_weights(resumed)
    assert expected.keys() == actual.keys()
    assert [name for name in expected if not torch.equal(expected[name], actual[name])] == []
    assert resumed.history == reference.history


def test_bf16_activation_checkpointing_and_gradient_accumulation_train_on_cpu(
    tiny_video_dataset, tiny_clip_dir, tmp_path
):
    from accelerate.state import AcceleratorState

    config = loop_config(
        tiny_video_dataset,
        tiny_clip_dir,
        tmp_path,
        validation_data=None,
        epochs=1,
        mixed_precision="bf16",
        activation_checkpointing=True,
        gradient_accumulation_steps=4,
        checkpoint_every_steps=None,
    )
    # accelerate keeps one precision per process; earlier tests in this process used "no".
    AcceleratorState._reset_state()
    try:
        result = train(config)
    finally:
        AcceleratorState._reset_state()
    assert result.global_step == 2  # 6 batches of 2, 4 per optimizer step: the last step takes the last 2 batches
    model = ILAForVideoClassification.from_pretrained(result.model_dir)
    initial = ILAForVideoClassification.from_clip(str(tiny_clip_dir), num_frames=4, id2label=LABELS)
    trained, untouched = model.state_dict(), initial.state_dict()
    assert all(torch.isfinite(tensor).all() for tensor in trained.values())
    assert not torch.equal(trained["mit.position_embedding"], untouched["mit.position_embedding"])
    assert torch.equal(trained["ila.encoder.layers.0.mlp.fc1.weight"], untouched["ila.encoder.layers.0.mlp.fc1.weight"])


def test_the_frame_averaging_baseline_runs_in_the_same_loop_and_is_not_exported(
    tiny_video_dataset, tiny_clip_dir, tmp_path
):
    config = loop_config(
        tiny_video_dataset, tiny_clip_dir, tmp_path, architecture="frame_averaging", epochs=1, checkpoint_every_steps=None
    )
    result = train(config)
    assert (result.global_step, result.model_dir) == (6, None)
    assert result.metrics["num_samples"] == result.history[0]["num_samples"] == 7
    assert json.loads((tmp_path / "metrics.json").read_text())["final"] == pytest.approx(result.metrics)
    assert not (tmp_path / "model").exists()


def test_ila_hf_train_command_runs_the_loop(tiny_video_dataset, tiny_clip_dir, tmp_path, capsys):
    from ila_hf.cli import main

    status = main(
        [
            "train",
            "--train-data",
            str(tiny_video_dataset / "videos"),
            "--clip-model",
            str(tiny_clip_dir),
            "--num-frames",
            "4",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--num-workers",
            "0",
            "--no-horizontal-flip",
            "--output-dir",
            str(tmp_path),
            "--stop-after-steps",
            "2",
        ]
    )
    assert status == 0
    assert "Stopped after step 2" in capsys.readouterr().out


STOP_AND_RESUME_SCRIPT = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("train_with_accelerate", sys.argv[1])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
arguments = sys.argv[2:]
assert example.main([*arguments, "--stop-after-steps", "2"]) == 0
import json, pathlib
output_dir = pathlib.Path(arguments[arguments.index("--output-dir") + 1])
checkpoints = sorted(path.name for path in (output_dir / "checkpoints").iterdir())
assert checkpoints == ["checkpoint_step_1", "checkpoint_step_2"] and not (output_dir / "model").exists(), checkpoints
assert example.main([*arguments, "--resume"]) == 0
"""


@pytest.mark.slow
def test_two_processes_train_checkpoint_resume_and_match_single_process_metrics(
    tiny_video_dataset, tiny_clip_dir, tmp_path
):
    """`accelerate launch` with 2 CPU processes (gloo) runs examples/train_with_accelerate.py twice: stopped after 2
    steps (checkpoints of steps 1 and 2 on disk), then resumed to the end. The validation metrics
    of 7 videos (odd: the last batch is padded on one process) equal those of one process on the same model."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from ila_hf.data import VideoClassificationCollator, VideoClipTransform, VideoProcessorTransform, build_dataset
    from ila_hf.training import evaluate
    from ila_hf.transforms import EvalClipTransform
    from transformers import AutoVideoProcessor

    output_dir = tmp_path / "run"
    arguments = [
        *tiny_run_arguments(tiny_video_dataset, tiny_clip_dir),
        "--epochs",
        "2",
        "--warmup-epochs",
        "1",
        "--batch-size",
        "2",
        "--num-workers",
        "0",
        "--checkpoint-every-steps",
        "1",
        "--export",
        "last",
        "--output-dir",
        str(output_dir),
    ]
    # Both runs in one launch (imports dominate on CPU): the second starts from the checkpoints on disk only.
    script = tmp_path / "stop_and_resume.py"
    script.write_text(STOP_AND_RESUME_SCRIPT)
    launch_two_processes(script, [str(REPO_ROOT / "examples" / "train_with_accelerate.py"), "--cpu", *arguments])
    summary = json.loads((output_dir / "metrics.json").read_text())
    assert summary["global_step"] == 6  # 12 videos / (2 processes x 2) = 3 steps per epoch
    assert [entry["num_samples"] for entry in summary["history"]] == [7, 7]

    model = ILAForVideoClassification.from_pretrained(output_dir / "model")
    accelerator = Accelerator(cpu=True)
    dataset = build_dataset(tiny_video_dataset / "val.txt", label_names=tiny_video_dataset / "labels.csv")
    single_view = dataset.with_transform(VideoClipTransform(EvalClipTransform(64), 4, training=False))
    collator = VideoClassificationCollator()
    per_epoch = evaluate(model, DataLoader(single_view, batch_size=2, collate_fn=collator), accelerator)
    processor = AutoVideoProcessor.from_pretrained(output_dir / "model", trust_remote_code=True)
    final_view = dataset.with_transform(VideoProcessorTransform(processor, num_clips=1, num_crops=1))
    final = evaluate(model, DataLoader(final_view, batch_size=2, collate_fn=collator), accelerator)
    for single, distributed in ((per_epoch, summary["history"][-1]), (final, summary["final"])):
        assert single["num_samples"] == distributed["num_samples"] == 7
        assert (single["top1"], single["top5"]) == (distributed["top1"], distributed["top5"])
        assert single["loss"] == pytest.approx(distributed["loss"], rel=1e-5)
