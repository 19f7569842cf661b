"""Export for serving: torch.export programs and ONNX graphs (dynamic batch) that compute the model's logits."""

import json

import pytest
import torch

from ila_hf import ILAVideoProcessor
from ila_hf.cli import main as cli_main
from ila_hf.serving import export_program, save_onnx

from .helpers import case_model, case_video


CASES = [("depthwise", "linear", False), ("depthwise", "text", True), ("conv", "linear", False), ("conv", "text", True)]
CASE_IDS = [f"{variant}-{head}-{'fused' if fused else 'unfused'}" for variant, head, fused in CASES]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny tensors: a thread pool only adds overhead


def eval_model(variant, head, fused):
    model = case_model(variant, head, num_hidden_layers=1).eval()
    return model.fuse_for_inference() if fused else model


@pytest.mark.parametrize("variant, head, fused", CASES, ids=CASE_IDS)
def test_exported_program_computes_the_logits_for_any_batch_size(variant, head, fused):
    model = eval_model(variant, head, fused)
    program = export_program(model).module()
    for batch_size in (1, 3):
        videos = case_video(batch_size, seed=batch_size)
        with torch.no_grad():
            torch.testing.assert_close(program(videos), model(pixel_values=videos).logits, rtol=1e-5, atol=1e-5)


def test_strict_export_computes_the_logits():
    model = eval_model("depthwise", "text", fused=True)
    program = export_program(model, strict=True).module()
    with torch.no_grad():
        torch.testing.assert_close(program(case_video(3)), model(pixel_values=case_video(3)).logits)


def test_export_refuses_a_model_in_training_mode():
    with pytest.raises(ValueError, match=r"evaluation mode: call model.eval\(\) first"):
        export_program(case_model("conv", "linear").train())


# ONNX export takes tens of seconds per model: two cases cover both variants, both heads, fused and not.
@pytest.mark.parametrize("variant, head, fused", [CASES[1], CASES[2]], ids=[CASE_IDS[1], CASE_IDS[2]])
def test_onnx_export_command_runs_in_onnxruntime_like_pytorch(tmp_path, variant, head, fused):
    onnxruntime = pytest.importorskip("onnxruntime", reason="needs the `export` extra")
    model = case_model(variant, head, num_hidden_layers=1).eval()
    model.save_pretrained(tmp_path / "model")
    ILAVideoProcessor(num_frames=model.config.num_frames, crop_size={"height": 64, "width": 64}).save_pretrained(
        tmp_path / "model"
    )
    arguments = ["export", str(tmp_path / "model"), str(tmp_path / "onnx"), *(["--fuse"] if fused else [])]
    assert cli_main(arguments) == 0

    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [tensor.name for tensor in session.get_outputs()] == ["logits"]
    for batch_size in (1, 3):
        videos = case_video(batch_size, seed=batch_size)
        (logits,) = session.run(None, {"pixel_values": videos.numpy()})
        with torch.no_grad():
            expected = model(pixel_values=videos).logits
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-4, atol=1e-4)
    processor = json.loads((tmp_path / "onnx" / "video_preprocessor_config.json").read_text())
    assert processor["num_frames"] == model.config.num_frames and processor["crop_size"]["height"] == 64
    assert json.loads((tmp_path / "onnx" / "config.json").read_text())["id2label"]["2"] == "up"


def test_released_evaluation_exports_with_the_statistics_of_each_batch(tmp_path):
    """
    `batchnorm_eval_statistics="batch"` (the released K400 evaluation) normalises the interaction features with the
    statistics of the batch being classified: the exported graphs must keep that, not freeze the running statistics.
    """
    onnxruntime = pytest.importorskip("onnxruntime", reason="needs the `export` extra")
    model = case_model("depthwise", "text", num_hidden_layers=1, batchnorm_eval_statistics="batch").eval()
    program = export_program(model)
    save_onnx(program, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    videos = case_video(3, seed=1)
    with torch.no_grad():
        expected = model(pixel_values=videos).logits
        alone = model(pixel_values=videos[:1]).logits
    # The first video's logits depend on its batch companions (by far more than float rounding, ~1e-7).
    assert (alone - expected[:1]).abs().max() > 1e-4
    for batch in (videos, videos[:1]):
        with torch.no_grad():
            reference = model(pixel_values=batch).logits
            torch.testing.assert_close(program.module()(batch), reference, rtol=1e-5, atol=1e-5)
        (logits,) = session.run(None, {"pixel_values": batch.numpy()})
        torch.testing.assert_close(torch.from_numpy(logits), reference, rtol=1e-4, atol=1e-4)
