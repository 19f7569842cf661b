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
    parser = subparsers.add_parser("train", help="Fine-tune ILA with accelerate.")
    parser.set_defaults(handler=lambda args: parser.error("not available yet"))


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
