"""Export a trained ILA model as a self-contained Transformers folder, and upload it to the Hub in the background.

`export_model` writes everything a user needs into one folder: the weights (safetensors), the config, the video
processor, the Python files that `trust_remote_code` loads, and a model card filled with the run's data,
hyper-parameters and metrics. `check_push_access`, called before a run, fails at once when the upload at its end could
not succeed (a bad repo id or token, no write access). `push_to_hub_in_background` then uploads the finished folder
from a worker thread, retrying with exponential backoff; a failed upload is logged and reported in the returned status,
never raised, so it cannot stop or lose a training run, and a hanging one cannot keep the process alive (the thread is
a daemon).
"""

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
from huggingface_hub.utils import validate_repo_id


try:  # the HTTP client of huggingface_hub 2, then of 1
    from httpx2 import TransportError as _TransportError
except ImportError:
    from httpx import TransportError as _TransportError

from .atomic_files import write_folder_atomically


logger = logging.getLogger(__name__)

MODEL_CARD_TEMPLATE_NAME = "model_card.md"
_sleep = time.sleep  # the wait between upload attempts (tests replace it)


# ------------------------------------------------------------------------------------------------------ model card
def find_model_card_template() -> Path:
    """The model card template: `ila_hf/model_card.md` when packaged, else the repository's `model_card.md`."""
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir / MODEL_CARD_TEMPLATE_NAME, package_dir.parent / MODEL_CARD_TEMPLATE_NAME):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"No {MODEL_CARD_TEMPLATE_NAME} template next to the ila_hf package or in the repository root "
        f"({package_dir}); pass `template=` to `render_model_card`."
    )


def markdown_table(rows: Mapping[str, Any], header: tuple[str, str] = ("name", "value")) -> str:
    """A two-column markdown table of `rows` (floats with 4 significant digits)."""
    lines = [f"| {header[0]} | {header[1]} |", "| --- | --- |"]
    for name, value in rows.items():
        if isinstance(value, float):
            value = f"{value:.4g}"
        lines.append(f"| {name} | {value} |")
    return "\n".join(lines)


def render_model_card(context: Mapping[str, Any], template: str | Path | None = None) -> ModelCard:
    """
    The model card of `context` (see `model_card_context`): huggingface_hub's `ModelCard.from_template`, which writes
    `context["card_data"]` (a `ModelCardData`) as the YAML metadata at `{{ card_data }}` and fills the template's
    other `{{ name }}` placeholders (Jinja2) from the rest of `context`.
    """
    values = dict(context)
    card_data = values.pop("card_data")
    return ModelCard.from_template(card_data, template_path=str(template or find_model_card_template()), **values)


def _hub_id(source: str | None) -> str | None:
    """`source` when it names a Hub repo rather than a local file or folder, else None (the Hub's `base_model` and
    `datasets` metadata take only repo ids)."""
    if not source or Path(source).expanduser().exists():
        return None
    try:
        validate_repo_id(source)
    except HFValidationError:
        return None
    return source


def accuracy_results(accuracy: Mapping[str, Any], dataset: str, protocol: str) -> list[EvalResult]:
    """
    The model-index entries (`ModelCardData.eval_results`) of a validation `accuracy` {"top1": ..., "top5": ...}
    (fractions; other keys are ignored) on `dataset` (a Hub id, or a local list file / folder, named by its file
    name), measured with `protocol` (e.g. "2 clip(s) x 3 crop(s)").
    """
    dataset_id = _hub_id(dataset)
    name = dataset_id or Path(dataset).name
    return [
        EvalResult(
            task_type="video-classification",
            task_name="Video Classification",
            dataset_type=name,
            dataset_name=name if dataset_id else f"{name} (local files)",
            dataset_split="validation",
            metric_type="accuracy",
            metric_name=f"Top-{k} accuracy ({protocol})",
            metric_value=float(accuracy[f"top{k}"]),
        )
        for k in (1, 5)
        if f"top{k}" in accuracy
    ]


def model_card_context(
    model,
    *,
    model_id: str,
    base_model: str = "unknown",
    train_data: str = "unknown",
    num_train_videos: int | str = "unknown",
    validation_data: str = "none",
    num_validation_videos: int | str = 0,
    hyperparameters: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    compute: Mapping[str, Any] | None = None,
    model_name: str | None = None,
    eval_results: Sequence[EvalResult] = (),
    license: str | None = "apache-2.0",
) -> dict[str, Any]:
    """
    The values `model_card.md` refers to, taken from the model's config and the training run, and the card's
    metadata as `card_data` (a `ModelCardData`): base model and training dataset where they are Hub ids (a local
    folder is named in the text only), `eval_results` as its model-index (see `accuracy_results`), and `license`.
    `model_name` (the card's title) defaults to the last part of `model_id`.
    """
    config = model.config
    labels = [config.id2label[index] for index in sorted(config.id2label)]
    preview = ", ".join(f"`{label}`" for label in labels[:8]) + (", ..." if len(labels) > 8 else "")
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    head_description = (
        "cosine similarity with CLIP text embeddings of the class names refined by video-specific prompts"
        if config.head == "text"
        else "linear classifier"
    )
    frozen_description = (
        f"The CLIP backbone was frozen; {trainable:,} of {total:,} parameters were trained."
        if config.freeze_backbone
        else f"The whole model ({trainable:,} of {total:,} parameters) was trained."
    )
    no_metrics = "No evaluation was run."
    model_name = model_name or model_id.rstrip("/").rsplit("/", 1)[-1]
    train_dataset = _hub_id(train_data if train_data != "unknown" else None)
    card_data = ModelCardData(
        model_name=model_name,
        base_model=_hub_id(base_model if base_model != "unknown" else None),
        datasets=[train_dataset] if train_dataset else None,
        eval_results=list(eval_results) or None,
        library_name="transformers",
        pipeline_tag="video-classification",
        license=license,
        tags=["video-classification", "ila", "clip", "custom_code"],
    )
    return {
        "card_data": card_data,
        "model_id": model_id,
        "model_name": model_name,
        "base_model": base_model,
        "train_data": train_data,
        "train_data_name": (
            f"`{train_dataset or Path(train_data).name}`" if train_data not in ("unknown", "") else "unknown data"
        ),
        "num_train_videos": num_train_videos,
        "validation_data": validation_data,
        "num_validation_videos": num_validation_videos,
        "num_labels": config.num_labels,
        "labels_preview": preview,
        "num_frames": config.num_frames,
        "image_size": config.image_size,
        "head": config.head,
        "head_description": head_description,
        "frozen_description": frozen_description,
        "trainable_parameters": f"{trainable:,}",
        "total_parameters": f"{total:,}",
        "hyperparameters": markdown_table(hyperparameters) if hyperparameters else "Not recorded.",
        "metrics": markdown_table(metrics, ("metric", "value")) if metrics else no_metrics,
        "compute": markdown_table(compute, ("item", "value")) if compute else "Not recorded.",
    }


# ------------------------------------------------------------------------------------------------------ export
def export_model(
    model,
    folder: str | Path,
    *,
    video_processor=None,
    card_context: Mapping[str, Any] | None = None,
    card_template: str | Path | None = None,
    state_dict: Mapping[str, Any] | None = None,
) -> Path:
    """
    Write a complete `save_pretrained` folder: `model.safetensors`, `config.json` (with `auto_map`), the video
    processor's JSON, the code files for `trust_remote_code` (modelling, configuration, video processing and their
    sibling imports) and `README.md` (the model card, when `card_context` is given).

    Atomically: everything is written into `<folder>.incomplete`, flushed to disk and renamed to `folder`, replacing
    a previous export there as a whole. Whenever this stops (an error, a full disk, a kill), `folder` holds the
    previous complete export or nothing, never a part of one, so what `pipeline` loads or an upload sends is always
    complete. Upload it afterwards (see `push_to_hub_in_background`).

    Args:
        model: an `ILAForVideoClassification` (unwrapped from any DDP/FSDP wrapper).
        folder: destination; created, or replaced if it holds a model folder (a folder holding other files is
            refused).
        video_processor: an `ILAVideoProcessor` to save alongside the model.
        card_context: the model card's metadata and placeholder values (see `model_card_context`).
        card_template: model card template path; defaults to `find_model_card_template()`.
        state_dict: the weights to save instead of `model.state_dict()`, e.g. `accelerator.get_state_dict(model)`
            gathered from FSDP / DeepSpeed shards.

    Returns:
        The folder path.
    """

    def write(temporary: Path) -> None:
        model.save_pretrained(temporary, state_dict=state_dict)
        if video_processor is not None:
            if getattr(type(video_processor), "_auto_class", None) is None:
                # Copies video_processing_ila.py and its sibling imports, and writes the processor's auto_map.
                type(video_processor).register_for_auto_class()
            video_processor.save_pretrained(temporary)
        if card_context is not None:
            render_model_card(card_context, card_template).save(temporary / "README.md")

    return write_folder_atomically(Path(folder), write)


# What `pipeline("video-classification")` needs from a folder (the weights: one file or a sharded index).
SERVABLE_FILES = ("config.json", "video_preprocessor_config.json")
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")


def missing_servable_files(folder: str | Path) -> list[str]:
    """The files `pipeline` needs that `folder` lacks ([] for a complete export)."""
    folder = Path(folder)
    missing = [name for name in SERVABLE_FILES if not (folder / name).is_file()]
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        missing.append(WEIGHT_FILES[0])
    return missing


# ------------------------------------------------------------------------------------------------------ upload
class HubPushError(PermissionError):
    """The Hub repo to push to cannot take the upload: an invalid repo id, no token, a refused token, or no write
    access to the repo's namespace."""


# Failures to reach the Hub at all (offline mode raises OfflineModeIsEnabled, a ConnectionError; no connection; a
# time-out), as opposed to the Hub's answers.
_HUB_UNREACHABLE = (ConnectionError, TimeoutError, _TransportError)


def check_push_access(
    repo_id: str, *, token: str | None = None, private: bool = False, api: HfApi | None = None
) -> bool:
    """
    Before a run that ends in an upload to `repo_id`, make sure the upload can succeed, as `Trainer` does when it
    starts: validate the repo id, check the token (`whoami`) and its write access to the repo's namespace, and create
    the repo (`exist_ok=True`, so an existing one is kept).

    Returns True when the Hub confirmed all of it, False when the Hub cannot answer now (offline mode, no connection,
    rate limit or server error): a warning then says that the upload is left to the end of the run, where it is
    retried.

    Raises:
        HubPushError: the upload could not succeed (the message says why and what to do).
    """
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubPushError(f"Cannot push to the Hub repo {repo_id!r}: {error}") from error
    api = api or HfApi(token=token)
    try:
        user = api.whoami()
        denial = _write_access_denial(user, repo_id)
        if denial is None:
            api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    except LocalTokenNotFoundError as error:
        raise HubPushError(
            f"Cannot push to the Hub repo {repo_id!r}: no Hub token found; log in with `hf auth login`, set HF_TOKEN "
            "or give a token with write access (hub_token / --hub-token)."
        ) from error
    except (*_HUB_UNREACHABLE, HfHubHTTPError) as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        if not isinstance(error, HfHubHTTPError) or status == 429 or (status or 0) >= 500:
            logger.warning(
                "The Hub cannot be reached now (%s: %s): access to %s is not checked; the upload at the end of the "
                "run will be retried.",
                type(error).__name__,
                message,
                repo_id,
            )
            return False
        raise HubPushError(
            f"Cannot push to the Hub repo {repo_id!r}: the Hub refused ({status}: {message}); check the repo id and "
            "give a token with write access (hub_token / --hub-token, or `hf auth login`)."
        ) from error
    if denial is not None:
        raise HubPushError(
            f"Cannot push to the Hub repo {repo_id!r}: {denial}; give a token with write access to it "
            "(hub_token / --hub-token, or `hf auth login`)."
        )
    logger.info("Hub repo %s is ready for the upload at the end of the run (as %s).", repo_id, user.get("name"))
    return True


def _write_access_denial(user: Mapping[str, Any], repo_id: str) -> str | None:
    """Why `whoami`'s answer `user` may not write to `repo_id`, or None. Decides only on what the answer states."""
    name = user.get("name")
    namespace = repo_id.split("/")[0] if "/" in repo_id else name
    access_token = user.get("auth", {}).get("accessToken", {})
    role = access_token.get("role")
    if role == "read":
        return f"the token of {name} is read-only"
    if role == "fineGrained":
        scoped = access_token.get("fineGrained", {}).get("scoped", [])
        if not any(
            entry.get("entity", {}).get("name") in (namespace, repo_id) and "repo.write" in entry.get("permissions", [])
            for entry in scoped
        ):
            return f"the fine-grained token of {name} has no write permission (repo.write) on {namespace}"
    if namespace != name:
        organization = next((org for org in user.get("orgs", []) if org.get("name") == namespace), None)
        if organization is None:
            return f"{name} is not a member of {namespace}"
        if organization.get("roleInOrg") == "read":
            return f"{name} has only the read role in {namespace}"
    return None


@dataclass
class UploadStatus:
    """Outcome of one background upload."""

    repo_id: str
    folder: str
    ok: bool = False
    attempts: int = 0
    error: str | None = None
    commit_url: str | None = None
    errors: list[str] = field(default_factory=list)


class HubUpload:
    """Handle on a background upload: `done()`, and `result(timeout)` -> `UploadStatus` (never raises the upload's
    error; a timeout returns the status so far with `error` set)."""

    def __init__(self, future: concurrent.futures.Future, status: UploadStatus):
        self._future = future
        self._status = status

    def done(self) -> bool:
        return self._future.done()

    def result(self, timeout: float | None = None) -> UploadStatus:
        try:
            return self._future.result(timeout)
        except concurrent.futures.TimeoutError:
            self._status.error = self._status.error or f"upload still running after {timeout} s"
            return self._status


def _upload_with_retries(
    api: HfApi,
    status: UploadStatus,
    *,
    private: bool,
    commit_message: str,
    max_attempts: int,
    initial_backoff: float,
    sleep: Callable[[float], None],
) -> UploadStatus:
    for attempt in range(1, max_attempts + 1):
        status.attempts = attempt
        try:
            api.create_repo(status.repo_id, repo_type="model", private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=status.repo_id,
                folder_path=status.folder,
                repo_type="model",
                commit_message=commit_message,
            )
        except Exception as error:  # any failure (network, auth, server) is reported, never raised
            message = f"{type(error).__name__}: {error}"
            status.errors.append(message)
            status.error = message
            if attempt == max_attempts:
                logger.error(
                    "Upload of %s to %s failed after %d attempts; the local export is kept. Last error: %s",
                    status.folder,
                    status.repo_id,
                    attempt,
                    message,
                )
                return status
            delay = initial_backoff * 2 ** (attempt - 1)
            logger.warning(
                "Upload of %s to %s failed (attempt %d/%d: %s); retrying in %.1f s.",
                status.folder,
                status.repo_id,
                attempt,
                max_attempts,
                message,
                delay,
            )
            sleep(delay)
        else:
            status.ok, status.error = True, None
            status.commit_url = str(getattr(commit, "commit_url", commit))
            logger.info("Uploaded %s to %s (%s).", status.folder, status.repo_id, status.commit_url)
            return status
    return status


def push_to_hub_in_background(
    folder: str | Path,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload ILA model",
    max_attempts: int = 5,
    initial_backoff: float = 2.0,
    api: HfApi | None = None,
    sleep: Callable[[float], None] | None = None,
) -> HubUpload:
    """
    Upload a finished export folder to the Hub from a worker thread: `create_repo(exist_ok=True)` then
    `upload_folder`, retried up to `max_attempts` times with delays `initial_backoff * 2 ** (attempt - 1)`.

    A folder that lacks what `pipeline` needs (`missing_servable_files`: config, weights, video processor) is
    refused with `FileNotFoundError` before anything is sent.

    Returns at once with a `HubUpload`; its `result()` gives an `UploadStatus` whose `ok`, `attempts` and `error`
    say what happened. Errors are logged, never raised. The upload runs in a daemon thread: a process that is done
    exits even while an upload hangs (wait with `result(timeout)` for as long as an upload may take).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Nothing to upload: {folder} is not a folder; export the model first.")
    missing = missing_servable_files(folder)
    if missing:  # e.g. a folder an interrupted export of an older version left behind
        raise FileNotFoundError(
            f"Not uploading {folder}: it lacks {', '.join(missing)}, so it cannot be served; export the model again "
            "(`export_model` writes complete folders only)."
        )
    status = UploadStatus(repo_id=repo_id, folder=str(folder))
    api = api or HfApi(token=token)
    future: concurrent.futures.Future = concurrent.futures.Future()

    def upload() -> None:
        # Not a ThreadPoolExecutor: the interpreter joins its threads at exit, so a hanging upload would keep a
        # finished training process alive for ever.
        future.set_running_or_notify_cancel()
        try:
            future.set_result(
                _upload_with_retries(
                    api,
                    status,
                    private=private,
                    commit_message=commit_message,
                    max_attempts=max_attempts,
                    initial_backoff=initial_backoff,
                    sleep=sleep or _sleep,
                )
            )
        except Exception as error:  # _upload_with_retries reports errors itself; this is a last resort
            future.set_exception(error)

    threading.Thread(target=upload, name="ila-hub-upload", daemon=True).start()
    return HubUpload(future, status)


__all__ = [
    "HubPushError",
    "HubUpload",
    "accuracy_results",
    "UploadStatus",
    "check_push_access",
    "export_model",
    "find_model_card_template",
    "markdown_table",
    "missing_servable_files",
    "model_card_context",
    "push_to_hub_in_background",
    "render_model_card",
]
