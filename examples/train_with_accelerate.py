"""Fine-tune ILA with accelerate: the `ila-hf train` command, as a script that `accelerate launch` can run.

One process:
    python examples/train_with_accelerate.py --clip-model openai/clip-vit-base-patch16 \
        --train-data data/train.txt --validation-data data/val.txt --label-names data/labels.csv \
        --num-frames 8 --mixed-precision bf16 --output-dir runs/ila-b16

Several GPUs (see docs/distributed.md; examples/accelerate/fsdp2.yaml shards the model), and continuing a stopped run:
    accelerate launch --config_file examples/accelerate/ddp.yaml --num_processes 8 \
        examples/train_with_accelerate.py ... --resume

Every option of `ila_hf.TrainingConfig` is a flag (`--help` lists them with the recipe's defaults).
"""

import sys

from ila_hf.cli import main as ila_hf_main


def main(argv: list[str] | None = None) -> int:
    return ila_hf_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
