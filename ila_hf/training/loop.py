"""Fine-tune ILA with Hugging Face accelerate, following the released recipe.

Read `train` top to bottom: set up (`_set_up`: the data, the model, the optimizer with one learning rate per parameter
group, the cosine schedule, all prepared with accelerate); optionally resume from the latest checkpoint; then per epoch
set the alignment jitter ("align decay") and train with gradient accumulation (`_train_epoch`, `_train_micro_batch`),
then validate and checkpoint (`_end_epoch`); finally evaluate with the configured views, export and optionally push to
the Hub. Every evaluation's clips come from the video processor exported with the model. The same loop trains the
frame-averaging baseline (`architecture="frame_averaging"`), which `ila-hf demo` compares ILA with.

Runs on one CPU or GPU as a plain `python` program and on many with `accelerate launch` (see docs/distributed.md).
A run that is stopped and resumed with `resume=True` ends with exactly the weights of an uninterrupted run: the
data order, the clips, the mixes and every random number generator are restored from the checkpoint.

Faults: checkpoints are written atomically (a run killed at any moment, even mid-save, resumes from a complete one);
undecodable videos are skipped, counted and logged, up to `max_bad_video_fraction` of a split; an optimizer step whose
loss is NaN or infinite is skipped (the same on every process) and `max_consecutive_nonfinite_steps` of them in a row
stop the run.
"""

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import DistributedType, ProjectConfiguration, gather_object, set_seed
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..baselines import FrameAveragingClassifier
from ..data import (
    MixupCutmix,
    VideoClassificationCollator,
    VideoClipTransform,
    VideoProcessorTransform,
    build_dataset,
)
from ..inference import view_probabilities
from ..modeling_ila import ILAForVideoClassification
from ..transforms import EvalClipTransform, TrainClipTransform
from ..video_processing_ila import ILAVideoProcessor
from .checkpoints import TrainingProgress, load_best_weights, resume_from_latest, save_best_weights, save_checkpoint
from .config import TrainingConfig, TrainingResult
from .export import export_run, numbers
from .faults import (
    StepVerdict,
    StepWindow,
    fault_report,
    micro_batch_everywhere,
    record_step_faults,
    record_undecodable,
)
from .recipe import build_optimizer, build_scheduler, jitter_delta


# ------------------------------------------------------------------------------------------------------ the loop
def train(config: TrainingConfig) -> TrainingResult:
    """Fine-tune ILA as configured; see the module docstring. Returns a `TrainingResult`."""
    started = time.time()
    run = _set_up(config)  # accelerator, data, model, optimizer, schedule, prepared loaders
    resume_from_latest(run.accelerator, run.checkpoints_dir, config.resume, run.progress)
    if config.log_with:
        run.accelerator.init_trackers(config.project_name, config=_tracker_config(config))

    progress_bar = tqdm(
        total=run.total_steps,
        initial=run.progress.global_step,
        desc="train",
        disable=not run.accelerator.is_local_main_process,
    )
    stopped_early = False
    while run.progress.epoch < config.epochs and not stopped_early:
        stopped_early = _train_epoch(run, config, progress_bar)
        if not stopped_early:
            _end_epoch(run, config)
    progress_bar.close()
    run.accelerator.wait_for_everyone()

    final_metrics, model_dir, upload = {}, None, None
    if not stopped_early:  # the best epoch's weights (if validated) or the last ones; evaluated, exported, pushed
        final_metrics = _final_evaluation(run, config)
        num_videos = {
            "train": len(run.train_dataset),
            "validation": 0 if run.validation_dataset is None else len(run.validation_dataset),
        }
        model_dir, upload = export_run(
            run.accelerator,
            run.model,
            run.video_processor,
            config,
            run.progress,
            final_metrics,
            num_videos,
            seconds=time.time() - started,
        )
    _finish_trackers(run.accelerator)
    return TrainingResult(
        metrics=final_metrics,
        output_dir=str(Path(config.output_dir)),
        model_dir=None if model_dir is None else str(model_dir),
        global_step=run.progress.global_step,
        epoch=run.progress.epoch,
        stopped_early=stopped_early,
        history=list(run.progress.history),
        hub_upload=upload.result(timeout=config.hub_upload_timeout) if upload is not None else None,
        **fault_report(run.progress),
    )


@dataclass
class _Run:
    """What the loop works on, set up once by `_set_up` (prepared by accelerate where it applies)."""

    accelerator: Accelerator
    model: torch.nn.Module
    video_processor: ILAVideoProcessor  # exported with the model; makes every evaluation's clips
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_dataset: Any
    train_transform: VideoClipTransform
    train_loader: DataLoader
    validation_dataset: Any
    validation_loader: DataLoader | None
    total_steps: int
    checkpoints_dir: Path
    progress: TrainingProgress
    window: StepWindow
    losses: "_RunningLosses"


def _set_up(config: TrainingConfig) -> _Run:
    accelerator = Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.log_with,
        project_config=ProjectConfiguration(project_dir=config.output_dir),  # checkpoints: see `save_checkpoint`
        # Every process draws the same shuffled order for an epoch from (seed, epoch): resumable and in step.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )
    set_seed(config.seed)
    # The best weights are reloaded with torch's distributed state-dict API, which shards them again under FSDP2;
    # FSDP1 and DeepSpeed (whose ZeRO-3 shards the weights and whose ZeRO-1/2 keep master copies) are not tested.
    if config.export == "best" and (
        accelerator.distributed_type == DistributedType.DEEPSPEED
        or (accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2)
    ):
        raise ValueError(
            "export='best' reloads the best epoch's full weights into the model, which is not supported under "
            f"{accelerator.distributed_type} here; use FSDP2 (fsdp_version: 2) or export='last' (--export last)."
        )

    # Data: lazily decoded clips; training randomness is a function of (seed, epoch, video).
    train_dataset = build_dataset(config.train_data, label_names=config.label_names, video_root=config.video_root)
    label_names = train_dataset.features["label"].names
    validation_dataset = None
    if config.validation_data:
        validation_dataset = build_dataset(
            config.validation_data, label_names=label_names, video_root=config.video_root
        )
    model = build_model(config, label_names)
    # Exported with the model; makes the evaluation clips. The baseline takes any number of frames: the run's.
    baseline_frames = config.num_frames if config.architecture == "frame_averaging" else None
    video_processor = ILAVideoProcessor.for_config(model.config, num_frames=baseline_frames)
    train_transform = VideoClipTransform(
        build_train_clip_transform(config, model.config.image_size),
        config.num_frames,
        training=True,
        seed=config.seed,
        skip_undecodable=True,
    )
    train_loader = _training_loader(config, train_dataset.with_transform(train_transform), len(label_names))
    validation_loader = None
    if validation_dataset is not None:  # one view per video, made by the exported video processor itself
        validation_loader = _evaluation_loader(config, validation_dataset, video_processor, num_clips=1, num_crops=1)

    optimizer = build_optimizer(model, config)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if validation_loader is not None:
        validation_loader = accelerator.prepare(validation_loader)
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    total_steps = steps_per_epoch * config.epochs
    # Not passed to `prepare`: accelerate would step it once per process per step. It steps once per optimizer step.
    scheduler = build_scheduler(
        optimizer, round(config.warmup_epochs * steps_per_epoch), total_steps, config.min_lr_ratio
    )
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(scheduler, progress)
    return _Run(
        accelerator=accelerator,
        model=model,
        video_processor=video_processor,
        optimizer=optimizer,
        scheduler=scheduler,
        train_dataset=train_dataset,
        train_transform=train_transform,
        train_loader=train_loader,
        validation_dataset=validation_dataset,
        validation_loader=validation_loader,
        total_steps=total_steps,
        checkpoints_dir=Path(config.output_dir) / "checkpoints",
        progress=progress,
        window=StepWindow(model),
        losses=_RunningLosses(),
    )


def _training_loader(config: TrainingConfig, dataset, num_labels: int) -> DataLoader:
    mixup = None
    if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
        mixup = MixupCutmix(
            num_labels,
            mixup_alpha=config.mixup_alpha,
            cutmix_alpha=config.cutmix_alpha,
            switch_prob=config.mixup_switch_prob,
            label_smoothing=config.label_smoothing,
        )
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=VideoClassificationCollator(mixup, config.label_smoothing, num_labels),
        num_workers=config.num_workers,
        # The loader's own seed draw comes from this generator, not the global RNG that dropout uses.
        generator=torch.Generator().manual_seed(config.seed),
        drop_last=False,
    )


def _evaluation_loader(
    config: TrainingConfig, dataset, video_processor: ILAVideoProcessor, num_clips: int, num_crops: int
) -> DataLoader:
    """Evaluation clips made by `video_processor`, with `num_clips` x `num_crops` views per video."""
    views = {"num_clips": num_clips, "num_crops": num_crops}
    transform = VideoProcessorTransform(video_processor, skip_undecodable=True, **views)
    return DataLoader(
        dataset.with_transform(transform),
        batch_size=config.eval_batch_size or config.batch_size,
        collate_fn=VideoClassificationCollator(),
        num_workers=config.num_workers,
    )


def _train_epoch(run: _Run, config: TrainingConfig, progress_bar) -> bool:
    """Train on the rest of the current epoch (all of it unless resuming inside it). Returns whether the run stopped
    early (`stop_after_steps`)."""
    accelerator, progress = run.accelerator, run.progress
    epoch = progress.epoch
    delta = jitter_delta(epoch, config.jitter_delta, config.align_decay_start_epoch)
    if config.architecture == "ila":
        accelerator.unwrap_model(run.model).set_jitter_delta(delta)
    run.train_transform.set_epoch(epoch)
    run.train_loader.set_epoch(epoch)
    batches = run.train_loader
    if progress.batches_in_epoch:  # resuming inside an epoch: the same order, minus what was done
        batches = accelerator.skip_first_batches(run.train_loader, progress.batches_in_epoch)

    run.model.train()
    for batch in batches:
        verdict = _train_micro_batch(run, config, batch, epoch)
        progress.batches_in_epoch += 1
        if verdict is not None and _finish_step(run, config, verdict, progress_bar, delta):
            return True
    return False


def _finish_step(run: _Run, config: TrainingConfig, verdict: StepVerdict, progress_bar, delta: float) -> bool:
    """Bookkeeping of an optimizer step just taken, or skipped on every process alike: under FSDP2 share the BatchNorm
    statistics, count the step and its faults, step the schedule, log, checkpoint when due. Returns whether the run stops here (`stop_after_steps`)."""
    accelerator, progress = run.accelerator, run.progress
    if accelerator.is_fsdp2:
        _share_batch_norm_statistics(run.model)
    learning_rates = {f"lr/{group['name']}": group["lr"] for group in run.optimizer.param_groups}
    progress.global_step += 1
    progress_bar.update(1)
    record_step_faults(accelerator, progress, verdict, config, len(run.train_dataset), run.checkpoints_dir)
    if verdict.update:
        progress.consecutive_nonfinite_steps = 0
        if not accelerator.optimizer_step_was_skipped:  # fp16 overflow: the step did not happen
            run.scheduler.step()
    if progress.global_step % config.log_every_steps == 0 or progress.global_step == run.total_steps:
        logs = {**run.losses.averages(), **learning_rates}
        logs.update(
            {
                "train/epoch": progress.epoch,
                "train/jitter_delta": delta,
                "train/nonfinite_loss_steps": len(progress.nonfinite_loss_steps),
                "train/undecodable_videos": len(progress.undecodable_in_epoch),
            }
        )
        progress_bar.set_postfix(loss=f"{logs['train/loss']:.4f}")
        if config.log_with:
            accelerator.log(logs, step=progress.global_step)
    stopped_early = bool(config.stop_after_steps) and progress.global_step >= config.stop_after_steps
    every = config.checkpoint_every_steps
    if stopped_early or (every and progress.global_step % every == 0):  # a planned stop saves too: resume from here
        save_checkpoint(accelerator, run.checkpoints_dir, config.checkpoints_total_limit)
    return stopped_early


def _share_batch_norm_statistics(model: torch.nn.Module) -> None:
    """
    Every process takes the main process's BatchNorm running statistics (the interaction blocks'), as DDP's
    `broadcast_buffers` does before each forward. FSDP2 shards parameters only: each process's buffers are its own and
    are updated from its own batches, so without this the processes would evaluate with different statistics, and a
    checkpoint (one copy of each buffer) could not restore every process's state.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            for buffer in module.buffers():
                torch.distributed.broadcast(buffer, src=0)


def _train_micro_batch(run: _Run, config: TrainingConfig, batch: dict, epoch: int) -> StepVerdict | None:
    """Forward and backward one micro-batch; at the end of an accumulation window, agree with the other processes on
    the step and take it (or skip it). Returns the step's `StepVerdict`, or None inside a window."""
    accelerator, window, optimizer = run.accelerator, run.window, run.optimizer
    window.undecodable.update(batch.pop("skipped_videos", {}))
    # Every video of this micro-batch may have been undecodable, here or on another process.
    has_videos = micro_batch_everywhere(accelerator, batch["labels"].shape[0] > 0, batch["labels"].shape[0], epoch)
    window.start_micro_batch()
    verdict = None
    with accelerator.accumulate(run.model):
        outputs = run.model(**batch) if has_videos else None
        if has_videos:
            window.add_loss(outputs.loss)
        if not accelerator.sync_gradients:
            if has_videos:
                accelerator.backward(outputs.loss)
        else:
            # Decided before the last backward, identically on every process: a process leaving out the
            # backward alone would leave the others waiting in the gradient all-reduce.
            verdict = window.agree(accelerator, has_videos)
            if verdict.update:
                accelerator.backward(outputs.loss)
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(run.model.parameters(), config.max_grad_norm)
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)  # a skipped step drops the window's gradients
    if has_videos:
        run.losses.add(outputs)
    return verdict


class _RunningLosses:
    """This process's sums of the logged losses since the last log line, as tensors (no device sync per batch);
    non-finite losses stay out of the averages. ILA's outputs also split the loss into its two terms."""

    NAMES = ("loss", "classification_loss", "alignment_loss")

    def __init__(self):
        self.sums: dict[str, Any] = {"loss": 0.0}
        self.batches = 0.0

    def add(self, outputs) -> None:
        finite = torch.isfinite(outputs.loss.detach())
        for name in self.NAMES:
            if outputs.get(name) is not None:
                self.sums[name] = self.sums.get(name, 0.0) + torch.where(finite, outputs[name].detach().float(), 0.0)
        self.batches += finite.float()

    def averages(self) -> dict[str, float]:
        """{"train/loss": ..., ...} since the last call, then start over."""
        averaged = max(float(self.batches), 1.0)
        logs = {f"train/{name}": float(value) / averaged for name, value in self.sums.items()}
        self.sums, self.batches = dict.fromkeys(self.sums, 0.0), 0.0
        return logs


def _end_epoch(run: _Run, config: TrainingConfig) -> None:
    """After an epoch: validate when due (keeping the best weights for export='best'), checkpoint when due."""
    accelerator, progress = run.accelerator, run.progress
    epoch = progress.epoch
    progress.epoch, progress.batches_in_epoch, progress.undecodable_in_epoch = epoch + 1, 0, {}
    if run.validation_loader is not None and (
        (epoch + 1) % config.eval_every_epochs == 0 or epoch + 1 == config.epochs
    ):
        metrics = evaluate(run.model, run.validation_loader, accelerator, desc=f"eval epoch {epoch}")
        record_undecodable(accelerator, progress, metrics, "validation", len(run.validation_dataset), config)
        progress.history.append({"epoch": epoch, **metrics})
        accelerator.print(
            f"epoch {epoch}: top1 {metrics['top1']:.4f} top5 {metrics['top5']:.4f} loss {metrics['loss']:.4f}"
        )
        if config.log_with:
            logs = {f"eval/{key}": value for key, value in numbers(metrics).items()}
            accelerator.log(logs, step=progress.global_step)
        if metrics["top1"] > progress.best_top1:
            progress.best_top1, progress.best_epoch = metrics["top1"], epoch
            if config.export == "best":
                save_best_weights(accelerator, run.model, Path(config.output_dir))
    if config.checkpoint_every_epochs and progress.epoch % config.checkpoint_every_epochs == 0:
        save_checkpoint(accelerator, run.checkpoints_dir, config.checkpoints_total_limit)


def _final_evaluation(run: _Run, config: TrainingConfig) -> dict[str, Any]:
    """Load the best epoch's weights (export='best'), then evaluate with the exported video processor and the
    configured views per video; {} without validation data."""
    accelerator = run.accelerator
    if config.export == "best" and run.progress.best_epoch >= 0:
        load_best_weights(accelerator.unwrap_model(run.model), Path(config.output_dir))
    if run.validation_dataset is None:
        return {}
    loader = _evaluation_loader(
        config, run.validation_dataset, run.video_processor, config.final_num_clips, config.final_num_crops
    )
    metrics = evaluate(run.model, accelerator.prepare(loader), accelerator, desc="final eval")
    record_undecodable(accelerator, run.progress, metrics, "validation", len(run.validation_dataset), config)
    if config.log_with:
        logs = {f"final/{key}": value for key, value in numbers(metrics).items()}
        accelerator.log(logs, step=run.progress.global_step)
    return metrics


def _tracker_config(config: TrainingConfig) -> dict[str, Any]:
    values = asdict(config)
    values.pop("log_with")
    values.pop("hub_token")
    return {key: value if isinstance(value, (int, float, str, bool)) else str(value) for key, value in values.items()}


def _finish_trackers(accelerator: Accelerator) -> None:
    # Not `accelerator.end_training()`: that also destroys the process group, which belongs to the process (the
    # launcher), not to this call; `train` may run again in the same processes (e.g. resuming, or a second model).
    for tracker in accelerator.trackers:
        tracker.finish()


# ------------------------------------------------------------------------------------------------------ pieces
def build_model(
    config: TrainingConfig, label_names: list[str]
) -> ILAForVideoClassification | FrameAveragingClassifier:
    """The model to train: ILA from `clip_model` (a new head for `label_names`) or from `model_name_or_path` (the
    same classes), or the frame-averaging baseline on `clip_model`."""
    id2label = dict(enumerate(label_names))
    label2id = {name: index for index, name in id2label.items()}
    if config.architecture == "frame_averaging":
        return FrameAveragingClassifier.from_clip(config.clip_model, len(label_names), config.freeze_backbone)
    if config.model_name_or_path:
        model = ILAForVideoClassification.from_pretrained(config.model_name_or_path)
        if [model.config.id2label[i] for i in sorted(model.config.id2label)] != list(label_names):
            raise ValueError(
                f"{config.model_name_or_path} was trained on other classes than the data's {len(label_names)}; "
                "start from `clip_model` to train a new head."
            )
    else:
        model_settings = {  # given ones only: None keeps ILAVideoConfig's default
            name: getattr(config, name)
            for name in ("interaction_channels", "alignment_loss_weight", "classifier_dropout")
            if getattr(config, name) is not None
        }
        model = ILAForVideoClassification.from_clip(
            config.clip_model,
            num_frames=config.num_frames,
            id2label=id2label,
            label2id=label2id,
            head=config.head,
            interaction_variant=config.interaction_variant,
            freeze_backbone=config.freeze_backbone,
            drop_path_rate=config.drop_path_rate,
            jitter_delta=config.jitter_delta,
            **model_settings,
        )
        if config.head == "text":
            model.set_class_names(list(label_names), config.clip_text_model or config.clip_model)
    model.ila.freeze_clip_backbone(config.freeze_backbone)
    model.config.freeze_backbone = config.freeze_backbone
    if config.activation_checkpointing:
        model.activation_checkpointing_enable()
    return model


def build_train_clip_transform(config: TrainingConfig, image_size: int) -> TrainClipTransform | EvalClipTransform:
    """The training clips' transform for `VideoClipTransform`: the released augmentation, or with `augment=False`
    the evaluation preprocessing (the video processor's single view)."""
    if not config.augment:
        return EvalClipTransform(image_size)
    return TrainClipTransform(image_size, flip_p=0.5 if config.horizontal_flip else 0.0)


# ------------------------------------------------------------------------------------------------------ evaluation
def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """scores (N, K), labels (N,) -> {"top1": ..., "top5": ...}; k is capped at K."""
    ranked = scores.topk(min(max(ks), scores.shape[-1]), dim=-1).indices  # (N, k)
    hits = ranked == labels.view(-1, 1)
    return {f"top{k}": hits[:, :k].any(dim=-1).float().mean().item() for k in ks}


@torch.no_grad()
def evaluate(model, dataloader, accelerator: Accelerator, desc: str = "eval") -> dict[str, Any]:
    """
    Top-1 / top-5 accuracy and mean cross-entropy over a prepared dataloader. `pixel_values` of shape
    (B, T, 3, H, W) are one view per video; (B, V, T, 3, H, W) are V views whose softmax probabilities are averaged.
    Predictions are gathered with `gather_for_metrics`, so padding samples added to even out the last batch across
    processes are dropped and N processes give exactly the single-process numbers.

    Batches from transforms with `skip_undecodable=True` mark undecodable videos (`decoded`, `skipped_videos`, see
    `VideoClassificationCollator`): they are left out of the metrics, counted in `num_skipped` and listed (path ->
    reason) in `skipped_videos` when there are any. `num_samples` counts the videos that count.
    """
    model.eval()
    all_scores, all_labels, all_losses, all_decoded = [], [], [], []
    undecodable: dict[str, str] = {}  # this process's
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        decoded = batch.get("decoded")
        if decoded is None:
            decoded = torch.ones_like(labels, dtype=torch.bool)
        undecodable.update(batch.get("skipped_videos", {}))
        # Undecodable videos are scored too (zeros) and dropped after the gather: every process runs the same
        # forward passes (collectives under DDP / FSDP) and gathers as many rows as it has items.
        scores, losses = _scores_and_losses(model, pixel_values, labels)
        scores, labels, losses, decoded = accelerator.gather_for_metrics((scores, labels, losses, decoded.long()))
        all_scores.append(scores.cpu())
        all_labels.append(labels.cpu())
        all_losses.append(losses.cpu())
        all_decoded.append(decoded.cpu().bool())
    decoded = torch.cat(all_decoded)
    scores, labels, losses = torch.cat(all_scores)[decoded], torch.cat(all_labels)[decoded], torch.cat(all_losses)
    metrics: dict[str, Any] = top_k_accuracy(scores, labels)
    metrics["loss"] = losses[decoded].mean().item()
    metrics["num_samples"] = int(decoded.sum())
    metrics["num_skipped"] = int((~decoded).sum())
    if metrics["num_skipped"]:  # the same decision on every process: the counts were gathered
        metrics["skipped_videos"] = dict(sorted(gather_object(list(undecodable.items()))))
    return metrics


def _scores_and_losses(model, pixel_values: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Class scores (N, K) and per-video losses (N,); several views (N, V, T, C, H, W) average their probabilities."""
    if pixel_values.ndim == 6:  # (N, V, T, C, H, W): several views per video
        probabilities = view_probabilities(model, pixel_values)  # (N, K)
        return probabilities, F.nll_loss(probabilities.clamp_min(1e-12).log(), labels, reduction="none")
    logits = model(pixel_values=pixel_values).logits.float()
    return logits, F.cross_entropy(logits, labels, reduction="none")


__all__ = ["build_train_clip_transform", "build_model", "evaluate", "top_k_accuracy", "train"]
