"""`ila-hf` command line: each subcommand parses its arguments and calls one library function."""

import argparse
import math
import shlex
import sys


def _add_demo_command(subparsers) -> None:
    from .demo import MOTIONS, DemoConfig  # light: torch and transformers are loaded by the package already

    defaults = DemoConfig()
    parser = subparsers.add_parser(
        "demo",
        help="Train ILA vs frame averaging on a synthetic temporal-order task.",
        description="Write synthetic mp4s whose classes differ only in temporal order, train ILA and a frame-averaging "
        "baseline on one random tiny CLIP (CPU, a few minutes), print their held-out accuracy, runtime and peak memory, "
        "export ILA with its video processor, classify a held-out mp4 through pipeline('video-classification') and "
        "save a PNG of the predicted interactive points.",
    )
    add = parser.add_argument
    add("--output-dir", default=defaults.output_dir, help="videos, models and the PNG go here (default: %(default)s)")
    add("--seed", type=int, default=defaults.seed, help="data, initialisation and training seed (default: %(default)s)")
    add(
        "--motions", nargs="+", choices=MOTIONS, default=list(defaults.motions), metavar="MOTION",
        help=f"the classes, from: {', '.join(MOTIONS)} (default: %(default)s)",
    )
    add("--train-videos-per-class", type=int, default=defaults.train_videos_per_class, help="(default: %(default)s)")
    add("--test-videos-per-class", type=int, default=defaults.test_videos_per_class, help="(default: %(default)s)")
    add("--frames", type=int, default=defaults.num_frames, help="frames per clip (default: %(default)s)")
    add("--image-size", type=int, default=defaults.image_size, help="model input side (default: %(default)s)")
    add("--patch-size", type=int, default=defaults.patch_size, help="image-size / patch-size >= 4 (default: %(default)s)")
    add("--width", type=int, default=defaults.hidden_size, help="CLIP width (default: %(default)s)")
    add("--layers", type=int, default=defaults.num_layers, help="CLIP layers (default: %(default)s)")
    add("--epochs", type=int, default=defaults.epochs, help="training epochs of each model (default: %(default)s)")
    add("--batch-size", type=int, default=defaults.batch_size, help="clips per step (default: %(default)s)")
    add(
        "--train-backbone", action="store_true",
        help="train the random CLIP weights too, in both models (default: frozen, which learned faster here)",
    )
    add(
        "--threads", type=int, default=defaults.num_threads,
        help="torch CPU threads (default: %(default)s: the ops are too small to gain from more, and lose a lot on a "
        "busy machine)",
    )

    def run(args) -> int:
        from transformers.utils import logging as transformers_logging

        from .demo import format_report, run_demo

        transformers_logging.disable_progress_bar()  # the demo loads and saves small models often; its log says enough
        config = DemoConfig(
            output_dir=args.output_dir,
            seed=args.seed,
            motions=tuple(args.motions),
            train_videos_per_class=args.train_videos_per_class,
            test_videos_per_class=args.test_videos_per_class,
            num_frames=args.frames,
            image_size=args.image_size,
            patch_size=args.patch_size,
            hidden_size=args.width,
            num_layers=args.layers,
            epochs=args.epochs,
            batch_size=args.batch_size,
            freeze_backbone=not args.train_backbone,
            num_threads=args.threads,
        )
        print(format_report(run_demo(config)))
        return 0

    parser.set_defaults(handler=run)


def _parse_views(text: str) -> tuple[int, int]:
    clips, _, crops = text.lower().partition("x")
    if not (clips.isdigit() and crops in ("1", "3") and int(clips) >= 1):
        raise argparse.ArgumentTypeError(f"expected CLIPSxCROPS with CROPS 1 or 3, e.g. 1x1 or 4x3; got {text!r}")
    return int(clips), int(crops)


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
        help="Classify video files with an ILA model.",
        description="Classify videos; bad files are reported on stderr (exit status 1) while the others are printed.",
    )
    parser.add_argument("videos", nargs="+", metavar="VIDEO", help="video files or URLs")
    parser.add_argument("--model", required=True, help="saved ILA folder or Hub id (with its video processor)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per video (default: 5)")
    parser.add_argument(
        "--views", type=_parse_views, default=(1, 1), metavar="CLIPSxCROPS",
        help="temporal clips x spatial crops per video, softmax averaged; 4x3 is the published protocol (default: 1x1)",
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

        from .inference import classify_videos  # ila_hf is imported by now, so the Auto classes know ILA

        if args.timeline_image and not (args.timeline and len(args.videos) == 1):
            parser.error("--timeline-image takes a picture of one timeline: pass --timeline and a single VIDEO")
        model = AutoModelForVideoClassification.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
        model = model.to(args.device or ("cuda" if torch.cuda.is_available() else "cpu")).eval()
        processor = AutoVideoProcessor.from_pretrained(args.model, trust_remote_code=args.trust_remote_code)
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
                print(f"ila-hf predict: {prediction.error}", file=sys.stderr)
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
    parser = subparsers.add_parser(
        "train", help="Fine-tune ILA with accelerate (ila-hf train --help).", add_help=False, prefix_chars="\0"
    )
    parser.add_argument("arguments", nargs=argparse.REMAINDER)

    def run(args) -> int:
        from .training import add_training_arguments, config_from_args, train

        training_parser = argparse.ArgumentParser(
            prog="ila-hf train",
            description="Fine-tune ILA with the released recipe; run under `accelerate launch` for several devices.",
        )
        result = train(config_from_args(add_training_arguments(training_parser).parse_args(args.arguments)))
        if result.stopped_early:
            print(f"Stopped after step {result.global_step}; continue with --resume --output-dir {result.output_dir}")
        else:
            print(f"Model: {result.model_dir}")
            print("Final metrics: " + ", ".join(f"{name} {value:.4g}" for name, value in result.metrics.items()))
        if result.hub_upload is not None and not result.hub_upload.ok:
            print(f"Upload to {result.hub_upload.repo_id} failed: {result.hub_upload.error}", file=sys.stderr)
            return 1
        return 0

    parser.set_defaults(handler=run)


def _add_convert_command(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="Convert an authors' released .pth checkpoint.",
        description="Convert a released ILA training-state .pth file into a Transformers folder, loading it safely.",
    )
    parser.add_argument("checkpoint", help="the released .pth file")
    parser.add_argument("output_dir", help="folder to write the converted model, processor and model card to")
    parser.add_argument("--variant", choices=("k400", "ssv2"), help="checked against the checkpoint")
    parser.add_argument("--num-frames", type=int, help="frames the checkpoint was trained with (checked)")
    parser.add_argument("--class-names", help="id,name CSV of the labels (default: the variant's released list)")
    parser.add_argument("--clip-text", help="CLIP tokenizer folder or Hub id for the K400 class names")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the converted folder to this Hub repo")
    parser.add_argument("--private", action="store_true", help="create the Hub repo private")

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
        )
        report = result.report
        print(f"Wrote {result.output_dir}: {len(report.mapped)} tensors mapped, {len(report.dropped)} dropped on purpose")
        if result.commit_url:
            print(f"Uploaded: {result.commit_url}")
        return 0

    parser.set_defaults(handler=run)


def _add_benchmark_command(subparsers) -> None:
    from .benchmark import add_benchmark_arguments, benchmark_command

    parser = subparsers.add_parser(
        "benchmark",
        help="Cost and speed of ILA and its peers.",
        description="Multiply-adds, parameters, inference speed and memory, and training-step time and memory of "
        "ILA, CLIP frame averaging, X-CLIP, TimeSformer and VideoMAE, random weights at real sizes. The defaults are "
        "a quick CPU run; see benchmarks/RESULTS.md for a full one.",
    )
    add_benchmark_arguments(parser)
    parser.set_defaults(handler=lambda args: benchmark_command(args, command=shlex.join(["ila-hf", *sys.argv[1:]])))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ila-hf", description=__doc__)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in (
        _add_demo_command,
        _add_predict_command,
        _add_train_command,
        _add_convert_command,
        _add_benchmark_command,
    ):
        add_command(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args) or 0


if __name__ == "__main__":
    sys.exit(main())
