"""Fine-tune ILA with accelerate: a thin command-line wrapper around `ila_hf.training.train`.

One process:
    python examples/train_with_accelerate.py --clip-model openai/clip-vit-base-patch16 \
        --train-data data/train.txt --validation-data data/val.txt --label-names data/labels.csv \
        --num-frames 8 --mixed-precision bf16 --output-dir runs/ila-b16

Several GPUs (see docs/distributed.md), and continuing a stopped run:
    accelerate launch --multi_gpu --num_processes 8 examples/train_with_accelerate.py ... --resume

Every option of `ila_hf.training.TrainingConfig` is a flag (`--help` lists them with the recipe's defaults); the
same command is available as `ila-hf train`.
"""

import argparse
import sys

from ila_hf.training import add_training_arguments, config_from_args, train


def main(argv: list[str] | None = None) -> int:
    parser = add_training_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    result = train(config_from_args(parser.parse_args(argv)))
    if result.stopped_early:
        print(f"Stopped at step {result.global_step}; continue with --resume.")
    else:
        print(f"Exported to {result.model_dir}: {result.metrics}")
    if result.hub_upload is not None and not result.hub_upload.ok:
        print(f"Upload failed: {result.hub_upload.error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
