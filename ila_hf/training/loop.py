"""Fine-tune ILA with Hugging Face accelerate, following the released recipe.

Read `train` top to bottom: set up (`_set_up`: the data, the model, the optimizer with one learning rate per parameter
group, the cosine schedule, all prepared with accelerate); optionally resume from the latest checkpoint; then per epoch
set the alignment jitter ("align decay") and train with gradient accumulation (`_train_epoch`, `_train_micro_batch`),
then validate and checkpoint (`_end_epoch`), for `epochs` epochs or `max_steps` optimizer steps; finally evaluate with
the configured views, export and optionally push to the Hub. Every evaluation's clips come from the video processor
exported with the model. The same loop trains the frame-averaging baseline (`architecture="frame_averaging"`), which
`ila-hf demo` compares ILA with.

Data: any `build_dataset` source. A map-style dataset goes through a DataLoader that accelerate prepares; a streamed one
(`streaming=True`) through `VideoBatchStream`, which shares the stream out across processes and data-loader workers
itself. One object per kind (`_LoaderEpochs`, `_StreamEpochs`) hands `_train_epoch` the micro-batches of an epoch; the
schedule's length comes from the dataset's size (a stream's stated size) or `max_steps`.

Runs on one CPU or GPU as a plain `python` program and on many with `accelerate launch` (see docs/distributed.md).
A run that is stopped and resumed with `resume=True` ends with exactly the weights of an uninterrupted run: the
data order, the clips, the mixes and every random number generator are restored from the checkpoint.

One run per output folder: `train` holds a lock on `output_dir` from start to end (a second run there is refused at
once, naming the holder); checkpoints and best weights carry the run's id, and checkpoints a fingerprint of its labels,
model, data and recipe, which `resume=True` checks (see `checkpoints`).

Faults: checkpoints are written atomically (a run killed at any moment, even mid-save, resumes from a complete one);
undecodable videos are skipped, counted and logged, up to `max_bad_video_fraction` of a split; an optimizer step whose
loss is NaN or infinite is skipped (the same on every process) and `max_consecutive_nonfinite_steps` of them in a row
stop the run.
"""

import itertools
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, DataLoaderConfiguration, PartialState
from accelerate.utils import (
    DistributedType,
    ProjectConfiguration,
    broadcast_object_list,
    gather_object,
    send_to_device,
    set_seed,
)
from torch.nn import functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..baselines import FrameAveragingClassifier
from ..data import (
    VideoBatchStream,
    VideoClassificationCollator,
    VideoClipTransform,
    VideoProcessorTransform,
    build_dataset,
    num_examples,
)
from ..hub import HubPushError, check_push_access
from ..inference import view_probabilities
from ..modeling_ila import ILAForVideoClassification
from ..transforms import EvalClipTransform, TrainClipTransform
from ..video_processing_ila import ILAVideoProcessor
from .checkpoints import (
    TrainingProgress,
    check_best_weights,
    hold_output_dir,
    load_best_weights,
    resume_from_latest,
    run_fingerprint,
    save_best_weights,
    save_checkpoint,
)
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
from .recipe import build_optimizer, build_scheduler, build_training_collator, jitter_delta


logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------------ the loop
def train(config: TrainingConfig) -> TrainingResult:
    """Fine-tune ILA as configured; see the module docstring. Returns a `TrainingResult`."""
    started = time.time()
    accelerator = _accelerator(config)
    with hold_output_dir(accelerator, config.output_dir) as run_id:  # one run per output folder, or refused now
        return _train(config, accelerator, run_id, started)


def _train(config: TrainingConfig, accelerator: Accelerator, run_id: str, started: float) -> TrainingResult:
    run = _set_up(config, accelerator, run_id)  # data, model, optimizer, schedule, prepared loaders
    run.fingerprint = resume_from_latest(accelerator, run.checkpoints_dir, config.resume, run.progress, run.fingerprint)
    if config.export == "best" and run.progress.best_epoch >= 0:  # resumed after a validation: best/ must be ours
        check_best_weights(Path(config.output_dir), run.fingerprint["run_id"])
    if config.log_with:
        run.accelerator.init_trackers(config.project_name, config=_tracker_config(config))

    progress_bar = tqdm(
        total=run.total_steps,
        initial=run.progress.global_step,
        desc="train",
        disable=not run.accelerator.is_local_main_process,
    )
    stopped_early = False
    while not _finished(run.progress, config) and not stopped_early:
        stopped_early = _train_epoch(run, config, progress_bar)
        if not stopped_early:
            _end_epoch(run, config)
    progress_bar.close()
    run.accelerator.wait_for_everyone()

    final_metrics, model_dir, upload = {}, None, None
    if not stopped_early:  # the best epoch's weights (if validated) or the last ones; evaluated, exported, pushed
        final_metrics = _final_evaluation(run, config)
        num_videos = {
            "train": "unknown (streamed)" if run.train_batches.num_videos is None else run.train_batches.num_videos,
            "validation": _num_evaluated(final_metrics),
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
    train_transform: VideoClipTransform
    train_batches: "_LoaderEpochs | _StreamEpochs"
    validation_dataset: Any
    validation_loader: DataLoader | VideoBatchStream | None
    total_steps: int
    checkpoints_dir: Path
    progress: TrainingProgress
    fingerprint: dict  # the run id, labels, model, data and recipe: stored in every checkpoint, checked on resume
    window: StepWindow
    losses: "_RunningLosses"
    window_sums: torch.Tensor  # this process's training sums in the current optimizer step, as in `epoch_sums`


def _accelerator(config: TrainingConfig) -> Accelerator:
    return Accelerator(
        cpu=config.cpu,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        log_with=config.log_with,
        project_config=ProjectConfiguration(project_dir=config.output_dir),  # checkpoints: see `save_checkpoint`
        # Every process draws the same shuffled order for an epoch from (seed, epoch): resumable and in step.
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=config.seed),
    )


def _set_up(config: TrainingConfig, accelerator: Accelerator, run_id: str) -> _Run:
    set_seed(config.seed)
    if config.push_to_hub:
        _check_push_access(accelerator, config)
    sharded = accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED)  # the weights
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
    if config.streaming and sharded and (config.validation_data or config.validation_split):
        raise ValueError(
            "A streamed evaluation scores each process's share of the videos on its own, which "
            f"{accelerator.distributed_type} cannot (it shards the weights); evaluate a stream with DDP or one process."
        )

    # Data: lazily decoded clips; training randomness is a function of (seed, epoch, video).
    train_dataset, validation_dataset = build_datasets(config)
    label_names = train_dataset.features["label"].names
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
    train_batches = _training_batches(config, accelerator, train_dataset, train_transform, len(label_names))

    optimizer = build_optimizer(model, config)
    model, optimizer = train_batches.prepare(accelerator, model, optimizer)
    validation_loader = None
    if validation_dataset is not None:  # one view per video, made by the exported video processor itself
        validation_loader = _evaluation_loader(config, accelerator, validation_dataset, video_processor, 1, 1)
    warmup_steps, total_steps = _schedule_steps(config, train_batches.steps_per_epoch())
    # Not passed to `prepare`: accelerate would step it once per process per step. It steps once per optimizer step.
    scheduler = build_scheduler(optimizer, warmup_steps, total_steps, config.min_lr_ratio)
    progress = TrainingProgress()
    accelerator.register_for_checkpointing(scheduler, progress)
    return _Run(
        accelerator=accelerator,
        model=model,
        video_processor=video_processor,
        optimizer=optimizer,
        scheduler=scheduler,
        train_transform=train_transform,
        train_batches=train_batches,
        validation_dataset=validation_dataset,
        validation_loader=validation_loader,
        total_steps=total_steps,
        checkpoints_dir=Path(config.output_dir) / "checkpoints",
        progress=progress,
        fingerprint=run_fingerprint(config, label_names, num_examples(train_dataset), run_id),
        window=StepWindow(model),
        losses=_RunningLosses(),
        window_sums=torch.zeros(4, device=accelerator.device),
    )


def _check_push_access(accelerator: Accelerator, config: TrainingConfig) -> None:
    """Before any work: can the upload at the end succeed? Checked on the main process; every process raises the
    same `HubPushError`, so that none waits for the others in a collective."""
    refusal = [None]
    if accelerator.is_main_process:
        try:
            check_push_access(config.push_to_hub, token=config.hub_token, private=config.hub_private)
        except HubPushError as error:
            refusal = [str(error)]
    refusal = broadcast_object_list(refusal)
    if refusal[0] is not None:
        raise HubPushError(refusal[0])


def build_datasets(config: TrainingConfig) -> tuple[Any, Any]:
    """The training and validation datasets (the latter None without validation data), normalised by `build_dataset`
    and streamed with `config.streaming`; validation takes the training classes' ids."""
    sources = dict(
        video_root=config.video_root,
        video_column=config.video_column,
        label_column=config.label_column,
        dataset_config=config.dataset_config,
        streaming=config.streaming,
    )
    train_dataset = build_dataset(config.train_data, label_names=config.label_names, split=config.split, **sources)
    validation_source = config.validation_data or (config.train_data if config.validation_split else None)
    if validation_source is None:
        return train_dataset, None
    label_names = train_dataset.features["label"].names
    validation_dataset = build_dataset(
        validation_source, label_names=label_names, split=config.validation_split, **sources
    )
    return train_dataset, validation_dataset


def _training_batches(
    config: TrainingConfig, accelerator: Accelerator, dataset, transform: VideoClipTransform, num_labels: int
) -> "_LoaderEpochs | _StreamEpochs":
    """The training micro-batches: `transform`'s clips, collated with the recipe's Mixup/CutMix and label smoothing."""
    collator = build_training_collator(config, num_labels)
    if config.streaming:
        stream = VideoBatchStream(
            dataset,
            transform,
            collator,
            config.batch_size,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            num_workers=config.num_workers,
            shuffle_buffer_size=config.shuffle_buffer_size,
            seed=config.seed,
        )
        return _StreamEpochs(stream, num_examples(dataset), config)
    loader = DataLoader(
        dataset.with_transform(transform),
        batch_size=config.batch_size,
        shuffle=True,
        collate_fn=collator,
        num_workers=config.num_workers,
        # The loader's own seed draw comes from this generator, not the global RNG that dropout uses.
        generator=torch.Generator().manual_seed(config.seed),
        drop_last=False,
    )
    return _LoaderEpochs(loader)


class _LoaderEpochs:
    """Training micro-batches of a map-style dataset: a DataLoader that accelerate prepares (shared out across
    processes, the last batch evened out), reshuffled every epoch from (seed, epoch)."""

    def __init__(self, loader: DataLoader):
        self.loader = loader
        self.num_videos = len(loader.dataset)

    def prepare(self, accelerator: Accelerator, model, optimizer):
        """accelerate's `prepare` of the model, the optimizer and the loader together; returns (model, optimizer)."""
        self.accelerator = accelerator
        model, optimizer, self.loader = accelerator.prepare(model, optimizer, self.loader)
        return model, optimizer

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.loader) / self.accelerator.gradient_accumulation_steps)

    def epoch(self, epoch: int, batches_done: int):
        """The epoch's micro-batches after the first `batches_done` (resuming inside it: the same order, less those)."""
        self.loader.set_epoch(epoch)
        if batches_done:
            return self.accelerator.skip_first_batches(self.loader, batches_done)
        return self.loader


class _StreamEpochs:
    """
    Training micro-batches of a streamed dataset: a `VideoBatchStream` of this process's share (not prepared: it
    shares the data out itself), moved to the device. Processes may hold different numbers of batches, yet all must
    take the same optimizer steps: the micro-batches come one accumulation window at a time, read ahead, and the epoch
    ends on every process as soon as one has no whole window left.

    Checkpointed (`register_for_checkpointing`) as the stream's state after the last micro-batch handed out, so that
    a window read ahead is read again after a resume.
    """

    def __init__(self, stream: VideoBatchStream, num_videos: int | None, config: TrainingConfig):
        if num_videos is None and config.max_steps is None:
            raise ValueError(
                f"{config.train_data} does not state its number of examples, so `epochs` cannot size the "
                "learning-rate schedule of the stream; give max_steps (--max-steps)."
            )
        self.stream = stream
        self.num_videos = num_videos  # None: the stream does not state its size
        self.window = config.gradient_accumulation_steps
        self.handed_out = stream.state_dict()

    def prepare(self, accelerator: Accelerator, model, optimizer):
        """accelerate's `prepare` of the model and the optimizer; returns them."""
        self.accelerator = accelerator
        accelerator.register_for_checkpointing(self)
        return accelerator.prepare(model, optimizer)

    def steps_per_epoch(self) -> int | None:
        """Estimated from the stated size (None without one): a process's share, in whole windows."""
        if self.num_videos is None:
            return None
        batches = math.ceil(math.ceil(self.num_videos / self.stream.world_size) / self.stream.batch_size)
        return max(1, batches // self.window)

    def epoch(self, epoch: int, batches_done: int):
        """The epoch's micro-batches; resuming inside it, the stream's restored state knows where it stopped."""
        self.stream.set_epoch(epoch)
        batches = iter(self.stream)
        windows = 0
        try:
            while True:
                window = [(batch, self.stream.state_dict()) for batch in itertools.islice(batches, self.window)]
                if not self._everywhere(len(window) == self.window):
                    break
                windows += 1
                for batch, state in window:
                    self.handed_out = state
                    yield send_to_device(batch, self.accelerator.device)
        finally:
            batches.close()
        if windows == 0 and batches_done == 0:  # an epoch without a step: with `max_steps` the run would never end
            raise ValueError(
                f"Epoch {epoch} left a process without a whole accumulation window ({self.window} batch(es) of "
                f"{self.stream.batch_size}): the stream has too few examples for {self.stream.world_size} process(es)."
            )

    def _everywhere(self, flag: bool) -> bool:
        if self.accelerator.num_processes == 1:
            return flag
        return bool(self.accelerator.gather(torch.tensor([int(flag)], device=self.accelerator.device)).all())

    def state_dict(self) -> dict:
        return self.handed_out

    def load_state_dict(self, state: dict) -> None:
        self.stream.load_state_dict(state)
        self.handed_out = state


def _schedule_steps(config: TrainingConfig, steps_per_epoch: int | None) -> tuple[int, int]:
    """(warm-up steps, total steps): `max_steps`, else `epochs` epochs; the warm-up lasts `warmup_epochs` epochs, or
    the same fraction of `max_steps` when an epoch's length is unknown."""
    total_steps = config.max_steps or steps_per_epoch * config.epochs
    if steps_per_epoch is None:
        return round(total_steps * config.warmup_epochs / config.epochs), total_steps
    return round(config.warmup_epochs * steps_per_epoch), total_steps


def _finished(progress: TrainingProgress, config: TrainingConfig) -> bool:
    """`max_steps` optimizer steps taken when given, else `epochs` epochs."""
    if config.max_steps:
        return progress.global_step >= config.max_steps
    return progress.epoch >= config.epochs


def _evaluation_loader(
    config: TrainingConfig,
    accelerator: Accelerator,
    dataset,
    video_processor: ILAVideoProcessor,
    num_clips: int,
    num_crops: int,
) -> DataLoader | VideoBatchStream:
    """Evaluation clips made by `video_processor`, with `num_clips` x `num_crops` views per video: a prepared
    DataLoader, or for a streamed dataset a `VideoBatchStream` of this process's share (see `evaluate`)."""
    views = {"num_clips": num_clips, "num_crops": num_crops}
    transform = VideoProcessorTransform(video_processor, skip_undecodable=True, **views)
    batch_size = config.eval_batch_size or config.batch_size
    if config.streaming:
        return VideoBatchStream(
            dataset,
            transform,
            VideoClassificationCollator(),
            batch_size,
            rank=accelerator.process_index,
            world_size=accelerator.num_processes,
            num_workers=config.num_workers,
        )
    loader = DataLoader(
        dataset.with_transform(transform),
        batch_size=batch_size,
        collate_fn=VideoClassificationCollator(),
        num_workers=config.num_workers,
    )
    return accelerator.prepare(loader)


def _train_epoch(run: _Run, config: TrainingConfig, progress_bar) -> bool:
    """Train on the rest of the current epoch (all of it unless resuming inside it). Returns whether the run stopped
    early (`stop_after_steps`)."""
    accelerator, progress = run.accelerator, run.progress
    epoch = progress.epoch
    delta = jitter_delta(epoch, config.jitter_delta, config.align_decay_start_epoch)
    if config.architecture == "ila":
        accelerator.unwrap_model(run.model).set_jitter_delta(delta)
    run.train_transform.set_epoch(epoch)

    run.model.train()
    for batch in run.train_batches.epoch(epoch, progress.batches_in_epoch):
        verdict = _train_micro_batch(run, config, batch, epoch)
        progress.batches_in_epoch += 1
        if verdict is None:
            continue
        if _finish_step(run, config, verdict, progress_bar, delta):
            return True
        if _finished(progress, config):  # `max_steps` reached inside the epoch: it ends here
            break
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
    step_sums = accelerator.reduce(run.window_sums, reduction="sum").tolist()  # the same on every process
    progress.epoch_sums = [total + step for total, step in zip(progress.epoch_sums, step_sums)]
    run.window_sums.zero_()
    record_step_faults(accelerator, progress, verdict, config, run.train_batches.num_videos, run.checkpoints_dir)
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
        save_checkpoint(
            accelerator, run.checkpoints_dir, progress.global_step, config.checkpoints_total_limit, run.fingerprint
        )
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
        run.window_sums += _training_sums(outputs, batch["labels"])
    return verdict


def _training_sums(outputs, labels: torch.Tensor) -> torch.Tensor:
    """(finite loss x clips, clips with a finite loss, correct top-1, clips) of a micro-batch; labels (B,) or mixed
    soft targets (B, K), whose largest entry counts as the class."""
    clips = torch.tensor(float(labels.shape[0]), device=outputs.logits.device)
    finite = torch.isfinite(outputs.loss.detach())
    targets = labels.argmax(dim=-1) if labels.ndim == 2 else labels
    correct = (outputs.logits.detach().argmax(dim=-1) == targets).sum().float()
    loss = torch.where(finite, outputs.loss.detach().float() * clips, 0.0)
    return torch.stack([loss, finite.float() * clips, correct, clips])


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
    loss_sum, loss_clips, correct, clips = progress.epoch_sums
    entry = {"epoch": epoch, "train_loss": loss_sum / max(loss_clips, 1.0), "train_top1": correct / max(clips, 1.0)}
    progress.epoch_sums = [0.0, 0.0, 0.0, 0.0]
    progress.history.append(entry)
    if run.validation_loader is not None and (
        (epoch + 1) % config.eval_every_epochs == 0 or _finished(progress, config)
    ):
        metrics = evaluate(run.model, run.validation_loader, accelerator, desc=f"eval epoch {epoch}")
        record_undecodable(accelerator, progress, metrics, "validation", _num_evaluated(metrics), config)
        entry.update(metrics)
        shown = " ".join(f"{name} {metrics[name]:.4f}" for name in ("top1", "top5", "loss") if name in metrics)
        accelerator.print(f"epoch {epoch}: {shown}")
        if config.log_with:
            logs = {f"eval/{key}": value for key, value in numbers(metrics).items()}
            accelerator.log(logs, step=progress.global_step)
        if metrics["top1"] > progress.best_top1:
            progress.best_top1, progress.best_epoch = metrics["top1"], epoch
            if config.export == "best":
                save_best_weights(accelerator, run.model, Path(config.output_dir), run.fingerprint["run_id"])
    if config.checkpoint_every_epochs and progress.epoch % config.checkpoint_every_epochs == 0:
        save_checkpoint(
            accelerator, run.checkpoints_dir, progress.global_step, config.checkpoints_total_limit, run.fingerprint
        )


def _final_evaluation(run: _Run, config: TrainingConfig) -> dict[str, Any]:
    """Load the best epoch's weights (export='best'), then evaluate with the exported video processor and the
    configured views per video; {} without validation data."""
    accelerator = run.accelerator
    if config.export == "best" and run.progress.best_epoch >= 0:
        load_best_weights(accelerator.unwrap_model(run.model), Path(config.output_dir), run.fingerprint["run_id"])
    if run.validation_dataset is None:
        return {}
    loader = _evaluation_loader(
        config, accelerator, run.validation_dataset, run.video_processor, config.final_num_clips, config.final_num_crops
    )
    metrics = evaluate(run.model, loader, accelerator, desc="final eval")
    record_undecodable(accelerator, run.progress, metrics, "validation", _num_evaluated(metrics), config)
    if config.log_with:
        logs = {f"final/{key}": value for key, value in numbers(metrics).items()}
        accelerator.log(logs, step=run.progress.global_step)
    return metrics


def _num_evaluated(metrics: dict[str, Any]) -> int:
    """Videos an evaluation went through, decodable or not (0 without an evaluation)."""
    return metrics.get("num_samples", 0) + metrics.get("num_skipped", 0)


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
    """
    The model to train: ILA from `clip_model` with a new head for `label_names`; ILA from `model_name_or_path`, whose
    head is kept for the same classes and made anew for other ones (see `_head_for_new_classes`); or the
    frame-averaging baseline on `clip_model`.
    """
    id2label = dict(enumerate(label_names))
    label2id = {name: index for index, name in id2label.items()}
    if config.architecture == "frame_averaging":
        return FrameAveragingClassifier.from_clip(config.clip_model, len(label_names), config.freeze_backbone)
    if config.model_name_or_path:
        model = ILAForVideoClassification.from_pretrained(config.model_name_or_path)
        if model.config.num_frames != config.num_frames:
            raise ValueError(
                f"{config.model_name_or_path} takes clips of {model.config.num_frames} frames, the run's num_frames is "
                f"{config.num_frames}: set num_frames (--num-frames) to {model.config.num_frames}."
            )
        source_classes = [model.config.id2label[index] for index in sorted(model.config.id2label)]
        if source_classes == list(label_names):
            kept, made = "video encoder, MIT and head", "nothing"
        else:
            kept, made = _head_for_new_classes(model, list(label_names), config)
        if PartialState().is_main_process:
            logger.info(
                "Starting from %s (%d classes) for %d classes: kept %s; new: %s.",
                config.model_name_or_path,
                len(source_classes),
                len(label_names),
                kept,
                made,
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


def _head_for_new_classes(
    model: ILAForVideoClassification, label_names: list[str], config: TrainingConfig
) -> tuple[str, str]:
    """
    Make `model`'s head classify `label_names`, in place, keeping every part that does not depend on the classes:
    the linear head's classifier is re-initialised (its LayerNorm kept); the text head embeds the new class names
    with the CLIP text tower of `clip_text_model` (its prompt generator, projection and logit scale kept). Returns
    (what was kept, what is new), for the log.
    """
    if model.config.head == "text":
        if config.clip_text_model is None:
            raise ValueError(
                f"{config.model_name_or_path} has a text head trained on other classes than the data's "
                f"{len(label_names)}, and the new class names need a CLIP text tower to embed them: set "
                "clip_text_model (--clip-text-model) to the CLIP checkpoint (folder or Hub id, with its tokenizer) "
                "whose text tower matches the model's vision backbone."
            )
        model.set_class_names(label_names, config.clip_text_model)
        return (
            "video encoder, MIT, text head's prompt generator and logit scale",
            f"class embeddings of the {len(label_names)} class names from {config.clip_text_model}'s text tower",
        )
    old_classifier = model.head.classifier
    classifier = torch.nn.Linear(
        old_classifier.in_features,
        len(label_names),
        device=old_classifier.weight.device,
        dtype=old_classifier.weight.dtype,
    )
    model._initialize_weights(classifier)  # the initialisation `from_clip` gives a new head
    model.head.classifier = classifier
    model.config.id2label = dict(enumerate(label_names))
    model.config.label2id = {name: index for index, name in enumerate(label_names)}
    model.num_labels = len(label_names)
    new = f"a re-initialised classifier for {len(label_names)} classes"
    return "video encoder, MIT and the linear head's LayerNorm", new


def build_train_clip_transform(config: TrainingConfig, image_size: int) -> TrainClipTransform | EvalClipTransform:
    """The training clips' transform for `VideoClipTransform`: the released augmentation, or with `augment=False`
    the evaluation preprocessing (the video processor's single view)."""
    if not config.augment:
        return EvalClipTransform(image_size)
    return TrainClipTransform(image_size, flip_p=0.5 if config.horizontal_flip else 0.0)


# ------------------------------------------------------------------------------------------------------ evaluation
def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """scores (N, K), labels (N,) -> {"top1": ..., "top5": ...}. A k above the number of classes K is left out, not
    reported as a meaningless 1.0: 3 classes give "top1" alone (and "top2" if asked)."""
    ks = tuple(k for k in ks if k <= scores.shape[-1])
    ranked = scores.topk(max(ks, default=0), dim=-1).indices  # (N, max k)
    hits = ranked == labels.view(-1, 1)
    return {f"top{k}": hits[:, :k].any(dim=-1).float().mean().item() for k in ks}


@torch.no_grad()
def evaluate(model, dataloader, accelerator: Accelerator, desc: str = "eval") -> dict[str, Any]:
    """
    Top-1 / top-5 accuracy and mean cross-entropy over a prepared dataloader or a `VideoBatchStream`. `pixel_values`
    of shape (B, T, 3, H, W) are one view per video; (B, V, T, 3, H, W) are V views whose softmax probabilities are
    averaged. A dataloader's predictions are gathered per batch with `gather_for_metrics`, so padding samples added to
    even out the last batch across processes are dropped and N processes give exactly the single-process numbers. A
    stream's processes hold different shares (and numbers of batches): each scores its own with the unwrapped model
    (no collective per batch) and the results are gathered once at the end, so every video counts exactly once.

    Batches from transforms with `skip_undecodable=True` mark undecodable videos (`decoded`, `skipped_videos`, see
    `VideoClassificationCollator`): they are left out of the metrics, counted in `num_skipped` and listed (path ->
    reason) in `skipped_videos` when there are any. `num_samples` counts the videos that count.
    """
    model.eval()
    streamed = isinstance(dataloader, VideoBatchStream)
    scoring_model = accelerator.unwrap_model(model) if streamed else model
    results = []  # per batch: (scores, labels, losses, decoded)
    undecodable: dict[str, str] = {}  # this process's
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        if streamed:
            batch = send_to_device(batch, accelerator.device)
        pixel_values, labels = batch["pixel_values"], batch["labels"]
        decoded = batch.get("decoded")
        if decoded is None:
            decoded = torch.ones_like(labels, dtype=torch.bool)
        undecodable.update(batch.get("skipped_videos", {}))
        # Undecodable videos are scored too (zeros) and dropped after the gather: every process runs the same
        # forward passes (collectives under DDP / FSDP) and gathers as many rows as it has items.
        scores, losses = _scores_and_losses(scoring_model, pixel_values, labels)
        result = (scores, labels, losses, decoded.long())
        if not streamed:
            result = accelerator.gather_for_metrics(result)
        results.append(tuple(tensor.cpu() for tensor in result))
    if streamed:  # every process's batches, once
        results = gather_object(results)
    scores, labels, losses, decoded = (torch.cat(column) for column in zip(*results))
    decoded = decoded.bool()
    scores, labels = scores[decoded], labels[decoded]
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
