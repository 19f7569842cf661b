"""Fine-tune ILA with the standard transformers `Trainer` (no subclass).

    python examples/finetune_with_trainer.py --clip-model openai/clip-vit-base-patch16 \
        --train-data data/train.txt --validation-data data/val.txt --label-names data/labels.csv \
        --num-frames 8 --epochs 30 --batch-size 8 --output-dir runs/ila-trainer

    # any `datasets` source: a Hub dataset (parquet or WebDataset shards) streamed, no files written
    python examples/finetune_with_trainer.py --clip-model openai/clip-vit-base-patch16 \
        --train-data someone/kinetics-400-parquet --split train --validation-split validation --streaming \
        --max-steps 20000 --output-dir runs/ila-trainer

What the recipe needs beyond a plain `Trainer` call, and where it lives here:
- the data: `ila_hf.training.build_datasets` (as `ila-hf train`) reads list files, class folders, `save_to_disk`
  folders and anything `load_dataset` reads (local videofolder / parquet / WebDataset shards, Hub ids), in the same
  two-column form; `--validation-split` alone validates on that split of `--train-data`;
- lazily decoded clips: `Dataset.with_transform(VideoClipTransform(...))` for training and
  `VideoProcessorTransform(video_processor)` for evaluation (the preprocessing saved with the model), or
  `IterableDataset.map` when streaming, so `remove_unused_columns=False` (the `video` column must reach them);
- Mixup/CutMix and label smoothing: `ila_hf.training.build_training_collator`, which mixes training items only, so
  the same collator serves evaluation;
- the recipe's parameter groups: `ila_hf.training.build_optimizer`, passed as `optimizers=(optimizer, None)`; the
  Trainer adds its cosine schedule with warm-up on top of every group's learning rate;
- align decay and per-epoch clip sampling: `EpochCallback.on_epoch_begin`;
- the alignment loss in the training logs: `LossPartsCallback` (a forward hook plus `on_log`); in evaluation the
  model's `alignment_loss` output reaches `compute_metrics`, which reports it next to top-1 / top-5;
- a servable model: the video processor goes to the Trainer as `processing_class`, so every `save_model`, checkpoint
  and `trainer.push_to_hub` holds it next to the weights, config and code; at the end `ila_hf.hub.export_model` writes
  `--output-dir` as a complete folder (weights, config with the class names, video processor, the code that
  `trust_remote_code` loads, and a model card with the run's numbers), which `pipeline("video-classification")`,
  `AutoVideoProcessor` and `ila-hf predict --model OUTPUT_DIR` load. (`trainer.push_to_hub` would replace that model
  card with the Trainer's generic one; `ila_hf.hub.push_to_hub_in_background(OUTPUT_DIR, repo_id)` keeps it.)

For the accelerate loop with exact resume, multi-view evaluation and Hub export, see train_with_accelerate.py.
"""

import argparse
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from datasets import IterableDataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from ila_hf import ILAForVideoClassification, ILAVideoProcessor
from ila_hf.data import VideoClipTransform, VideoProcessorTransform, num_examples
from ila_hf.hub import export_model, model_card_context
from ila_hf.training import (
    TrainingConfig,
    build_datasets,
    build_optimizer,
    build_train_clip_transform,
    build_training_collator,
    jitter_delta,
    top_k_accuracy,
)


# Model outputs left out of evaluation predictions: big per-sample tensors we do not score.
IGNORE_KEYS_FOR_EVAL = ["classification_loss", "video_embeds", "frame_embeds", "interactive_points"]


class EpochCallback(TrainerCallback):
    """At the start of every epoch: the align-decay jitter on the model, and the epoch of the training clips."""

    def __init__(self, clip_transform: VideoClipTransform, initial_delta: float = 0.2, decay_start_epoch: int = 30):
        self.clip_transform = clip_transform
        self.initial_delta = initial_delta
        self.decay_start_epoch = decay_start_epoch

    def on_epoch_begin(self, args, state, control, model=None, **kwargs):
        epoch = round(state.epoch or 0)  # epochs completed so far
        model.set_jitter_delta(jitter_delta(epoch, self.initial_delta, self.decay_start_epoch))
        self.clip_transform.set_epoch(epoch)


class LossPartsCallback(TrainerCallback):
    """Adds the mean classification and alignment losses of the training batches since the last log to the logs."""

    def __init__(self):
        self.sums = {"classification_loss": 0.0, "alignment_loss": 0.0}
        self.count = 0
        self.hook = None

    def _record(self, module, inputs, outputs):
        if module.training and outputs.classification_loss is not None:
            self.sums["classification_loss"] += outputs.classification_loss.item()
            self.sums["alignment_loss"] += outputs.alignment_loss.item()
            self.count += 1

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.hook = model.register_forward_hook(self._record)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.count and logs is not None and "loss" in logs:
            parts = {name: round(total / self.count, 6) for name, total in self.sums.items()}
            logs.update(parts)
            state.log_history[-1].update(parts)  # the Trainer stored this log before calling us
            self.sums = dict.fromkeys(self.sums, 0.0)
            self.count = 0

    def on_train_end(self, args, state, control, **kwargs):
        if self.hook is not None:
            self.hook.remove()


def compute_metrics(eval_prediction) -> dict[str, float]:
    """Top-1 / top-5 accuracy, the number of videos scored, and the mean alignment loss of the evaluation batches."""
    predictions = eval_prediction.predictions
    logits, alignment_losses = predictions if isinstance(predictions, tuple) else (predictions, None)
    metrics = top_k_accuracy(torch.as_tensor(logits), torch.as_tensor(eval_prediction.label_ids))
    metrics["num_samples"] = len(eval_prediction.label_ids)
    if alignment_losses is not None:
        metrics["alignment_loss"] = float(np.mean(alignment_losses))
    return metrics


def with_clips(dataset, clips: VideoClipTransform | VideoProcessorTransform):
    """Decode clips lazily: `with_transform` on a map-style dataset, a batched `map` on a streamed one."""
    if isinstance(dataset, IterableDataset):
        return dataset.map(clips, batched=True, batch_size=16, remove_columns=["video", "label"])
    return dataset.with_transform(clips)


def streaming_max_steps(dataset, args: argparse.Namespace) -> int:
    """The Trainer needs a step count for a stream: from the examples its info states, else --max-steps."""
    examples = num_examples(dataset)
    if examples is None:
        raise SystemExit(f"{args.train_data} does not state its number of examples; give --max-steps with --streaming.")
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    steps_per_epoch = math.ceil(examples / (args.batch_size * args.gradient_accumulation_steps * world_size))
    return math.ceil(steps_per_epoch * args.epochs)


def export_servable_model(
    trainer: Trainer,
    video_processor: ILAVideoProcessor,
    args: argparse.Namespace,
    num_train_videos: int | None,
    eval_metrics: dict[str, float],
) -> None:
    """Write `args.output_dir` as a complete `from_pretrained` folder with `ila_hf.hub.export_model`: weights, config,
    video processor, remote code and a model card with the run's data, settings and validation metrics."""
    state_dict = trainer.accelerator.get_state_dict(trainer.model)  # every process: gathers FSDP / DeepSpeed shards
    if not trainer.is_world_process_zero():
        return
    model = trainer.accelerator.unwrap_model(trainer.model)
    training_args = trainer.args
    card = model_card_context(
        model,
        model_id=str(Path(args.output_dir).resolve()),
        base_model=args.clip_model,
        train_data=args.train_data,
        num_train_videos=num_train_videos if num_train_videos is not None else "unknown",
        validation_data=args.validation_data or "none",
        num_validation_videos=eval_metrics.get("eval_num_samples", 0),
        hyperparameters={
            "trainer": "transformers Trainer (examples/finetune_with_trainer.py)",
            "frames": args.num_frames,
            "epochs": args.epochs if args.max_steps <= 0 else f"{args.max_steps} steps",
            "batch size per device": args.batch_size,
            "gradient accumulation": args.gradient_accumulation_steps,
            "total batch size": args.batch_size * args.gradient_accumulation_steps * training_args.world_size,
            "schedule": f"cosine after {args.warmup_steps} warm-up steps",
            "mixed precision": args.mixed_precision,
            "seed": args.seed,
        },
        metrics={
            f"validation {name}": eval_metrics[f"eval_{name}"]
            for name in ("top1", "top5", "loss", "alignment_loss")
            if f"eval_{name}" in eval_metrics
        },
        compute={
            "device": f"{training_args.world_size} x {training_args.device.type}",
            "optimizer steps": trainer.state.global_step,
            "epochs": round(trainer.state.epoch or 0, 2),
        },
    )
    export_model(model, args.output_dir, video_processor=video_processor, card_context=card, state_dict=state_dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip-model", required=True, help="CLIP checkpoint (folder or Hub id)")
    parser.add_argument(
        "--train-data",
        required=True,
        help="list file (`path label_id`), class folders, a save_to_disk folder, a folder or file load_dataset reads "
        "(videofolder, parquet, WebDataset tar), or a Hub dataset id",
    )
    parser.add_argument("--validation-data", help="the same kinds of source as --train-data")
    parser.add_argument("--label-names", help="`id,name` CSV (required with list files and integer label columns)")
    parser.add_argument(
        "--video-column", help="default: the Video feature, or a column named video/path/video_path/file"
    )
    parser.add_argument("--label-column", help="default: the ClassLabel feature, or a column named label/labels/cls")
    parser.add_argument("--dataset-config", help="config name of a Hub dataset")
    parser.add_argument("--split", help="training split (needed when the source has several)")
    parser.add_argument("--validation-split", help="validation split (default: the only one)")
    parser.add_argument("--streaming", action="store_true", help="stream the data instead of materialising it")
    parser.add_argument("--output-dir", default="ila-trainer-output")
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--head", choices=("linear", "text"), default="linear")
    parser.add_argument("--epochs", type=float, default=30)
    parser.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    parser.add_argument("--warmup-steps", type=float, default=0.1, help="steps, or a fraction of all steps if < 1")
    parser.add_argument("--batch-size", type=int, default=8, help="per device")
    parser.add_argument("--gradient-accumulation-steps", type=int, default=1)
    parser.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--logging-steps", type=int, default=10)
    parser.add_argument("--save-strategy", choices=("no", "epoch", "steps"), default="epoch")
    parser.add_argument("--report-to", default="none", help="e.g. tensorboard, wandb")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Fine-tune and evaluate; returns {"train": train metrics, "eval": evaluation metrics, "log_history": [...]}."""
    args = parse_args(argv)
    recipe = TrainingConfig(
        train_data=args.train_data,
        validation_data=args.validation_data,
        label_names=args.label_names,
        video_column=args.video_column,
        label_column=args.label_column,
        dataset_config=args.dataset_config,
        split=args.split,
        validation_split=args.validation_split,
        streaming=args.streaming,
        clip_model=args.clip_model,
        num_frames=args.num_frames,
        head=args.head,
    )
    train_dataset, eval_dataset = build_datasets(recipe)
    label_names = train_dataset.features["label"].names
    num_train_videos = num_examples(train_dataset)
    max_steps = streaming_max_steps(train_dataset, args) if args.streaming and args.max_steps <= 0 else args.max_steps
    model = ILAForVideoClassification.from_clip(
        args.clip_model, num_frames=args.num_frames, head=args.head, id2label=dict(enumerate(label_names))
    )
    if args.head == "text":
        model.set_class_names(label_names, args.clip_model)
    image_size = model.config.image_size
    video_processor = ILAVideoProcessor.for_config(model.config)  # the evaluation preprocessing, saved with the model

    train_clips = VideoClipTransform(
        build_train_clip_transform(recipe, image_size), args.num_frames, training=True, seed=args.seed
    )
    train_dataset = with_clips(train_dataset, train_clips)
    if eval_dataset is not None:
        eval_dataset = with_clips(eval_dataset, VideoProcessorTransform(video_processor))
    collator = build_training_collator(recipe, len(label_names))

    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_train_epochs=args.epochs,
        max_steps=max_steps,
        lr_scheduler_type="cosine",
        warmup_steps=args.warmup_steps,
        eval_strategy="epoch" if eval_dataset is not None else "no",
        save_strategy=args.save_strategy,
        logging_steps=args.logging_steps,
        bf16=args.mixed_precision == "bf16",
        fp16=args.mixed_precision == "fp16",
        activation_checkpointing=args.activation_checkpointing,
        remove_unused_columns=False,  # the collator needs the clips decoded from the `video` column
        dataloader_num_workers=args.num_workers,
        dataloader_pin_memory=torch.cuda.is_available(),
        report_to=args.report_to,
        seed=args.seed,
    )
    trainer = Trainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=video_processor,  # saved by save_model, in checkpoints and by push_to_hub
        optimizers=(build_optimizer(model, recipe), None),
        compute_metrics=compute_metrics,
        callbacks=[
            EpochCallback(train_clips, recipe.jitter_delta, recipe.align_decay_start_epoch),
            LossPartsCallback(),
        ],
    )
    train_metrics = trainer.train(ignore_keys_for_eval=IGNORE_KEYS_FOR_EVAL).metrics
    eval_metrics = trainer.evaluate(ignore_keys=IGNORE_KEYS_FOR_EVAL) if eval_dataset is not None else {}
    export_servable_model(trainer, video_processor, args, num_train_videos, eval_metrics)
    return {"train": train_metrics, "eval": eval_metrics, "log_history": trainer.state.log_history}


if __name__ == "__main__":
    results = main()
    print({key: value for key, value in results.items() if key != "log_history"})
    sys.exit(0)
