"""Benchmark ILA against its peers: the same as `ila-hf benchmark` (see `--help`; results in RESULTS.md)."""

import sys

from ila_hf.cli import main


if __name__ == "__main__":
    sys.exit(main(["benchmark", *sys.argv[1:]]))
