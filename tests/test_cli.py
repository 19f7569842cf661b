"""`ila-hf predict` and `ila-hf convert` from the command line, and multi-view inference."""

import json
import subprocess
import sys

import pytest
import torch

from ila_hf import ILAForVideoClassification, ILAVideoConfig, ILAVideoProcessor
from ila_hf.cli import main
from ila_hf.inference import view_probabilities

from .conftest import TINY_CLIP_VISION
from .released_checkpoint import write_released_checkpoint
from .videos import write_random_bytes, write_video


LABELS = {0: "left", 1: "right", 2: "up"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("predict_model")
    config = ILAVideoConfig(**TINY_CLIP_VISION, num_frames=4, id2label=LABELS)
    model = ILAForVideoClassification(config).eval()
    with torch.no_grad():  # make the classes distinguishable
        model.head.classifier.weight.normal_(std=5.0)
    model.save_pretrained(folder)
    ILAVideoProcessor(num_frames=4, crop_size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict_videos")
    return {
        "good": write_video(folder / "good.mp4", 20, width=96, height=72),
        "webm": write_video(folder / "other.webm", 9, width=70, height=50),
        "broken": write_random_bytes(folder / "broken.mp4"),
    }


def expected_probabilities(model_dir, video, num_clips=1, num_crops=1):
    model = ILAForVideoClassification.from_pretrained(model_dir).eval()
    processor = ILAVideoProcessor.from_pretrained(model_dir)
    views = processor(str(video), num_clips=num_clips, num_crops=num_crops, return_tensors="pt").pixel_values
    views = views.reshape(-1, *views.shape[-4:])  # (V, T, C, H, W)
    with torch.no_grad():
        return torch.stack([model(pixel_values=view[None]).logits[0].softmax(-1) for view in views]).mean(0)


def test_view_probabilities_average_each_views_softmax():
    torch.manual_seed(0)
    model = ILAForVideoClassification(ILAVideoConfig(**TINY_CLIP_VISION, num_frames=4, id2label=LABELS)).eval()
    views = torch.randn(2, 3, 4, 3, 64, 64)
    with torch.no_grad():
        expected = torch.stack(
            [torch.stack([model(pixel_values=view[None]).logits[0].softmax(-1) for view in video]).mean(0)
             for video in views]
        )
        torch.testing.assert_close(view_probabilities(model, views, max_batch_size=4), expected)
        torch.testing.assert_close(view_probabilities(model, views[:, 0]), model(pixel_values=views[:, 0]).logits.softmax(-1))


def test_predict_prints_json_for_good_files_and_fails_for_bad_ones(model_dir, videos, capsys):
    status = main(
        ["predict", str(videos["good"]), str(videos["broken"]), str(videos["webm"]), "--model", str(model_dir),
         "--top-k", "9", "--views", "2x3", "--json"]
    )
    captured = capsys.readouterr()

    assert status == 1
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["video"] for line in lines] == [str(videos["good"]), str(videos["broken"]), str(videos["webm"])]
    assert lines[1]["error"].startswith(str(videos["broken"]))
    assert f"ila-hf predict: {videos['broken']}" in captured.err
    good = lines[0]["predictions"]
    assert len(good) == 3  # top-k clipped to the number of labels
    expected = expected_probabilities(model_dir, videos["good"], num_clips=2, num_crops=3)
    top = expected.topk(3)
    assert [p["label"] for p in good] == [LABELS[i] for i in top.indices.tolist()]
    assert [p["score"] for p in good] == pytest.approx(top.values.tolist(), abs=1e-5)


def test_predict_table_and_exit_status_from_the_console_script(model_dir, videos):
    result = subprocess.run(
        [sys.executable, "-m", "ila_hf.cli", "predict", str(videos["good"]), "--model", str(model_dir),
         "--top-k", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    expected = expected_probabilities(model_dir, videos["good"]).topk(2)
    assert [row[:2] for row in rows] == [[str(videos["good"]), "1"], [str(videos["good"]), "2"]]
    assert [row[3] for row in rows] == [LABELS[i] for i in expected.indices.tolist()]
    assert [float(row[2]) for row in rows] == pytest.approx(expected.values.tolist(), abs=1e-4)


def test_predict_rejects_malformed_views(model_dir, videos, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(videos["good"]), "--model", str(model_dir), "--views", "4x2"])
    assert exit_info.value.code == 2
    assert "expected CLIPSxCROPS with CROPS 1 or 3" in capsys.readouterr().err


def test_convert_command_writes_a_loadable_folder(tmp_path, capsys):
    checkpoint = tmp_path / "ila_ssv2.pth"
    write_released_checkpoint(checkpoint, "ssv2", num_classes=5)
    labels = tmp_path / "labels.csv"
    labels.write_text("id,name\n" + "".join(f"{i},class {i}\n" for i in range(5)))

    status = main(["convert", str(checkpoint), str(tmp_path / "out"), "--variant", "ssv2", "--class-names", str(labels)])

    assert status == 0
    assert f"Wrote {tmp_path / 'out'}" in capsys.readouterr().out
    model = ILAForVideoClassification.from_pretrained(tmp_path / "out")
    assert model.config.id2label[4] == "class 4" and model.config.interaction_variant == "conv"


def test_convert_command_reports_a_variant_mismatch(tmp_path):
    checkpoint = tmp_path / "ila_ssv2.pth"
    write_released_checkpoint(checkpoint, "ssv2", num_classes=5)
    with pytest.raises(ValueError, match="k400"):
        main(["convert", str(checkpoint), str(tmp_path / "out"), "--variant", "k400"])


def test_convert_help_states_the_tokenizer_default_and_how_to_go_offline(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--clip-text FOLDER_OR_HUB_ID" in help_text
    assert "a local folder (needed offline)" in help_text and "(default: openai/clip-vit-base-patch16," in help_text
