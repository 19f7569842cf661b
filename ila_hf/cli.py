"""`ila-hf` command line: each subcommand parses its arguments and calls one library function."""

import argparse
import sys


def _add_demo_command(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="Train ILA vs frame averaging on a synthetic temporal-order task.")
    parser.set_defaults(handler=lambda args: parser.error("not available yet"))


def _add_predict_command(subparsers) -> None:
    parser = subparsers.add_parser("predict", help="Classify video files with an ILA model.")
    parser.set_defaults(handler=lambda args: parser.error("not available yet"))


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
    parser = subparsers.add_parser("convert", help="Convert an authors' released .pth checkpoint.")
    parser.set_defaults(handler=lambda args: parser.error("not available yet"))


def _add_benchmark_command(subparsers) -> None:
    parser = subparsers.add_parser("benchmark", help="Cost and speed of ILA and its peers.")
    parser.set_defaults(handler=lambda args: parser.error("not available yet"))


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
