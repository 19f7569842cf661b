"""ila_hf.training under accelerate's sharded engines: FSDP2 on 2 CPU processes (gloo), launched with the configuration
files docs/distributed.md shows (examples/accelerate/). Slow (minutes): `pytest -m slow`."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ila_hf import ILAForVideoClassification
from tests.conftest import TRAINING_CLASSES
from tests.helpers import ACCELERATE_CONFIGS, REPO_ROOT, launch_two_processes, tiny_run_arguments


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# One launch, three runs (imports dominate on CPU): an uninterrupted one, then one stopped after 4 of its 6 steps
# (inside the second epoch) and resumed from its checkpoints on disk.
UNINTERRUPTED_STOPPED_RESUMED = """
import importlib.util, sys
from tests.helpers import enable_fsdp_on_cpu
enable_fsdp_on_cpu()
spec = importlib.util.spec_from_file_location("train_with_accelerate", sys.argv[1])
example = importlib.util.module_from_spec(spec)
spec.loader.exec_module(example)
uninterrupted, interrupted, arguments = sys.argv[2], sys.argv[3], sys.argv[4:]
assert example.main([*arguments, "--output-dir", uninterrupted, "--export", "best"]) == 0
assert example.main([*arguments, "--output-dir", interrupted, "--export", "last", "--stop-after-steps", "4"]) == 0
assert example.main([*arguments, "--output-dir", interrupted, "--export", "last", "--resume"]) == 0
"""


def sharded_checkpoint_weights(checkpoint: Path, scratch: Path) -> dict[str, torch.Tensor]:
    """The model weights of an accelerate FSDP checkpoint (SHARDED_STATE_DICT: one torch.distributed.checkpoint
    folder with each process's shards), assembled into full tensors in this one process."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    dcp_to_torch_save(checkpoint / "pytorch_model_fsdp_0", scratch / "full.pt")
    return torch.load(scratch / "full.pt", weights_only=True)["model"]


def single_process_metrics(model_dir: Path, data: Path) -> tuple[dict, dict]:
    """(single-view, final-view) validation metrics of an exported model, evaluated in this one process."""
    from accelerate import Accelerator
    from torch.utils.data import DataLoader
    from transformers import AutoVideoProcessor

    from ila_hf.data import VideoClassificationCollator, VideoClipTransform, VideoProcessorTransform, build_dataset
    from ila_hf.training import evaluate
    from ila_hf.transforms import EvalClipTransform

    model = ILAForVideoClassification.from_pretrained(model_dir)
    accelerator = Accelerator(cpu=True)
    dataset = build_dataset(data / "val.txt", label_names=data / "labels.csv")
    collator = VideoClassificationCollator()
    single_view = dataset.with_transform(VideoClipTransform(EvalClipTransform(64), 4, training=False))
    processor = AutoVideoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    final_view = dataset.with_transform(VideoProcessorTransform(processor, num_clips=1, num_crops=1))
    return tuple(
        evaluate(model, DataLoader(views, batch_size=2, collate_fn=collator), accelerator)
        for views in (single_view, final_view)
    )


@pytest.mark.parametrize(
    "recipe",
    [
        pytest.param([], id="frozen-backbone"),
        pytest.param(
            ["--no-freeze-backbone", "--activation-checkpointing", "--max-grad-norm", "1.0"],
            id="trainable-backbone-activation-checkpointing",
        ),
    ],
)
def test_fsdp2_trains_checkpoints_resumes_exports_and_evaluates_like_one_process(
    recipe, tiny_video_dataset, tiny_clip_dir, tmp_path
):
    """examples/accelerate/fsdp2.yaml (FSDP2, every ILAEncoderLayer its own shard group, sharded checkpoints) on 2 CPU
    processes: 2 epochs of 3 steps. The checkpoints hold each process's shards; a run stopped inside the second epoch
    and resumed ends with exactly the weights of the uninterrupted run; the gathered export (the best epoch's weights,
    reloaded into the sharded model) loads with from_pretrained and the pipeline; the metrics equal one process's."""
    from transformers import pipeline

    data, uninterrupted, interrupted = tiny_video_dataset, tmp_path / "uninterrupted", tmp_path / "interrupted"
    arguments = [
        "--cpu",
        *tiny_run_arguments(data, tiny_clip_dir),
        *("--epochs", "2", "--warmup-epochs", "1", "--batch-size", "2", "--num-workers", "0"),
        *("--checkpoint-every-steps", "2", "--checkpoints-total-limit", "1"),
        *recipe,
    ]
    script = tmp_path / "uninterrupted_stopped_resumed.py"
    script.write_text(UNINTERRUPTED_STOPPED_RESUMED)
    example = REPO_ROOT / "examples" / "train_with_accelerate.py"
    launch_two_processes(
        script, [str(example), str(uninterrupted), str(interrupted), *arguments], ACCELERATE_CONFIGS / "fsdp2.yaml"
    )

    # Sharded checkpoints: one torch.distributed.checkpoint file per process, each about half of the weights.
    (last_checkpoint,) = (uninterrupted / "checkpoints").iterdir()
    shard_files = sorted(path.name for path in (last_checkpoint / "pytorch_model_fsdp_0").glob("*.distcp"))
    assert shard_files == ["__0_0.distcp", "__1_0.distcp"]
    full_bytes = (uninterrupted / "model" / "model.safetensors").stat().st_size
    for name in shard_files:
        assert (last_checkpoint / "pytorch_model_fsdp_0" / name).stat().st_size < 0.7 * full_bytes

    # The resumed run ends with exactly the last weights of the uninterrupted one.
    last_weights = sharded_checkpoint_weights(last_checkpoint, tmp_path)
    resumed = load_file(interrupted / "model" / "model.safetensors")
    assert resumed.keys() == last_weights.keys()
    assert [name for name in resumed if not torch.equal(resumed[name], last_weights[name])] == []
    summary = json.loads((uninterrupted / "metrics.json").read_text())
    resumed_summary = json.loads((interrupted / "metrics.json").read_text())
    assert summary["global_step"] == resumed_summary["global_step"] == 6
    assert resumed_summary["history"] == summary["history"]

    # The uninterrupted run exported the best epoch's weights, gathered from the shards after reloading them.
    best_epoch = max(summary["history"], key=lambda entry: entry["top1"])["epoch"]
    exported = load_file(uninterrupted / "model" / "model.safetensors")
    best = load_file(uninterrupted / "best" / "model.safetensors")
    assert [name for name in best if not torch.equal(exported[name], best[name])] == []
    trained = {name: weight for name, weight in last_weights.items() if not torch.equal(weight, exported[name])}
    assert bool(trained) == (best_epoch == 0)  # the best epoch's weights, not the last ones
    config = json.loads((uninterrupted / "model" / "config.json").read_text())
    assert config["auto_map"]["AutoModelForVideoClassification"] == "modeling_ila.ILAForVideoClassification"
    assert not list((uninterrupted / "model").glob("_fsdp*.py"))  # no torch internals copied as the model's code

    model = ILAForVideoClassification.from_pretrained(uninterrupted / "model")
    assert all(torch.equal(model.state_dict()[name], weight) for name, weight in exported.items())
    classifier = pipeline("video-classification", model=str(uninterrupted / "model"))
    predictions = classifier(str(data / "videos" / "diving" / "diving_0.mp4"), top_k=2)
    assert len(predictions) == 2 and {prediction["label"] for prediction in predictions} <= set(TRAINING_CLASSES)

    # The sharded model's evaluations (per epoch, and the final one on the reloaded best weights) are one process's.
    single_view, final_view = single_process_metrics(uninterrupted / "model", data)
    for single, distributed in ((single_view, summary["history"][best_epoch]), (final_view, summary["final"])):
        assert single["num_samples"] == distributed["num_samples"] == 7
        assert (single["top1"], single["top5"]) == (distributed["top1"], distributed["top5"])
        assert single["loss"] == pytest.approx(distributed["loss"], rel=1e-5)
