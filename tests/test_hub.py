"""ila_hf.hub: the exported folder (weights, processor, remote code, model card) and the background upload."""

import errno
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

import ila_hf.hub
from ila_hf import ILAForVideoClassification
from ila_hf.atomic_files import DiskFullError
from ila_hf.hub import (
    HubPushError,
    accuracy_results,
    check_push_access,
    export_model,
    find_model_card_template,
    model_card_context,
    push_to_hub_in_background,
    render_model_card,
)
from ila_hf.video_processing_ila import ILAVideoProcessor
from tests.conftest import TRAINING_CLASSES


def tiny_model(clip_dir) -> ILAForVideoClassification:
    return ILAForVideoClassification.from_clip(str(clip_dir), num_frames=4, id2label=dict(enumerate(TRAINING_CLASSES)))


def tiny_processor() -> ILAVideoProcessor:
    return ILAVideoProcessor(num_frames=4, crop_size={"height": 64, "width": 64})


@pytest.fixture(scope="module")
def exported_folder(tiny_clip_dir, tmp_path_factory) -> Path:
    model = tiny_model(tiny_clip_dir)
    processor = tiny_processor()
    context = model_card_context(
        model,
        model_id="someone/ila-tiny",
        base_model="someone/tiny-clip",
        train_data="someone/tiny-videos",
        num_train_videos=12,
        validation_data="someone/tiny-videos",
        num_validation_videos=7,
        hyperparameters={"epochs": 2, "lr: MIT": 4e-4},
        metrics={"validation top1": 0.4285714, "validation top5": 1.0},
        compute={"device": "1 x cpu", "optimizer steps": 12},
        eval_results=accuracy_results({"top1": 0.4285714, "top5": 1.0, "loss": 1.2}, "someone/tiny-videos", "1 x 1"),
    )
    return export_model(model, tmp_path_factory.mktemp("export"), video_processor=processor, card_context=context)


@pytest.fixture
def no_waiting(monkeypatch):
    delays = []
    monkeypatch.setattr(ila_hf.hub, "_sleep", delays.append)
    return delays


# ------------------------------------------------------------------------------------------------------ export
def test_export_holds_safetensors_config_processor_code_and_card(exported_folder):
    files = {path.name for path in exported_folder.iterdir()}
    assert {
        "model.safetensors",
        "config.json",
        "video_preprocessor_config.json",
        "README.md",
        "modeling_ila.py",
        "configuration_ila.py",
        "video_processing_ila.py",
        "video_io.py",
        "sampling.py",
        "transforms.py",
    } <= files
    config = json.loads((exported_folder / "config.json").read_text())
    assert config["auto_map"]["AutoModelForVideoClassification"] == "modeling_ila.ILAForVideoClassification"
    processor_config = json.loads((exported_folder / "video_preprocessor_config.json").read_text())
    assert processor_config["auto_map"]["AutoVideoProcessor"] == "video_processing_ila.ILAVideoProcessor"
    assert processor_config["num_frames"] == 4


def test_model_card_is_filled_with_the_runs_values(exported_folder):
    card = (exported_folder / "README.md").read_text()
    assert "# ila-tiny\n" in card
    assert 'from_pretrained("someone/ila-tiny", trust_remote_code=True)' in card
    assert "| validation top1 | 0.4286 |" in card
    assert "| lr: MIT | 0.0004 |" in card
    assert "someone/tiny-videos (12 videos)" in card and "6 classes" in card
    assert "{{" not in card and "@inproceedings{tu2023ila," in card


def test_model_card_metadata_has_the_base_model_dataset_and_model_index(exported_folder):
    data = ModelCard.load(exported_folder / "README.md").data
    assert (data.library_name, data.pipeline_tag, data.license) == ("transformers", "video-classification", "apache-2.0")
    assert data.base_model == "someone/tiny-clip" and data.datasets == ["someone/tiny-videos"]
    assert data.model_name == "ila-tiny"
    [top1, top5] = data.eval_results
    assert (top1.task_type, top1.dataset_split) == ("video-classification", "validation")
    assert top1.dataset_type == top1.dataset_name == "someone/tiny-videos"
    assert (top1.metric_type, top1.metric_name, top1.metric_value) == ("accuracy", "Top-1 accuracy (1 x 1)", 0.4285714)
    assert (top5.metric_name, top5.metric_value) == ("Top-5 accuracy (1 x 1)", 1.0)


def test_model_card_keeps_local_checkpoints_and_data_out_of_the_metadata(tiny_clip_dir, tmp_path):
    model = ILAForVideoClassification.from_clip(str(tiny_clip_dir), num_frames=4, id2label={0: "a", 1: "b"})
    (tmp_path / "val.txt").write_text("")
    context = model_card_context(
        model,
        model_id="run",
        base_model=str(tiny_clip_dir),
        train_data=str(tmp_path),
        eval_results=accuracy_results({"top1": 0.5}, str(tmp_path / "val.txt"), "2 clip(s) x 3 crop(s)"),
    )
    data = ModelCard(str(render_model_card(context))).data  # parsed back from the text
    assert data.base_model is None and data.datasets is None
    [top1] = data.eval_results
    assert (top1.dataset_type, top1.dataset_name, top1.metric_value) == ("val.txt", "val.txt (local files)", 0.5)


def test_every_placeholder_of_the_model_card_template_gets_a_value(exported_folder):
    from jinja2 import Environment, meta

    template = Environment().parse(find_model_card_template().read_text())
    model = ILAForVideoClassification.from_pretrained(exported_folder)
    assert meta.find_undeclared_variables(template) <= set(model_card_context(model, model_id="x"))


@pytest.mark.slow
def test_exported_folder_loads_with_trust_remote_code_without_ila_hf(exported_folder, tiny_video_dataset):
    """A fresh interpreter that never imports ila_hf loads the model and processor from the folder's code."""
    video = tiny_video_dataset / "videos" / "rowing" / "rowing_0.mp4"
    script = f"""
import sys
from transformers import AutoModelForVideoClassification, AutoVideoProcessor
folder = {str(exported_folder)!r}
model = AutoModelForVideoClassification.from_pretrained(folder, trust_remote_code=True)
processor = AutoVideoProcessor.from_pretrained(folder, trust_remote_code=True)
inputs = processor({str(video)!r}, return_tensors="pt")
assert tuple(inputs["pixel_values"].shape) == (1, 4, 3, 64, 64), inputs["pixel_values"].shape
assert model(**inputs).logits.shape == (1, 6)
from transformers import pipeline
classifier = pipeline("video-classification", model=folder, trust_remote_code=True)
predictions = classifier({str(video)!r}, top_k=2)
assert [prediction["label"] for prediction in predictions][0] in model.config.id2label.values(), predictions
assert not any(name == "ila_hf" or name.startswith("ila_hf.") for name in sys.modules)
print(type(model).__module__, type(processor).__module__)
"""
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd="/", env=environment, timeout=300
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "transformers_modules" in completed.stdout


# ------------------------------------------------------------------------------------------------------ upload
def test_upload_retries_with_exponential_backoff_and_reports_success(exported_folder, monkeypatch, no_waiting):
    calls = []

    def create_repo(self, repo_id, **kwargs):
        calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        calls.append(("upload_folder", kwargs["repo_id"], kwargs))
        if sum(call[0] == "upload_folder" for call in calls) < 3:
            raise ConnectionError("Hub unreachable")
        return "https://hub.example/someone/ila-tiny/commit/abc"

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    status = push_to_hub_in_background(exported_folder, "someone/ila-tiny", initial_backoff=1.5, private=True).result(
        30
    )

    assert status.ok and status.attempts == 3 and status.error is None
    assert status.commit_url.endswith("/commit/abc")
    assert no_waiting == [1.5, 3.0]
    assert status.errors == ["ConnectionError: Hub unreachable"] * 2
    create_kwargs = calls[0][2]
    assert create_kwargs["exist_ok"] is True and create_kwargs["private"] is True
    upload_kwargs = calls[-1][2]
    assert upload_kwargs["folder_path"] == str(exported_folder) and upload_kwargs["repo_id"] == "someone/ila-tiny"


def test_upload_that_keeps_failing_is_reported_and_logged_not_raised(exported_folder, monkeypatch, no_waiting, caplog):
    def upload_folder(self, **kwargs):
        raise PermissionError("401 Unauthorized")

    monkeypatch.setattr(HfApi, "create_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    with caplog.at_level(logging.WARNING, logger="ila_hf.hub"):
        status = push_to_hub_in_background(exported_folder, "someone/ila-tiny", max_attempts=4).result(30)
    assert not status.ok and status.attempts == 4
    assert status.error == "PermissionError: 401 Unauthorized"
    assert no_waiting == [2.0, 4.0, 8.0]
    assert "failed after 4 attempts" in caplog.text


def test_upload_runs_in_the_background(exported_folder, monkeypatch):
    release = threading.Event()
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kwargs: release.wait(30) and "done")
    upload = push_to_hub_in_background(exported_folder, "someone/ila-tiny")
    assert not upload.done()
    unfinished = upload.result(timeout=0.05)
    assert not unfinished.ok and "still running" in unfinished.error
    release.set()
    assert upload.result(timeout=30).ok


def test_nothing_is_uploaded_from_a_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="export the model first"):
        push_to_hub_in_background(tmp_path / "missing", "someone/ila-tiny")


def test_an_export_that_fails_midway_leaves_the_previous_complete_folder_or_none(
    exported_folder, tiny_clip_dir, tmp_path, monkeypatch
):
    """Killed or failing after the weights but before the video processor, an export leaves no half folder."""

    def fail_after_the_weights(self, folder, *args, **kwargs):
        assert (Path(folder) / "model.safetensors").is_file()
        raise RuntimeError("killed while saving the video processor")

    previous = shutil.copytree(exported_folder, tmp_path / "model")
    files_before = {path.name: path.read_bytes() for path in previous.iterdir()}
    monkeypatch.setattr(ILAVideoProcessor, "save_pretrained", fail_after_the_weights)
    model = tiny_model(tiny_clip_dir)
    for folder in (previous, tmp_path / "fresh"):
        with pytest.raises(RuntimeError, match="killed while saving"):
            export_model(model, folder, video_processor=tiny_processor())
    assert {path.name: path.read_bytes() for path in previous.iterdir()} == files_before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]  # no "fresh", no temporary folder left
    monkeypatch.undo()

    exported = export_model(model, previous, video_processor=tiny_processor())  # replaces the previous export whole
    assert "README.md" not in {path.name for path in exported.iterdir()}
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_an_export_never_replaces_a_folder_that_is_not_a_model(tiny_clip_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not a model folder"):
        export_model(tiny_model(tiny_clip_dir), tmp_path, video_processor=tiny_processor())
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_a_full_disk_during_export_names_the_device_holding_the_folder(tiny_clip_dir, tmp_path, monkeypatch):
    def disk_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ILAVideoProcessor, "save_pretrained", disk_full)
    with pytest.raises(DiskFullError, match=f"No space left on the device holding {tmp_path} while writing model"):
        export_model(tiny_model(tiny_clip_dir), tmp_path / "model", video_processor=tiny_processor())
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_cannot_be_served_is_never_uploaded(exported_folder, tmp_path, monkeypatch):
    half = shutil.copytree(exported_folder, tmp_path / "model")
    (half / "video_preprocessor_config.json").unlink()  # as an interrupted export of an earlier version left it
    uploads = []
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **kwargs: uploads.append(kwargs))
    with pytest.raises(FileNotFoundError, match="it lacks video_preprocessor_config.json, so it cannot be served"):
        push_to_hub_in_background(half, "someone/ila-tiny")
    assert uploads == []


def test_training_with_a_failing_push_still_exports_and_returns(
    one_torch_thread, tiny_video_dataset, tiny_clip_dir, tmp_path, monkeypatch, no_waiting, caplog
):
    """Offline from the start: a warning before training, then the run finishes and keeps its export; the upload saw
    the complete folder and its failure is reported."""
    from ila_hf.training import TrainingConfig, train

    seen_files = []

    def upload_folder(self, **kwargs):
        seen_files.append(sorted(os.listdir(kwargs["folder_path"])))
        raise ConnectionError("no network")

    monkeypatch.setattr(HfApi, "whoami", _raises(ConnectionError("no network")))
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *args, **kwargs: None)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    with caplog.at_level(logging.WARNING, logger="ila_hf.hub"):
        result = train(
            TrainingConfig(
                train_data=str(tiny_video_dataset / "videos"),
                clip_model=str(tiny_clip_dir),
                num_frames=4,
                epochs=1,
                batch_size=4,
                num_workers=0,
                checkpoint_every_epochs=None,
                output_dir=str(tmp_path),
                push_to_hub="someone/ila-tiny",
            )
        )
    hub_messages = [record.getMessage() for record in caplog.records if record.name == "ila_hf.hub"]
    assert hub_messages[0].startswith("The Hub cannot be reached now (ConnectionError: no network)")  # at the start
    assert result.hub_upload is not None and not result.hub_upload.ok
    assert result.hub_upload.attempts == 5 and "no network" in result.hub_upload.error
    assert (Path(result.model_dir) / "model.safetensors").is_file()
    assert all({"model.safetensors", "README.md", "video_processing_ila.py"} <= set(files) for files in seen_files)
    assert 'from_pretrained("someone/ila-tiny"' in (Path(result.model_dir) / "README.md").read_text()


# ------------------------------------------------------------------------------------------------------ access check
WRITE_TOKEN_USER = {"name": "someone", "orgs": [], "auth": {"accessToken": {"role": "write"}}}


def _raises(error: Exception):
    def method(self, *args, **kwargs):
        raise error

    return method


def _hub_refusal(status: int, message: str) -> HfHubHTTPError:
    request = httpx2.Request("GET", "https://hub.example/api/whoami-v2")
    return HfHubHTTPError(message, response=httpx2.Response(status, request=request))


def test_push_access_check_creates_the_repo_once_the_token_may_write(monkeypatch):
    created = []
    monkeypatch.setattr(HfApi, "whoami", lambda self: WRITE_TOKEN_USER)
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: created.append((repo_id, kwargs)))
    assert check_push_access("someone/ila-tiny", token="hf_write", private=True) is True
    assert created == [("someone/ila-tiny", {"repo_type": "model", "private": True, "exist_ok": True})]


@pytest.mark.parametrize(
    ("repo_id", "whoami", "create_repo", "message"),
    [
        ("someone/ila tiny!", None, None, "Repo id must use alphanumeric chars"),
        (
            "someone/ila-tiny",
            _raises(_hub_refusal(401, "Invalid user token.")),
            None,
            "the Hub refused (401: Invalid user token.); check the repo id and give a token with write access",
        ),
        (
            "someone/ila-tiny",
            _raises(LocalTokenNotFoundError("no token")),
            None,
            "no Hub token found; log in with `hf auth login`",
        ),
        ("google/ila-tiny", lambda self: WRITE_TOKEN_USER, None, "someone is not a member of google"),
        (
            "lab/ila-tiny",
            lambda self: {**WRITE_TOKEN_USER, "orgs": [{"name": "lab", "roleInOrg": "contributor"}]},
            _raises(_hub_refusal(403, "You don't have the rights to create a model under the namespace lab")),
            "the Hub refused (403: You don't have the rights",
        ),
        (
            "someone/ila-tiny",
            lambda self: {**WRITE_TOKEN_USER, "auth": {"accessToken": {"role": "read"}}},
            None,
            "the token of someone is read-only; give a token with write access to it",
        ),
        (
            "lab/ila-tiny",
            lambda self: {**WRITE_TOKEN_USER, "orgs": [{"name": "lab", "roleInOrg": "read"}]},
            None,
            "someone has only the read role in lab",
        ),
        (
            "someone/ila-tiny",
            lambda self: {
                **WRITE_TOKEN_USER,
                "auth": {
                    "accessToken": {
                        "role": "fineGrained",
                        "fineGrained": {
                            "scoped": [{"entity": {"name": "someone"}, "permissions": ["repo.content.read"]}]
                        },
                    }
                },
            },
            None,
            "the fine-grained token of someone has no write permission (repo.write) on someone",
        ),
    ],
    ids=["bad-id", "bad-token", "no-token", "not-member", "repo-refused", "read-token", "read-role", "fine-grained"],
)
def test_push_access_check_fails_at_once_when_the_upload_could_not_succeed(
    monkeypatch, repo_id, whoami, create_repo, message
):
    monkeypatch.setattr(HfApi, "whoami", whoami or _raises(AssertionError("the Hub must not be asked")))
    monkeypatch.setattr(HfApi, "create_repo", create_repo or _raises(AssertionError("no repo may be created")))
    with pytest.raises(HubPushError, match=re.escape(f"Cannot push to the Hub repo {repo_id!r}: {message}")):
        check_push_access(repo_id, token="hf_token")


def test_push_access_check_passes_with_write_access_through_an_organisation_or_fine_grained_token(monkeypatch):
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *args, **kwargs: None)
    member = {**WRITE_TOKEN_USER, "orgs": [{"name": "lab", "roleInOrg": "write"}]}
    monkeypatch.setattr(HfApi, "whoami", lambda self: member)
    assert check_push_access("lab/ila-tiny") is True
    fine_grained = {
        **WRITE_TOKEN_USER,
        "auth": {
            "accessToken": {
                "role": "fineGrained",
                "fineGrained": {"scoped": [{"entity": {"name": "someone"}, "permissions": ["repo.write"]}]},
            }
        },
    }
    monkeypatch.setattr(HfApi, "whoami", lambda self: fine_grained)
    assert check_push_access("someone/ila-tiny") is True


@pytest.mark.parametrize(
    "error",
    [
        OfflineModeIsEnabled("offline mode is enabled"),
        httpx2.ConnectError("Name or service not known"),
        _hub_refusal(503, "Service Unavailable"),
    ],
    ids=["HF_HUB_OFFLINE", "no-connection", "server-error"],
)
def test_push_access_check_offline_warns_that_the_upload_is_left_to_the_end(monkeypatch, caplog, error):
    monkeypatch.setattr(HfApi, "whoami", _raises(error))
    with caplog.at_level(logging.WARNING, logger="ila_hf.hub"):
        assert check_push_access("someone/ila-tiny") is False
    assert f"The Hub cannot be reached now ({type(error).__name__}: " in caplog.text
    assert "the upload at the end of the run will be retried" in caplog.text


def test_training_with_a_refused_token_fails_before_reading_any_data(tiny_clip_dir, tmp_path, monkeypatch):
    from ila_hf.training import TrainingConfig, train

    monkeypatch.setattr(HfApi, "whoami", _raises(_hub_refusal(401, "Invalid user token.")))
    monkeypatch.setattr("ila_hf.training.loop.build_dataset", _raises(AssertionError("data read before the check")))
    config = TrainingConfig(
        train_data=str(tmp_path / "videos"),
        clip_model=str(tiny_clip_dir),
        output_dir=str(tmp_path / "run"),
        push_to_hub="someone/ila-tiny",
        hub_token="hf_bad",
    )
    with pytest.raises(HubPushError, match=re.escape("the Hub refused (401: Invalid user token.)")):
        train(config)
