"""`ila-hf` command line: each subcommand parses its arguments and calls one library function.

Only the chosen subcommand's parser is built, and each imports what it needs inside its handler, so that `ila-hf
--help` imports neither torch nor transformers. `main` turns the errors a user can fix into one line and a status.
"""

import argparse
import importlib
import logging
import math
import os
import shlex
import sys
from pathlib import Path

from .arguments import add_dataclass_arguments, dataclass_from_args


logger = logging.getLogger("ila_hf.cli")  # not __name__, which is "__main__" under `python -m ila_hf.cli`


def _add_demo_command(subparsers) -> None:
    from .demo import DemoConfig  # imports torch: this parser is built only when the command is `demo`

    parser = subparsers.add_parser(
        "demo",
        description="Write synthetic mp4s whose classes differ only in temporal order, train ILA and a frame-averaging "
        "baseline on one random tiny CLIP (CPU, a few minutes), print their held-out accuracy, runtime and peak memory, "
        "export ILA with its video processor, classify a held-out mp4 through pipeline('video-classification') and "
        "save a PNG of the predicted interactive points.",
    )
    add_dataclass_arguments(parser, DemoConfig)

    def run(args) -> int:
        from transformers.utils import logging as transformers_logging

        from .demo import format_report, run_demo

        transformers_logging.disable_progress_bar()  # the demo loads and saves small models often; its log says enough
        print(format_report(run_demo(dataclass_from_args(DemoConfig, args))))
        return 0

    parser.set_defaults(handler=run)


def _positive_int(text: str) -> int:
    if not (text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return int(text)


def _model_folder_or_hub_id(text: str) -> str:
    """
    argparse type of `--model`: a saved model folder or a Hub id. A path that is no folder is refused here: given to
    transformers, it is tried as a Hub id and reported as a failed download or an invalid repo id.
    """
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise argparse.ArgumentTypeError(f"folder {text} has no config.json; expected a saved model folder")
        return str(path)
    if path.exists():
        raise argparse.ArgumentTypeError(f"{text} is a file; expected a model folder or a Hub id")
    namespace, separator, _ = text.partition("/")
    try:
        validate_repo_id(text)
        is_hub_id = not (separator and Path(namespace).expanduser().is_dir())  # "runs/typo" where runs/ is here
    except HFValidationError:
        is_hub_id = False
    if not is_hub_id:
        raise argparse.ArgumentTypeError(f"folder {text} does not exist")
    return text


def _hub_unreachable(error: BaseException) -> bool:
    """Whether `error` comes from a Hub download that found neither a connection (or offline mode) nor a cached copy."""
    from huggingface_hub.errors import LocalEntryNotFoundError

    while error is not None:
        if isinstance(error, LocalEntryNotFoundError):
            return True
        error = error.__cause__
    return False


def _parse_views(text: str) -> tuple[int, int]:
    clips, _, crops = text.lower().partition("x")
    if not (clips.isdigit() and crops in ("1", "3") and int(clips) >= 1):
        raise argparse.ArgumentTypeError(f"expected CLIPSxCROPS with CROPS 1 or 3, e.g. 1x1 or 4x3; got {text!r}")
    return int(clips), int(crops)


def _parse_labels(text: str) -> list[str]:
    labels = [label.strip() for label in text.split(",") if label.strip()]
    if not labels or len(set(labels)) != len(labels):
        raise argparse.ArgumentTypeError(
            f"expected distinct comma-separated class names, e.g. 'surfing,kayaking'; got {text!r}"
        )
    return labels


def _positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return seconds


def _add_predict_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        description="Classify videos; bad files are reported on stderr (exit status 1) while the others are printed.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or URLs")
    parser.add_argument(
        "--model", required=True, type=_model_folder_or_hub_id,
        help="saved ILA folder or Hub id (with its video processor)",
    )
    parser.add_argument("--top-k", type=_positive_int, default=5, help="classes shown per video (default: 5)")
    parser.add_argument(
        "--views", type=_parse_views, default=(1, 1), metavar="CLIPSxCROPS",
        help="temporal clips x spatial crops per video, softmax averaged; 4x3 is the published protocol (default: 1x1)",
    )
    parser.add_argument(
        "--labels", type=_parse_labels, metavar="A,B,C",
        help="classify into these comma-separated class names instead of the model's own (open vocabulary: text head "
        "and the folder's text_model/); scores are over these names",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    parser.add_argument(
        "--timeline", action="store_true",
        help="classify windows sliding over each whole video (one decoding pass) and print the segments of equal top "
        "class; with --json, every window, then the segments",
    )
    parser.add_argument(
        "--window", type=_positive_seconds, default=2.0, help="--timeline window in seconds (default: 2)"
    )
    parser.add_argument(
        "--stride", type=_positive_seconds, default=1.0, help="--timeline seconds between window starts (default: 1)"
    )
    parser.add_argument(
        "--timeline-image", metavar="PNG", help="with --timeline and one VIDEO: save a picture of the timeline"
    )
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--trust-remote-code", action="store_true", help="load the model's own code from the Hub")

    def run(args) -> int:
        import json

        import torch
        from tqdm.auto import tqdm
        from transformers import AutoModelForVideoClassification, AutoVideoProcessor

        from .inference import classify_videos  # importing ila_hf arranged for these Auto classes to know ILA

        if args.timeline_image and not (args.timeline and len(args.videos) == 1):
            parser.error("--timeline-image takes a picture of one timeline: pass --timeline and a single VIDEO")
        try:
            model = AutoModelForVideoClassification.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
            processor = AutoVideoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        except OSError as error:
            if _hub_unreachable(error):
                raise OSError(
                    f"could not reach the Hugging Face Hub to download {args.model}, and it is not in the local cache; "
                    "give the folder of a saved model instead, or connect and try again"
                ) from error
            raise
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        model = model.to(device).eval()
        if args.labels:
            model.set_class_names(args.labels)
        logger.info("Loaded %s (%d classes) on %s", args.model, model.config.num_labels, device)
        if args.timeline:
            from .timeline import print_timelines

            return print_timelines(
                model, processor, args.videos, window=args.window, stride=args.stride, top_k=args.top_k,
                as_json=args.json, image_path=args.timeline_image,
            )
        num_clips, num_crops = args.views
        videos = tqdm(args.videos, desc="videos", unit="video", disable=len(args.videos) < 2, file=sys.stderr)
        failures = 0
        for prediction in classify_videos(model, processor, videos, args.top_k, num_clips, num_crops):
            if prediction.error is not None:
                failures += 1
                tqdm.write(f"ila-hf predict: {prediction.error}", file=sys.stderr)  # on a line of its own, not the bar's
                if args.json:
                    print(json.dumps(prediction.to_dict()), flush=True)
            elif args.json:
                print(json.dumps(prediction.to_dict()), flush=True)
            else:
                for rank, (label, score) in enumerate(zip(prediction.labels, prediction.scores), start=1):
                    print(f"{prediction.video}\t{rank}\t{score:.4f}\t{label}", flush=True)
        return 1 if failures else 0

    parser.set_defaults(handler=run)


def _add_train_command(subparsers) -> None:
    # The options mirror ila_hf.training.TrainingConfig and are parsed only when `train` runs, so that the other
    # subcommands do not import accelerate and datasets: this parser just collects everything after "train".
    parser = subparsers.add_parser("train", add_help=False, prefix_chars="\0")
    parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def run(args) -> int:
        from .training.config import TrainingConfig

        training_parser = argparse.ArgumentParser(
            prog="ila-hf train",
            description="Fine-tune ILA with the released recipe; run under `accelerate launch` for several devices.",
        )
        add_dataclass_arguments(training_parser, TrainingConfig)
        config = dataclass_from_args(TrainingConfig, training_parser.parse_args(args.arguments))
        from .training import train  # imports torch, accelerate and datasets: only once the arguments are valid
        from .training.export import numbers

        result = train(config)
        if result.stopped_early:
            print(f"Stopped after step {result.global_step}; continue with --resume --output-dir {result.output_dir}")
        else:
            if result.model_dir is not None:  # the frame-averaging baseline is not exported
                print(f"Model: {result.model_dir}")
            metrics = numbers(result.metrics)  # an evaluation that skipped videos also lists them
            print("Final metrics: " + ", ".join(f"{name} {value:.4g}" for name, value in metrics.items()))
        if result.hub_upload is not None and not result.hub_upload.ok:
            print(f"Upload to {result.hub_upload.repo_id} failed: {result.hub_upload.error}", file=sys.stderr)
            return 1
        return 0

    parser.set_defaults(handler=run)


def _add_convert_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        description="Convert a released ILA training-state .pth file into a Transformers folder, loading it safely.",
    )
    parser.add_argument(
        "checkpoint", help="the authors' released .pth file (a torch.save training snapshot, not a safetensors file)"
    )
    parser.add_argument("output_dir", help="folder to write the converted model, processor and model card to")
    parser.add_argument(
        "--variant", choices=("k400", "ssv2"), help="checked against the checkpoint (default: read off the checkpoint)"
    )
    parser.add_argument(
        "--num-frames", type=_positive_int,
        help="frames the checkpoint was trained with, checked (default: read off the checkpoint)",
    )
    parser.add_argument("--class-names", help="id,name CSV of the labels (default: the variant's released list)")
    parser.add_argument(
        "--clip-text", metavar="FOLDER_OR_HUB_ID",
        help="CLIP tokenizer that embeds the K400 class names: a local folder (needed offline) or a Hub id "
        "(default: openai/clip-vit-base-patch16, shared by every OpenAI CLIP; downloaded on first use)",
    )
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the converted folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")
    parser.add_argument(
        "--released-eval",
        action="store_true",
        help="evaluate like the authors' released K400 code: BatchNorm on each batch's statistics, so outputs depend "
        "on the batch (default: standard evaluation with the running statistics)",
    )

    def run(args) -> int:
        from .convert import convert_checkpoint

        result = convert_checkpoint(
            args.checkpoint,
            args.output_dir,
            variant=args.variant,
            num_frames=args.num_frames,
            class_names=args.class_names,
            clip_text=args.clip_text,
            push_to_hub=args.push_to_hub,
            private=args.private,
            released_eval=args.released_eval,
        )
        report = result.report
        print(f"Wrote {result.output_dir}: {len(report.mapped)} tensors mapped, {len(report.dropped)} dropped on purpose")
        if result.commit_url:
            print(f"Uploaded: {result.commit_url}")
        return 0

    parser.set_defaults(handler=run)


def _add_benchmark_command(subparsers) -> None:
    from .benchmark import BenchmarkOptions, benchmark_command  # imports torch: built only for `benchmark`

    parser = subparsers.add_parser(
        "benchmark",
        description="Multiply-adds, parameters, inference speed and memory, and training-step time and memory of "
        "ILA, CLIP frame averaging, X-CLIP, TimeSformer and VideoMAE, random weights at real sizes. The defaults are "
        "a quick CPU run; see benchmarks/RESULTS.md for a full one.",
    )
    add_dataclass_arguments(parser, BenchmarkOptions, exclude=("command",))
    parser.add_argument("--json", help="write the results as JSON to this path")
    parser.add_argument("--markdown", help="write the markdown report to this path")

    def run(args) -> int:
        command = shlex.join(["ila-hf", *sys.argv[1:]])
        return benchmark_command(dataclass_from_args(BenchmarkOptions, args, command=command), args.json, args.markdown)

    parser.set_defaults(handler=run)


def _add_export_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        description="Export a saved ILA classifier as an ONNX graph or a torch.export program taking pixel_values "
        "(dynamic batch) and returning logits, with its config and video processor settings beside it.",
    )
    parser.add_argument("model_dir", help="a save_pretrained folder of an ILA classifier")
    parser.add_argument("output_dir", help="folder to write the graph, config and processor settings to")
    parser.add_argument("--format", choices=("onnx", "exported-program"), default="onnx", help="default: onnx")
    parser.add_argument("--fuse", action="store_true", help="fold BatchNorm and projections first (same outputs)")

    def run(args) -> int:
        from .serving import export_for_serving

        path = export_for_serving(args.model_dir, args.output_dir, format=args.format, fuse=args.fuse)
        print(f"Wrote {path}")
        return 0

    parser.set_defaults(handler=run)


# name -> (the line `ila-hf --help` shows, the function adding the command's parser and handler)
COMMANDS = {
    "demo": ("Train ILA vs frame averaging on a synthetic temporal-order task.", _add_demo_command),
    "predict": ("Classify video files with an ILA model.", _add_predict_command),
    "train": ("Fine-tune ILA with accelerate (ila-hf train --help).", _add_train_command),
    "convert": ("Convert an authors' released .pth checkpoint.", _add_convert_command),
    "benchmark": ("Cost and speed of ILA and its peers.", _add_benchmark_command),
    "export": ("Export a saved model for serving (ONNX or torch.export).", _add_export_command),
}


def _add_global_options(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # On the main parser and again on each command's, so that they work before and after the command name; a
    # command's copies default to SUPPRESS so as not to overwrite what was given before the name.
    default = (lambda value: value) if defaults else (lambda value: argparse.SUPPRESS)
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument(
        "-v", "--verbose", dest="log_level", action="store_const", const=logging.DEBUG, default=default(logging.INFO),
        help="log debugging details, and the libraries' information (transformers, datasets, accelerate, Hub)",
    )
    verbosity.add_argument(
        "-q", "--quiet", dest="log_level", action="store_const", const=logging.WARNING, default=default(logging.INFO),
        help="log warnings and errors only",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default(False),
        help="show the traceback of an error (also: environment variable ILA_HF_DEBUG=1)",
    )


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `ila-hf` parser, with the full parser of `command` only (the others list their name and help line)."""
    parser = argparse.ArgumentParser(
        prog="ila-hf",
        description="ILA (Implicit Learnable Alignment) video classification with Hugging Face Transformers.",
    )
    _add_global_options(parser, defaults=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_line, add_command) in COMMANDS.items():
        if name != command:
            subparsers.add_parser(name, help=help_line)
            continue
        add_command(subparsers)
        command_parser = subparsers.choices[name]
        if command_parser.prefix_chars == "-":  # `train` collects everything after its name for its own parser
            _add_global_options(command_parser, defaults=False)
    return parser


_LIBRARY_VERBOSITY_VARIABLES = {
    "transformers": "TRANSFORMERS_VERBOSITY",
    "datasets": "DATASETS_VERBOSITY",
    "huggingface_hub": "HF_HUB_VERBOSITY",
}


def configure_logging(level: int) -> None:
    """
    Logs ila_hf at `level` and the libraries one step quieter (their warnings by default), on stderr in short lines.
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("ila_hf").setLevel(level)
    library_level = min(level + 10, logging.ERROR)
    logging.getLogger("accelerate").setLevel(library_level)
    # The Hugging Face libraries have a handler of their own (huggingface_hub's also passes its lines on to ours) and
    # read their level from these variables when imported, which the commands do after this point.
    logging.getLogger("huggingface_hub").propagate = False
    for library, variable in _LIBRARY_VERBOSITY_VARIABLES.items():
        os.environ[variable] = logging.getLevelName(library_level).lower()
        if library in sys.modules:
            importlib.import_module(f"{library}.utils.logging").set_verbosity(library_level)


def _is_user_error(error: Exception) -> bool:
    """
    Errors a user can act on: bad values and files (ValueError, OSError, which includes transformers' loading errors
    and the Hub's), and the exception types of ila_hf and huggingface_hub, which are raised only for those.
    """
    return isinstance(error, (ValueError, OSError)) or any(
        cls.__module__.partition(".")[0] in ("ila_hf", "huggingface_hub") for cls in type(error).__mro__
    )


def _one_line(error: BaseException) -> str:
    from huggingface_hub.errors import StrictDataclassClassValidationError

    # A strict config's validation error wraps the validator's own message in a two-line preamble.
    if isinstance(error, StrictDataclassClassValidationError) and error.__cause__ is not None:
        error = error.__cause__
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def _chosen_command(argv: list[str]) -> str | None:
    for argument in argv:  # the global options take no values: the first word that is no option names the command
        if argument in ("-h", "--help") or not argument.startswith("-"):
            return argument if argument in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    """Runs `ila-hf`; returns 0, 1 when some inputs failed, 2 for a user error, 70 for a bug, 130 on Ctrl-C."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _chosen_command(argv)
    args = build_parser(command).parse_args(argv)
    debug = args.debug or os.environ.get("ILA_HF_DEBUG", "0") not in ("", "0")
    configure_logging(args.log_level)
    prefix = f"ila-hf {args.command}"
    try:
        return args.handler(args) or 0
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        if _is_user_error(error):
            print(f"{prefix}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        print(
            f"{prefix}: internal error: {type(error).__name__}: {_one_line(error)}. This is a bug in ila_hf: please "
            "report it with the traceback that --debug (or ILA_HF_DEBUG=1) shows.",
            file=sys.stderr,
        )
        return 70  # EX_SOFTWARE (sysexits.h)


if __name__ == "__main__":
    sys.exit(main())
