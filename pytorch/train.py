"""Train DeepSpeech2 until the validation WER reaches the target: the benchmark's one training loop.

    python -m pytorch.train --data-dir DIR --results-dir DIR [--resume] [--dry-run] [key=value ...]

Read it top to bottom: set-up (model, optimiser, learning rate), one optimiser step, one epoch, then
the run (checks, logging, the epoch loop with evaluation, the stop rule and checkpoints).

One process, or one per device under torchrun (WORLD_SIZE > 1), in this same loop. Each global batch
of p.batch_size utterances is cut into world size x p.accumulation_steps(world size) micro-batches in a
fixed order (pytorch.loader); every rank back-propagates its micro-batches' summed CTC / the global
batch size, and DistributedDataParallel sums the gradients over ranks, so an optimiser step is the
same computation whatever the world size. The host reads from the device once per step.

Exit status (exit_status.py): 0 target reached (or --dry-run), 3 every epoch run without reaching
it, 1 error, 2 bad parameters or usage. Under torchrun a completed run exits 0 on every rank whether
it reached the target or not (torchrun reports any other status as a crash); result.json holds the
status, which pytorch.run_and_time reads.
"""

import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import numpy as np
import torch

import exit_status
import params
from data.dataset_dir import DatasetDir
from data.progress import progress_bar
from exit_status import ExitStatus
from pytorch import checkpoint, distributed, inference, loader, memory, precision, preflight, results, tensorboard
from pytorch.batchnorm import RunningStats
from pytorch.checkpoint import RunState
from pytorch.distributed import World
from pytorch.mlperf import MLPerfLog, run_start_time
from pytorch.model import DeepSpeech2, probe_recurrent
from pytorch.options import RunOptions, parse_trainer_args

CTC = torch.nn.CTCLoss(blank=0, reduction="sum", zero_infinity=False)
# Allocator default for long, ever-changing batch shapes: fewer fragmentation OOMs. Set before CUDA starts.
CUDA_ALLOC_CONF = "expandable_segments:True"


@dataclass
class Trainer:
    """Everything an optimiser step uses."""

    p: params.Params
    world: World
    model: DeepSpeech2  # the bare model: evaluation and checkpoints
    ddp: torch.nn.Module  # what training runs forward through: DistributedDataParallel(model), or model
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    total_steps: int  # of the whole run: the learning-rate schedule's length
    recurrent: precision.RecurrentKernel  # what the recurrent layers really compute in, and how (probed)


@dataclass
class StepResult:
    loss_sum: float  # summed CTC of the kept utterances, over all ranks
    dropped: int  # utterances too short for their transcript, over all ranks
    skipped: bool  # no optimiser step: a non-finite loss or gradient, or nothing alignable
    grad_norm: float  # global gradient norm before clipping


@dataclass
class EpochTraining:
    """An epoch's training pass, as metrics.jsonl records it (pytorch.results.EpochMetrics)."""

    train_loss: float
    lr: float
    seconds: float
    utt_per_s: float
    audio_s_per_s: float
    skipped_steps: int
    dropped_utterances: int


# ---------------------------------------------------------------- set-up


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed)
    random.seed(seed)


def make_optimizer(model: torch.nn.Module, p: params.Params) -> torch.optim.Optimizer:
    if p.optimizer == "sgd":
        # Nesterov needs momentum: momentum=0 is plain SGD (torch refuses nesterov without it).
        nesterov = p.momentum > 0
        return torch.optim.SGD(
            model.parameters(), lr=p.lr, momentum=p.momentum, nesterov=nesterov, weight_decay=p.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(p.momentum, 0.999), weight_decay=p.weight_decay)


def build_trainer(
    p: params.Params, world: World, total_steps: int, recurrent: precision.RecurrentKernel | None = None
) -> Trainer:
    """Model (on the device, DDP-wrapped for several ranks), optimiser and GradScaler. `recurrent`: what
    preflight.check_device found (probed here when not given). Every generator is seeded after the
    probe, so the initial weights depend on p.seed only."""
    precision.set_fp32_math(p.fp32_math)
    recurrent = recurrent or probe_recurrent(p, world.device)
    seed_everything(p.seed)
    model = DeepSpeech2(p).to(world.device)
    model.sync_batchnorm = world.sync_batchnorm
    ddp = distributed.wrap(model, world)
    optimizer, scaler = make_optimizer(model, p), precision.grad_scaler(p.precision)
    return Trainer(p, world, model, ddp, optimizer, scaler, total_steps, recurrent)


def learning_rate(p: params.Params, epoch: int, step: int, total_steps: int) -> float:
    """lr of global step `step` (0-based over the run) in `epoch` (0-based): a pure function, so a
    resumed run needs only the step counter. anneal: lr / anneal**epoch; onecycle: linear warm-up
    over warmup_fraction of all steps, then cosine decay to 0."""
    if p.lr_schedule == "anneal":
        return p.lr / p.learning_anneal**epoch
    warmup = max(1, round(p.warmup_fraction * total_steps))
    if step < warmup:
        return p.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return p.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


# ---------------------------------------------------------------- one optimiser step


def ctc_loss(log_probs: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor):
    """Summed CTC over the batch: log_probs (T, N, 29) -> scalar, in float32 whatever the model's precision.

    The lengths stay on the host: torch would copy them there anyway.
    """
    return CTC(log_probs.float(), targets, out_lengths, target_lengths)


def micro_batch_loss(model: torch.nn.Module, batch: loader.Batch, p: params.Params, device: torch.device):
    """Forward one micro-batch -> summed CTC of its utterances, a float32 scalar on `device`.

    The loader has already left out the utterances CTC cannot align (batch.dropped). An empty batch
    (a rank's share of a short tail batch) runs one frame-less placeholder utterance instead: its zero
    loss still depends on every weight, so the backward pass, DDP's all-reduce and synchronised
    BatchNorm run on every rank alike, and no statistic or gradient changes.
    """
    if len(batch) == 0:
        placeholder = torch.zeros(1, p.n_features, 1, device=device)
        log_probs, _ = model(placeholder, torch.zeros(1, dtype=torch.long))
        return log_probs.sum() * 0.0
    features = batch.features.to(device, non_blocking=True)
    log_probs, out_lengths = model(features, batch.lengths)
    targets = batch.targets.to(device, non_blocking=True)
    return ctc_loss(log_probs, out_lengths, targets, batch.target_lengths)


def backward_micro_batches(trainer: Trainer, micro_batches: list[loader.Batch], global_count: int, stats) -> list:
    """Back-propagate each micro-batch's summed CTC / global_count (gradients accumulate; DDP all-reduces
    them in the last one's backward) -> [kept, dropped, forwards] and the loss sum (a device scalar)."""
    world, scaler = trainer.world, trainer.scaler
    loss_sum = torch.zeros((), dtype=torch.float64, device=world.device)
    kept = dropped = forwards = 0
    for k, batch in enumerate(micro_batches):
        dropped += batch.dropped
        if len(batch) == 0 and not world.distributed:
            continue  # one process: nothing to do; several: every rank must take part (see micro_batch_loss)
        stats.before_forward()
        last = k == len(micro_batches) - 1
        with nullcontext() if last or not world.distributed else trainer.ddp.no_sync():
            loss = micro_batch_loss(trainer.ddp, batch, trainer.p, world.device)
            scaled = loss / global_count
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if len(batch):
            stats.after_forward()
            kept, forwards = kept + len(batch), forwards + 1
        loss_sum += loss.detach().double()
    return [kept, dropped, forwards], loss_sum


def train_step(trainer: Trainer, micro_batches: list[loader.Batch], global_count: int) -> StepResult:
    """One optimiser step over this rank's micro-batches of a global batch of global_count utterances.

    The accumulated gradients, summed over ranks by DDP, are those of the mean loss of the global
    batch. The step is skipped (no weight, optimiser state or BatchNorm statistic moves) if the global
    batch has no alignable utterance or its loss or gradient norm is not finite anywhere. The host
    reads from the device once: the step's summary (loss, counts, gradient norm), after one all-reduce.
    """
    p, optimizer, scaler = trainer.p, trainer.optimizer, trainer.scaler
    optimizer.zero_grad(set_to_none=True)
    stats = RunningStats(trainer.model)
    counts, loss_sum = backward_micro_batches(trainer, micro_batches, global_count, stats)
    if scaler is not None:
        scaler.unscale_(optimizer)
    # clip_grad_norm_ returns the norm before clipping; inf (no clipping) still measures it.
    norm = torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), p.max_norm if p.max_norm > 0 else math.inf)
    counts = torch.tensor(counts, dtype=torch.float64).to(trainer.world.device, non_blocking=True)
    summary = distributed.all_reduce_(torch.cat([counts, loss_sum.view(1), stats.sums]), trainer.world)
    kept, dropped, forwards, loss_total, norm_value = torch.cat([summary[:4], norm.double().view(1)]).tolist()
    step = kept > 0 and math.isfinite(loss_total) and math.isfinite(norm_value)
    if step:
        optimizer.step()
        stats.finish(summary[4:], int(forwards))
    else:
        optimizer.zero_grad(set_to_none=True)
        stats.restore()
    if scaler is not None:
        scaler.update()  # lowers the scale after a non-finite gradient
    return StepResult(loss_total, int(dropped), not step, norm_value)


# ---------------------------------------------------------------- one epoch


def train_epoch(trainer: Trainer, state: RunState, batches: loader.TrainingBatches, epoch: int, board) -> EpochTraining:
    """One pass over the training set (optionally shuffled length-ordered batches); every step's
    loss, learning rate, gradient norm and throughput go to TensorBoard."""
    p, world, durations = trainer.p, trainer.world, batches.split.manifest.duration
    trainer.ddp.train()
    losses, skipped, dropped, utterances, audio_s = [], 0, 0, 0, 0.0
    bar = progress_bar(total=batches.steps(), desc=f"epoch {epoch + 1}/{p.epochs}", unit="step", disable=not world.main)
    lr, start = learning_rate(p, epoch, state.step, trainer.total_steps), time.perf_counter()
    last = start
    for global_batch, micro in batches.epoch(epoch):
        lr = learning_rate(p, epoch, state.step, trainer.total_steps)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        result = train_step(trainer, micro, len(global_batch))
        loss = result.loss_sum / len(global_batch)
        skipped, dropped = skipped + result.skipped, dropped + result.dropped
        losses += [] if result.skipped else [loss]
        utterances, audio_s = utterances + len(global_batch), audio_s + float(durations[global_batch].sum())
        now = time.perf_counter()
        step_scalars = {
            "train/lr": lr,
            "train/grad_norm": result.grad_norm,
            "train/utt_per_s": len(global_batch) / (now - last),
        }
        board.scalars(state.step, step_scalars | ({} if result.skipped else {"train/loss": loss}))
        state.step, last = state.step + 1, now
        bar.set_postfix(loss=f"{loss:.2f}", utt_s=f"{utterances / (now - start):.1f}", skipped=skipped, refresh=False)
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    mean_loss = float(np.mean(losses)) if losses else float("nan")
    return EpochTraining(mean_loss, lr, seconds, utterances / seconds, audio_s / seconds, skipped, dropped)


# ---------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    return exit_status.run(lambda: train(parse_trainer_args(argv)))


def train(run: RunOptions, checked: preflight.Checked | None = None) -> ExitStatus:
    """The run: its checks (unless the launcher made them: `checked`), then a dry run or the timed run."""
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", CUDA_ALLOC_CONF)
    preflight.check_trainable(run.params)  # before joining any process group
    world = distributed.init(run.device, run.dist_backend, run.params.dist_timeout_s)
    completed = False
    try:
        checked = checked or preflight.check_run(run, world.device, main=world.main)
        status = preflight.dry_run(run, world, checked) if run.dry_run else fit(run, world, checked)
        completed = True
    except RuntimeError as err:  # a rank that hangs or dies: one error line, after dist_timeout_s at most
        failure = distributed.peer_failure(err, world, run.params.dist_timeout_s)
        if failure is None:
            raise
        raise failure from None
    finally:
        distributed.finish(world, completed)
    if world.distributed and status == ExitStatus.TARGET_MISSED:
        return ExitStatus.OK  # torchrun would report a rank's non-zero exit as a crash; result.json says "aborted"
    return status


def fit(run: RunOptions, world: World, checked: preflight.Checked) -> ExitStatus:
    """The timed run under a shared hold of the dataset directory's lock (a download or preparation
    started on it meanwhile stops at once, naming this run), its MLPerf log and TensorBoard files open."""
    p, saved = run.params, checked.resume_from
    if saved is not None and RunState.from_dict(saved["progress"]).finished(p):
        state = RunState.from_dict(saved["progress"])
        world.say(f"{run.results_dir}: the run already finished after {state.epoch} epochs; nothing to resume")
        return results.exit_status_of(results.status_of(state.reached(p.target_wer)))
    lock = DatasetDir(run.data_dir).lock(f"python -m pytorch.train (rank {world.rank})", shared=True)
    log = MLPerfLog(run.results_dir, enabled=world.main, append=saved is not None or run.restart > 0)
    board = tensorboard.EventWriter(run.results_dir / tensorboard.DIRECTORY, enabled=world.main)
    try:
        with lock:
            return timed_run(run, world, checked, log, board)
    finally:
        log.close()
        board.close()


def timed_run(run: RunOptions, world: World, checked: preflight.Checked, log: MLPerfLog, board) -> ExitStatus:
    """Init (logged: the splits, the model, a resumed state, the memory check), then the clock runs:
    epochs of training and evaluation until the stop rule. After an elastic restart the same run goes
    on: no second init or run_start, a `restart` event, and the clock counts the time lost."""
    p, saved = run.params, checked.resume_from
    if not run.restart:
        log.event("cache_clear", True)
        log.start("init_start")
    train_split = loader.open_training_split(run.data_dir, p)  # augmented as p says; validation never is
    stats = train_split.dataset.stats  # normalization=global: the training set's, for validation too
    val_split = loader.open_split(run.data_dir, p.val_manifest, stats=stats)
    batches = loader.TrainingBatches(train_split, p, world)
    trainer = build_trainer(p, world, batches.steps() * p.epochs, checked.recurrent)
    if stats is not None:  # kept in every checkpoint, so the model alone says how to normalise its input
        trainer.model.set_feature_stats(stats)
    state = RunState()
    if saved is not None:
        state = checkpoint.restore(saved, trainer.model, trainer.optimizer, trainer.scaler)
        state.resumed += 0 if run.restart else 1
        world.say(f"Resumed from {checkpoint.last_path(run.results_dir)} after epoch {state.epoch}")
    world.say(
        f"Training utterances: {len(train_split):,}; validation utterances: {len(val_split):,}; "
        f"recurrent layers compute in {trainer.recurrent.dtype} on the {trainer.recurrent.kernel} kernel"
    )
    if world.device.type == "cuda":  # a CPU has no device memory to run out of
        loss_of = lambda batch: micro_batch_loss(trainer.model, batch, p, world.device)  # noqa: E731
        fits = memory.check(trainer.model, trainer.optimizer, train_split, p, world, loss_of)
        world.say(f"Longest micro-batch ({fits.utterances} x {fits.seconds} s): peak {fits.peak_bytes / 2**30:.1f} GiB")
    if run.restart:
        log.event("restart", run.restart, metadata={"epoch_num": state.epoch})
        clock_start = saved["saved_at"] if saved else run_start_time(run.results_dir) or time.time()
    else:
        if world.main:
            results.write_params(run.results_dir, p.to_dict())
        log.start_run(p, (len(train_split), len(val_split)), p.accumulation_steps(world.size), trainer.recurrent)
        clock_start = time.time()
    val_loader = loader.evaluation_loader(val_split, p, world)
    return run_epochs(trainer, state, (batches, val_loader), (log, board), run, clock_start)


def run_epochs(trainer: Trainer, state: RunState, data, logs, run: RunOptions, clock_start: float) -> ExitStatus:
    """Train and evaluate epoch after epoch from state.epoch until the stop rule; run_stop is logged
    when the clock stops, before any saving. The run's time is state.train_seconds (earlier segments)
    plus this segment's from clock_start."""
    (p, world), (batches, val_loader), (log, board) = (trainer.p, trainer.world), data, logs
    stop_time = None
    for epoch in range(state.epoch, p.epochs):
        log.start("epoch_start", metadata={"epoch_num": epoch + 1})
        training = train_epoch(trainer, state, batches, epoch, board)
        log.end("epoch_stop", metadata={"epoch_num": epoch + 1})
        log.start("eval_start", metadata={"epoch_num": epoch + 1})
        counts, predictions = inference.evaluate(trainer.model, val_loader, world)
        log.end("eval_stop", metadata={"epoch_num": epoch + 1})
        log.event("eval_accuracy", counts.wer, metadata={"epoch_num": epoch + 1})
        metrics = results.EpochMetrics(
            epoch + 1,
            wer=counts.wer,
            wer_per_utterance_mean=counts.wer_per_utterance_mean,
            cer=counts.cer,
            **asdict(training),
        )
        state.epoch, state.metrics = epoch + 1, [*state.metrics, metrics]
        board.scalars(
            state.step, {"val/wer": counts.wer, "val/cer": counts.cer, "train/epoch_loss": training.train_loss}
        )
        world.say(metrics.summary())
        if state.finished(p):
            log.end("run_stop", metadata={"status": results.status_of(state.reached(p.target_wer))})
            stop_time = time.time()
        if world.main:
            save_epoch(trainer, state, predictions, run.results_dir, (stop_time or time.time()) - clock_start)
        if stop_time is not None:
            break
    status = results.status_of(state.reached(p.target_wer))
    seconds = state.train_seconds + stop_time - clock_start
    if world.main:
        computed = {"precision": p.precision, "fp32_math": p.fp32_math}
        computed |= {"recurrent_dtype": trainer.recurrent.dtype, "recurrent_kernel": trainer.recurrent.kernel}
        outcome = results.RunOutcome(status, state.metrics, seconds, state.resumed, computed, run.restart)
        results.write_result(run.results_dir, outcome, p.to_dict())
    world.say(f"Run {status}: {len(state.metrics)} epochs, {seconds:.1f} s to train; results in {run.results_dir}")
    return results.exit_status_of(status)


def save_epoch(trainer: Trainer, state: RunState, predictions, results_dir, seconds_this_run: float) -> None:
    """After an epoch (rank 0): checkpoints (last, and best by WER), metrics.jsonl, predictions, curves."""
    is_best = state.best_wer is None or state.metrics[-1].wer < state.best_wer
    state.best_wer = state.metrics[-1].wer if is_best else state.best_wer
    saved = RunState(**vars(state) | {"train_seconds": state.train_seconds + seconds_this_run})
    last = checkpoint.last_path(results_dir)
    checkpoint.save(last, checkpoint.snapshot(trainer.model, trainer.optimizer, trainer.scaler, trainer.p, saved))
    if is_best:
        checkpoint.link_or_copy(last, last.with_name("best.pt"))
    results.write_metrics(results_dir, state.metrics)
    results.write_predictions(results_dir, state.metrics[-1].epoch, predictions)
    if not results.plot_curves(results_dir, state.metrics, trainer.p.target_wer) and len(state.metrics) == 1:
        print("curves.png not drawn: matplotlib is not installed (the TensorBoard files hold the same curves)")


if __name__ == "__main__":
    sys.exit(main())
