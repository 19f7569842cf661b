"""`ila-hf` from the command line (predict, convert, errors, logging, help), and multi-view inference."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers

from ila_hf import ILAForVideoClassification, ILAVideoProcessor
from ila_hf.cli import build_parser, main
from ila_hf.inference import classify_videos, view_probabilities

from .helpers import tiny_ila_config
from .released_checkpoint import write_released_checkpoint
from .videos import write_random_bytes, write_video


LABELS = {0: "left", 1: "right", 2: "up"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("predict_model")
    config = tiny_ila_config(id2label=LABELS)
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
    model = ILAForVideoClassification(tiny_ila_config(id2label=LABELS)).eval()
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


@pytest.mark.slow
def test_predict_table_and_exit_status_from_the_console_script(model_dir, videos):
    result = subprocess.run(
        [sys.executable, "-m", "ila_hf.cli", "predict", str(videos["good"]), "--model", str(model_dir),
         "--top-k", "2"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f" INFO ila_hf.cli: Loaded {model_dir} (3 classes) on cpu\n" in result.stderr
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    expected = expected_probabilities(model_dir, videos["good"]).topk(2)
    assert [row[:2] for row in rows] == [[str(videos["good"]), "1"], [str(videos["good"]), "2"]]
    assert [row[3] for row in rows] == [LABELS[i] for i in expected.indices.tolist()]
    assert [float(row[2]) for row in rows] == pytest.approx(expected.values.tolist(), abs=1e-4)


def test_predict_reports_hostile_files_and_classifies_the_rest(model_dir, videos, tmp_path, capsys):
    nan_rotation = write_video(tmp_path / "nan_rotation.mkv", 10, stream_tags={"rotate": "nan"})
    playlist = tmp_path / "playlist.mkv"  # an HLS playlist under a video's name, naming a local file
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{videos['good']}\n#EXT-X-ENDLIST\n")
    paths = [nan_rotation, playlist, videos["good"]]
    status = main(["predict", *map(str, paths), "--model", str(model_dir), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == 1 and [line["video"] for line in lines] == list(map(str, paths))
    assert "predictions" in lines[0] and "predictions" in lines[2]
    assert lines[1]["error"].startswith(f"{playlist}: not a readable video container")


def test_classify_videos_names_in_memory_videos_briefly(model_dir, videos):
    model = ILAForVideoClassification.from_pretrained(model_dir).eval()
    processor = ILAVideoProcessor.from_pretrained(model_dir)
    data = videos["good"].read_bytes()
    sources = [data, {"path": "clip.mp4", "bytes": data}, b"junk"]
    predictions = list(classify_videos(model, processor, sources, top_k=2))
    assert [prediction.video for prediction in predictions] == [f"<{len(data)} bytes>", "clip.mp4", "<4 bytes>"]
    assert predictions[0].labels == predictions[1].labels and len(predictions[0].labels) == 2
    assert predictions[2].error.startswith("<4 bytes>: not a readable video container")


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


def test_convert_command_reports_a_variant_mismatch(tmp_path, capsys):
    checkpoint = tmp_path / "ila_ssv2.pth"
    write_released_checkpoint(checkpoint, "ssv2", num_classes=5)

    status = main(["convert", str(checkpoint), str(tmp_path / "out"), "--variant", "k400"])

    assert status == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("ila-hf convert: error: ") and "k400" in line


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch):
    """`main` sets levels and verbosity variables for the process; give the next test the ones it found."""
    for variable in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "HF_HUB_VERBOSITY", "ILA_HF_DEBUG"):
        monkeypatch.delenv(variable, raising=False)
    ila_level = logging.getLogger("ila_hf").level
    transformers_level = transformers.logging.get_verbosity()
    hub_propagates = logging.getLogger("huggingface_hub").propagate
    yield
    logging.getLogger("ila_hf").setLevel(ila_level)
    transformers.logging.set_verbosity(transformers_level)
    logging.getLogger("huggingface_hub").propagate = hub_propagates


def run_cli(*arguments: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ila_hf.cli", *arguments], capture_output=True, text=True, timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_a_model_folder_that_does_not_exist_is_named_in_one_line(videos, tmp_path, capsys):
    typo = tmp_path / "runs" / "modle"
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(videos["good"]), "--model", str(typo)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ila-hf predict: error: argument --model: folder {typo} does not exist"
    )


def test_a_model_folder_without_config_is_refused(videos, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(videos["good"]), "--model", str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ila-hf predict: error: argument --model: folder {tmp_path} has no config.json; expected a saved model folder"
    )


def test_a_hub_id_that_cannot_be_reached_suggests_a_local_folder(videos, monkeypatch, capsys):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # no request leaves the machine

    status = main(["predict", str(videos["good"]), "--model", "someone/ila-model-not-in-the-cache"])

    assert status == 2
    assert capsys.readouterr().err.splitlines() == [
        "ila-hf predict: error: could not reach the Hugging Face Hub to download someone/ila-model-not-in-the-cache, "
        "and it is not in the local cache; give the folder of a saved model instead, or connect and try again"
    ]


def test_a_random_bytes_checkpoint_is_one_line(tmp_path, capsys):
    checkpoint = write_random_bytes(tmp_path / "ila_k400.pth")

    status = main(["convert", str(checkpoint), str(tmp_path / "out")])

    assert status == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"ila-hf convert: error: {checkpoint} ")
    assert not (tmp_path / "out").exists()


def test_a_missing_video_fails_while_the_others_are_classified(model_dir, videos, tmp_path, capsys):
    missing = tmp_path / "missing.mp4"

    status = main(["predict", str(missing), str(videos["good"]), "--model", str(model_dir), "--top-k", "1"])

    assert status == 1
    captured = capsys.readouterr()
    assert [line.split("\t")[:2] for line in captured.out.splitlines()] == [[str(videos["good"]), "1"]]
    [line] = [line for line in captured.err.splitlines() if str(missing) in line]
    assert line.startswith(f"ila-hf predict: {missing}")
    assert "Traceback" not in captured.err


@pytest.mark.parametrize("value", ["-1", "0", "two"])
def test_top_k_must_be_positive(model_dir, videos, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(videos["good"]), "--model", str(model_dir), "--top-k", value])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"ila-hf predict: error: argument --top-k: expected a positive whole number, got {value!r}"
    )


def test_a_bug_says_so_and_how_to_see_its_traceback(model_dir, videos, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise TypeError("unexpected keyword 'clips'")

    monkeypatch.setattr("ila_hf.inference.classify_videos", broken)

    status = main(["predict", str(videos["good"]), "--model", str(model_dir)])

    assert status == 70
    line = capsys.readouterr().err.splitlines()[-1]  # after transformers' loading bar
    assert line.startswith("ila-hf predict: internal error: TypeError: unexpected keyword 'clips'. This is a bug")
    assert "--debug" in line


def test_debug_raises_the_error_itself(tmp_path):
    checkpoint = write_random_bytes(tmp_path / "ila_k400.pth")
    from ila_hf.convert import CheckpointConversionError

    with pytest.raises(CheckpointConversionError, match=str(checkpoint)):
        main(["convert", str(checkpoint), str(tmp_path / "out"), "--debug"])


@pytest.mark.slow
def test_ila_hf_debug_variable_shows_the_traceback(tmp_path):
    checkpoint = write_random_bytes(tmp_path / "ila_k400.pth")

    result = run_cli("convert", str(checkpoint), str(tmp_path / "out"), env={"ILA_HF_DEBUG": "1"})

    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.splitlines()[-1].startswith("ila_hf.convert.CheckpointConversionError: ")


@pytest.mark.parametrize(
    ("flags", "ila_level", "transformers_level"),
    [([], logging.INFO, logging.WARNING), (["-q"], logging.WARNING, logging.ERROR), (["-v"], logging.DEBUG, logging.INFO)],
)
def test_verbosity_flags_set_our_level_and_the_libraries(model_dir, videos, caplog, flags, ila_level, transformers_level):
    status = main(["predict", str(videos["good"]), "--model", str(model_dir), *flags])

    assert status == 0
    assert logging.getLogger("ila_hf").getEffectiveLevel() == ila_level
    assert transformers.logging.get_verbosity() == transformers_level
    assert os.environ["TRANSFORMERS_VERBOSITY"] == logging.getLevelName(transformers_level).lower()
    loaded = [record for record in caplog.records if record.name == "ila_hf.cli" and record.msg.startswith("Loaded")]
    assert len(loaded) == (0 if flags == ["-q"] else 1)


@pytest.mark.parametrize(
    "arguments", [["-q", "predict", "video.mp4"], ["predict", "video.mp4", "--quiet"], ["predict", "-q", "video.mp4"]]
)
def test_global_options_are_accepted_before_and_after_the_command(model_dir, arguments):
    args = build_parser("predict").parse_args([*arguments, "--model", str(model_dir)])
    assert args.log_level == logging.WARNING and args.videos == ["video.mp4"] and args.debug is False


HELP_SCRIPT = textwrap.dedent(
    """
    import contextlib, io, sys
    from ila_hf.cli import build_parser, main

    for arguments in sys.argv[1:]:
        with contextlib.redirect_stdout(io.StringIO()) as shown, contextlib.suppress(SystemExit):
            main(arguments.split())
        assert "usage: ila-hf" in shown.getvalue(), arguments
    print(" ".join(sorted(name for name in ("torch", "transformers", "av", "accelerate", "datasets") if name in sys.modules)))
    """
)


def test_help_imports_no_heavy_library():
    result = subprocess.run(
        [sys.executable, "-c", HELP_SCRIPT, "--help", "predict --help", "convert --help", "train --help", "-q predict -h"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""


def test_main_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    assert all(f"    {name} " in shown for name in ("demo", "predict", "train", "convert", "benchmark"))


def test_an_invalid_config_is_reported_with_the_validators_message(model_dir, videos, tmp_path, capsys):
    config = json.loads((model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "image_size": 32}))

    status = main(["predict", str(videos["good"]), "--model", str(tmp_path)])

    assert status == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("ila-hf predict: error: The point predictor's two 2x2 max-pools need a patch grid of at least")


def test_convert_help_states_the_tokenizer_default_and_how_to_go_offline(capsys):
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--clip-text FOLDER_OR_HUB_ID" in help_text
    assert "a local folder (needed offline)" in help_text and "(default: openai/clip-vit-base-patch16," in help_text
