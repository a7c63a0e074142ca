"""Train DeepSpeech2 until the validation WER reaches the target: the benchmark's one training loop.

    python -m pytorch.train --data-dir DIR --results-dir DIR [--resume] [--dry-run] [key=value ...]

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

import argparse
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import exit_status
import params
from data.dataset_dir import DatasetDir
from data.progress import progress_bar
from exit_status import ExitStatus, Failure
from pytorch import checkpoint, distributed, inference, loader, precision, results
from pytorch.distributed import World
from pytorch.mlperf import MLPerfLog
from pytorch.model import DeepSpeech2, conv_frequencies, probe_recurrent_dtype

CTC = torch.nn.CTCLoss(blank=0, reduction="sum", zero_infinity=False)
# Allocator default for long, ever-changing batch shapes: fewer fragmentation OOMs. Set before CUDA starts.
CUDA_ALLOC_CONF = "expandable_segments:True"


class TrainError(Failure):
    """A problem with the results directory, the data or a resume that stops the run (exit status 1)."""


@dataclass
class RunState:
    """Where a run stands: what a checkpoint stores besides the tensors, and what a resume continues."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken (skipped ones included): the lr schedule's clock
    metrics: list[dict] = field(default_factory=list)  # one row per completed epoch (results.METRIC_KEYS)
    best_wer: float | None = None
    train_seconds: float = 0.0  # timed seconds of the segments before this one (resumed runs)
    resumed: int = 0  # times this run was resumed; MLPerf times only unbroken runs

    def reached(self, target_wer: float) -> bool:
        return bool(self.metrics) and self.metrics[-1]["wer"] <= target_wer


@dataclass
class Trainer:
    """Everything an optimiser step uses."""

    p: params.Params
    world: World
    model: DeepSpeech2  # the bare model: evaluation and checkpoints
    ddp: torch.nn.Module  # what training runs forward through: DistributedDataParallel(model), or model
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    total_steps: int
    recurrent_dtype: str  # what the recurrent layers really compute in on this device (probed)


@dataclass
class StepResult:
    loss_sum: float  # summed CTC of the kept utterances, over all ranks
    dropped: int  # utterances too short for their transcript, over all ranks
    skipped: bool  # no optimiser step: a non-finite loss or gradient, or nothing alignable


# ---------------------------------------------------------------- set-up


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.train",
        description="Train DeepSpeech2 on a prepared LibriSpeech dataset until the validation WER "
        "reaches target_wer. Exit status: 0 target reached, 3 every epoch run without reaching it, "
        "1 error, 2 bad parameters (under torchrun a completed run exits 0; see result.json).",
        epilog="Parameters (key=value), defaults from params.py:\n" + params.describe(params.make()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir", type=Path, default=loader.default_data_dir(), help="prepared dataset (default: %(default)s)"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="where logs, metrics, predictions and checkpoints go (required unless --dry-run)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from RESULTS_DIR/checkpoints/last.pt")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the parameters (and the data, if there), print the model; no training",
    )
    parser.add_argument("--device", default="auto", help="auto (this rank's GPU, else the CPU), cpu, cuda or cuda:N")
    parser.add_argument(
        "--dist-backend",
        choices=distributed.BACKENDS,
        help="nccl (default between GPUs) or gloo (CPU; two ranks on one GPU)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="parameter overrides, e.g. preset=demo lr=3e-4"
    )
    args = parser.parse_intermixed_args(argv)
    if args.results_dir is None and not args.dry_run:
        parser.error("--results-dir is required (unless --dry-run)")
    return args


def check_trainable(p: params.Params) -> None:
    """ParamError for what params.py accepts but training cannot do: checked before any work.

    (Preparing, say, 13 MFCCs is fine; the reference's convolutions cannot take them.)
    """
    try:
        conv_frequencies(p.n_features)
    except ValueError as err:
        knob = f"n_mfcc={p.n_mfcc}" if p.feature == "mfcc" else f"window_size={p.window_size}"
        raise params.ParamError(f"{knob}: {err}") from None


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


def build_trainer(p: params.Params, world: World, total_steps: int) -> Trainer:
    """Model (on the device, DDP-wrapped for several ranks), optimiser and GradScaler, after probing
    what the recurrent layers really compute in on this device (PrecisionError if they cannot).
    Seeds every generator first thing after the probe, so the initial weights depend on p.seed only."""
    precision.set_fp32_math(p.fp32_math)
    recurrent = str(probe_recurrent_dtype(p, world.device)).removeprefix("torch.")
    seed_everything(p.seed)
    model = DeepSpeech2(p).to(world.device)
    model.sync_batchnorm = world.sync_batchnorm
    ddp = distributed.wrap(model, world)
    return Trainer(
        p, world, model, ddp, make_optimizer(model, p), precision.grad_scaler(p.precision), total_steps, recurrent
    )


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


class RunningStats:
    """BatchNorm running statistics of one optimiser step, made independent of how it is split.

    Every micro-batch updates the running means/variances from the same starting point and the step
    keeps the mean of those updates over all micro-batches of all ranks. So one process with N
    accumulation steps and N processes end the step with the same statistics, and all ranks hold
    the same model (what they evaluate and what rank 0 checkpoints).
    """

    def __init__(self, model: torch.nn.Module):
        self.buffers = [t for name, t in model.named_buffers() if name.endswith(("running_mean", "running_var"))]
        self.start = [t.clone() for t in self.buffers]
        self.sums = torch.zeros(sum(t.numel() for t in self.buffers), dtype=torch.float64, device=self.start[0].device)

    def before_forward(self) -> None:
        self.restore()

    def after_forward(self) -> None:
        self.sums += torch.cat([t.flatten() for t in self.buffers]).double()

    def restore(self) -> None:
        for t, t0 in zip(self.buffers, self.start):
            t.copy_(t0)

    @torch.no_grad()
    def finish(self, sums: torch.Tensor, forwards: int) -> None:
        """Set the statistics to the mean update: `sums` over all ranks' `forwards` micro-batches."""
        if forwards == 0:
            return self.restore()
        for t, total in zip(self.buffers, torch.split(sums / forwards, [t.numel() for t in self.buffers])):
            t.copy_(total.view_as(t))


def train_step(trainer: Trainer, micro_batches: list[loader.Batch], global_count: int) -> StepResult:
    """One optimiser step over this rank's micro-batches of a global batch of global_count utterances.

    Each micro-batch back-propagates its summed CTC / global_count, so the accumulated gradients,
    summed over ranks by DDP, are those of the mean loss of the global batch. The step is skipped (no
    weight, optimiser state or BatchNorm statistic moves) if the global batch has no alignable
    utterance or its loss or gradient norm is not finite anywhere. The host reads from the device once:
    the step's summary (loss, counts, gradient norm), after one all-reduce.
    """
    p, world, optimizer, scaler = trainer.p, trainer.world, trainer.optimizer, trainer.scaler
    optimizer.zero_grad(set_to_none=True)
    stats = RunningStats(trainer.model)
    loss_sum = torch.zeros((), dtype=torch.float64, device=world.device)
    kept = dropped = forwards = 0
    for k, batch in enumerate(micro_batches):
        dropped += batch.dropped
        if len(batch) == 0 and not world.distributed:
            continue  # one process: nothing to do; several: every rank must take part (see micro_batch_loss)
        last = k == len(micro_batches) - 1
        stats.before_forward()
        # DDP all-reduces the gradients in the backward pass of the last micro-batch only.
        with nullcontext() if last or not world.distributed else trainer.ddp.no_sync():
            loss = micro_batch_loss(trainer.ddp, batch, p, world.device)
            scaled = loss / global_count
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if len(batch):
            stats.after_forward()
            kept, forwards = kept + len(batch), forwards + 1
        loss_sum += loss.detach().double()
    if scaler is not None:
        scaler.unscale_(optimizer)
    # clip_grad_norm_ returns the norm before clipping; inf (no clipping) still measures it.
    norm = torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), p.max_norm if p.max_norm > 0 else math.inf)
    counts = torch.tensor([kept, dropped, forwards], dtype=torch.float64)
    summary = torch.cat([counts.to(world.device, non_blocking=True), loss_sum.view(1), stats.sums])
    distributed.all_reduce_(summary, world)
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
    return StepResult(loss_total, int(dropped), not step)


# ---------------------------------------------------------------- epochs


def train_epoch(trainer: Trainer, state: RunState, split: loader.Split, data_loader, epoch: int) -> dict:
    """One pass over the training set in (optionally shuffled) length-ordered batches -> epoch stats."""
    p, world = trainer.p, trainer.world
    batches = loader.global_batches(len(split), p.batch_size, p.shuffle_batches, p.seed, epoch)
    accumulation = p.accumulation_steps(world.size)
    mine = [loader.micro_batches(b, world.size, accumulation, world.rank) for b in batches]
    data_loader.batch_sampler.set([m for step in mine for m in step], epoch)
    data = iter(data_loader)
    trainer.ddp.train()
    losses, skipped, dropped, utterances, audio_s = [], 0, 0, 0, 0.0
    start = time.perf_counter()
    bar = progress_bar(total=len(batches), desc=f"epoch {epoch + 1}/{p.epochs}", unit="step", disable=not world.main)
    lr = learning_rate(p, epoch, state.step, trainer.total_steps)
    for i, (global_batch, micro_indices) in enumerate(zip(batches, mine)):
        lr = learning_rate(p, epoch, state.step + i, trainer.total_steps)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        result = train_step(trainer, [next(data) for _ in micro_indices], len(global_batch))
        dropped += result.dropped
        skipped += result.skipped
        if not result.skipped:
            losses.append(result.loss_sum / len(global_batch))
        utterances += len(global_batch)
        audio_s += float(split.manifest.duration[global_batch].sum())
        elapsed = time.perf_counter() - start
        bar.set_postfix(
            loss=f"{losses[-1]:.2f}" if losses else "-",
            utt_s=f"{utterances / elapsed:.1f}",
            audio_s_s=f"{audio_s / elapsed:.1f}",
            skipped=skipped,
            dropped=dropped,
            refresh=False,
        )
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    state.step += len(batches)
    return {
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "lr": lr,
        "seconds": seconds,
        "utt_per_s": utterances / seconds,
        "audio_s_per_s": audio_s / seconds,
        "skipped_steps": skipped,
        "dropped_utterances": dropped,
    }


# ---------------------------------------------------------------- memory


def largest_micro_batch(split: loader.Split, p: params.Params, world: World) -> tuple[int, int]:
    """(utterances, frames of the longest) of the micro-batch of this run with the most padded frames.

    Manifests are in ascending duration and batches are contiguous runs of them, so each
    micro-batch's longest utterance is its last; shuffling changes only the order of the batches.
    With tempo perturbation an utterance may grow by 1 / tempo_low.
    """
    frames = split.manifest.frames
    best = (0, 0)
    for global_batch in loader.global_batches(len(split), p.batch_size, False, p.seed, 0):
        for part in loader.split_evenly(global_batch, world.size * p.accumulation_steps(world.size)):
            if part and len(part) * int(frames[part[-1]]) > best[0] * best[1]:
                best = (len(part), int(frames[part[-1]]))
    stretch = 1.0 / p.tempo_low if p.tempo_perturb and p.tempo_low < 1 else 1.0
    return best[0], math.ceil(best[1] * stretch)


def check_memory(trainer: Trainer, split: loader.Split) -> dict:
    """One forward and backward of the largest micro-batch the run will see, with room for the
    optimiser's state, before the clock starts: an out-of-memory hours into epoch 1 (where the
    longest utterances are) becomes an error now, naming the knobs that size it.

    Leaves the model, gradients, BatchNorm statistics and optimiser untouched. Returns the figures
    (peak_bytes on CUDA only). The trainer runs it on CUDA; on a CPU there is no device memory to run out of.
    """
    p, world = trainer.p, trainer.world
    cuda = world.device.type == "cuda"
    n, frames = largest_micro_batch(split, p, world)
    seconds = round((frames - 1) * p.hop_length / p.sample_rate, 2)
    stats = RunningStats(trainer.model)
    state_bytes = sum(t.numel() * t.element_size() for t in trainer.model.parameters())
    state_bytes *= 2 if p.optimizer == "adamw" else 1  # AdamW: two moments; SGD: the momentum buffer
    if cuda:
        torch.cuda.reset_peak_memory_stats(world.device)
    try:
        optimizer_state = torch.empty(state_bytes, dtype=torch.uint8, device=world.device)
        batch = loader.Batch.synthetic(n, p.n_features, frames, torch.Generator().manual_seed(p.seed))
        trainer.model.train()
        micro_batch_loss(trainer.model, batch, p, world.device).backward()
        if cuda:
            torch.cuda.synchronize(world.device)
        del optimizer_state
    except torch.OutOfMemoryError:
        raise TrainError(
            f"out of memory on {world.device} with the longest micro-batch of this run: {n} utterances of up to "
            f"{seconds} s ({frames} frames), from batch_size={p.batch_size} over {world.size} process(es) x "
            f"{p.accumulation_steps(world.size)} accumulation steps (gradient_accumulation_steps="
            f"{p.gradient_accumulation_steps}, micro_batch_size={p.micro_batch_size}) and "
            f"max_duration={p.max_duration:g}; "
            "raise gradient_accumulation_steps (or lower micro_batch_size), lower batch_size or set max_duration "
            "(README: memory guidance)"
        ) from None
    finally:
        trainer.optimizer.zero_grad(set_to_none=True)
        stats.restore()
        if cuda:
            torch.cuda.empty_cache()
    peak = torch.cuda.max_memory_allocated(world.device) if cuda else None
    return {"utterances": n, "frames": frames, "seconds": seconds, "peak_bytes": peak}


# ---------------------------------------------------------------- the run


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: train(args))


def train(args: argparse.Namespace) -> ExitStatus:
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", CUDA_ALLOC_CONF)
    p = params.parse(args.overrides)
    check_trainable(p)
    world = distributed.init(args.device, args.dist_backend)
    completed = False
    try:
        precision.check(p.precision, world.device)
        status = dry_run(args, p, world) if args.dry_run else fit(args, p, world)
        completed = True
    finally:
        distributed.finish(world, completed)
    if world.distributed and status == ExitStatus.TARGET_MISSED:
        return ExitStatus.OK  # torchrun would report a rank's non-zero exit as a crash; result.json says "aborted"
    return status


def dry_run(args, p: params.Params, world: World) -> ExitStatus:
    """Print the model and check the parameters; check the data only where there is some."""
    say = print if world.main else (lambda *a, **k: None)
    model = DeepSpeech2(p)
    say(model)
    say(f"Number of parameters: {sum(t.numel() for t in model.parameters()):,}")
    precision.set_fp32_math(p.fp32_math)
    recurrent = str(probe_recurrent_dtype(p, world.device)).removeprefix("torch.")
    say(
        f"Device: {world.device}, world size {world.size}; precision {p.precision}: recurrent layers compute in "
        f"{recurrent}, fp32 math {p.fp32_math}"
    )
    if not args.data_dir.exists():
        say(f"No prepared dataset at {args.data_dir}: data not checked (./download_dataset.sh prepares it).")
    else:
        loader.check_features(args.data_dir, p)
        train_split = loader.open_split(args.data_dir, p.train_manifest, p.max_duration)
        val_split = loader.open_split(args.data_dir, p.val_manifest)
        say(
            f"Training utterances: {len(train_split):,} ({p.train_manifest}); "
            f"validation utterances: {len(val_split):,} ({p.val_manifest})"
        )
    say("Dry run: not training.")
    return ExitStatus.OK


def prepare_results_dir(args, world: World) -> Path:
    """The results directory, created and writable, holding no other run unless --resume."""
    results_dir, ckpt_dir = args.results_dir, checkpoint.checkpoint_dir(args.results_dir)
    last = ckpt_dir / "last.pt"
    if not args.resume and last.exists():
        raise TrainError(f"{results_dir}: holds a run already ({last}); pass --resume or choose another --results-dir")
    if world.main:
        try:
            results_dir.mkdir(parents=True, exist_ok=True)
            probe = results_dir / f".write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise TrainError(f"--results-dir: {exit_status.describe_os_error(err, results_dir)}") from None
        checkpoint.remove_stale_temporaries(ckpt_dir)  # a killed run's half-written checkpoint
    return results_dir


def load_resume_state(args, p: params.Params) -> dict | None:
    """The checkpoint a --resume continues, checked against p before anything is logged or written."""
    if not args.resume:
        return None
    path = checkpoint.checkpoint_dir(args.results_dir) / "last.pt"
    if not path.is_file():
        raise TrainError(f"{path}: no checkpoint to resume from (run without --resume first)")
    saved = checkpoint.load(path)
    checkpoint.check_compatible(saved["params"], p, path)
    return saved


def fit(args, p: params.Params, world: World) -> ExitStatus:
    """The data checked, then the timed run under a shared hold of the dataset directory's lock: a
    download or preparation started on the same directory meanwhile stops at once, naming this run."""
    loader.check_features(args.data_dir, p)  # before anything is created or logged
    with DatasetDir(args.data_dir).lock(f"python -m pytorch.train (rank {world.rank})", shared=True):
        return timed_run(args, p, world)


def timed_run(args, p: params.Params, world: World) -> ExitStatus:
    """Init (logged), then epochs of training and evaluation until the stop rule."""
    say = print if world.main else (lambda *a, **k: None)
    results_dir = prepare_results_dir(args, world)
    saved = load_resume_state(args, p)
    if saved is not None and _finished(RunState(**saved["progress"]), p):
        state = RunState(**saved["progress"])
        say(f"{results_dir}: the run already finished after {state.epoch} epochs; nothing to resume")
        return ExitStatus.OK if state.reached(p.target_wer) else ExitStatus.TARGET_MISSED
    log = MLPerfLog(results_dir, enabled=world.main, append=saved is not None)
    try:
        log.event("cache_clear", True)
        log.start("init_start")
        train_split = loader.open_training_split(args.data_dir, p)  # augmented as p says; val never is
        val_split = loader.open_split(args.data_dir, p.val_manifest)
        steps_per_epoch = len(loader.global_batches(len(train_split), p.batch_size, False, p.seed, 0))
        trainer = build_trainer(p, world, steps_per_epoch * p.epochs)
        state = RunState()
        if saved is not None:
            state = RunState(**checkpoint.restore(saved, trainer.model, trainer.optimizer, trainer.scaler))
            state.resumed += 1
            say(f"Resumed from {checkpoint.checkpoint_dir(results_dir) / 'last.pt'} after epoch {state.epoch}")
        say(
            f"Training utterances: {len(train_split):,}; validation utterances: {len(val_split):,}; "
            f"recurrent layers compute in {trainer.recurrent_dtype}"
        )
        memory = check_memory(trainer, train_split) if world.device.type == "cuda" else None
        if memory:
            say(
                f"Longest micro-batch ({memory['utterances']} x {memory['seconds']} s): peak "
                f"{memory['peak_bytes'] / 2**30:.1f} GiB of GPU memory"
            )
        log.hyperparameters(p, len(train_split), len(val_split), p.accumulation_steps(world.size))
        log.event("recurrent_dtype", trainer.recurrent_dtype)  # what the GRUs really compute in
        if world.main:
            results.write_params(results_dir, p.to_dict())
        log.end("init_stop")
        log.start("run_start")
        return run_epochs(trainer, state, (train_split, val_split), log, results_dir)
    finally:
        log.close()


def _finished(state: RunState, p: params.Params) -> bool:
    return state.reached(p.target_wer) or state.epoch >= p.epochs


def run_epochs(trainer: Trainer, state: RunState, splits, log: MLPerfLog, results_dir: Path) -> ExitStatus:
    """Epochs from state.epoch until the target is met or p.epochs are done; run_stop when the clock stops."""
    p, world = trainer.p, trainer.world
    say = print if world.main else (lambda *a, **k: None)
    train_split, val_split = splits
    run_start = time.time()
    pin = world.device.type == "cuda"
    train_loader = loader.make_loader(train_split.dataset, [], p.num_workers, pin, training=True)
    # Validation in batches of the training micro-batch's size (the batch size changes no result: the
    # model is padding-blind).
    val_batches = loader.global_batches(len(val_split), p.micro_batch(world.size), False, p.seed, 0)
    val_batches = val_batches[world.rank :: world.size]
    val_loader = loader.make_loader(val_split.dataset, val_batches, p.num_workers, pin)
    stop_time = None
    for epoch in range(state.epoch, p.epochs):
        log.start("epoch_start", metadata={"epoch_num": epoch + 1})
        stats = train_epoch(trainer, state, train_split, train_loader, epoch)
        log.end("epoch_stop", metadata={"epoch_num": epoch + 1})
        log.start("eval_start", metadata={"epoch_num": epoch + 1})
        counts, predictions = inference.evaluate(trainer.model, val_loader, world)
        log.end("eval_stop", metadata={"epoch_num": epoch + 1})
        log.event("eval_accuracy", counts.wer, metadata={"epoch_num": epoch + 1})
        state.epoch = epoch + 1
        state.metrics.append(
            {
                "epoch": epoch + 1,
                **stats,
                "wer": counts.wer,
                "wer_per_utterance_mean": counts.wer_per_utterance_mean,
                "cer": counts.cer,
            }
        )
        say(
            f"epoch {epoch + 1}: train loss {stats['train_loss']:.3f}, WER {counts.wer:.2f}% (per-utterance mean "
            f"{counts.wer_per_utterance_mean:.2f}%), CER {counts.cer:.2f}%, {stats['utt_per_s']:.1f} utt/s, "
            f"{stats['skipped_steps']} skipped steps, {stats['dropped_utterances']} dropped utterances"
        )
        if _finished(state, p):
            # The clock stops when the target is met (or the last epoch is done), before any saving.
            log.end("run_stop", metadata={"status": "success" if state.reached(p.target_wer) else "aborted"})
            stop_time = time.time()
        if world.main:
            save_epoch(trainer, state, predictions, results_dir, (stop_time or time.time()) - run_start)
        if stop_time is not None:
            break
    status = "success" if state.reached(p.target_wer) else "aborted"
    seconds = state.train_seconds + stop_time - run_start
    if world.main:
        computed = {"precision": p.precision, "recurrent_dtype": trainer.recurrent_dtype, "fp32_math": p.fp32_math}
        outcome = results.RunOutcome(status, state.metrics, seconds, state.resumed, computed)
        results.write_result(results_dir, outcome, p.to_dict())
        say(f"Run {status}: {len(state.metrics)} epochs, {seconds:.1f} s to train; results in {results_dir}")
    return ExitStatus.OK if status == "success" else ExitStatus.TARGET_MISSED


def save_epoch(trainer: Trainer, state: RunState, predictions, results_dir: Path, seconds_this_run: float) -> None:
    """After an epoch (rank 0): checkpoints, metrics.jsonl, predictions, curves."""
    wer = state.metrics[-1]["wer"]
    is_best = state.best_wer is None or wer < state.best_wer
    if is_best:
        state.best_wer = wer
    saved = asdict(state) | {"train_seconds": state.train_seconds + seconds_this_run}
    ckpt_dir = checkpoint.checkpoint_dir(results_dir)
    snapshot = checkpoint.snapshot(trainer.model, trainer.optimizer, trainer.scaler, trainer.p, saved)
    checkpoint.save(ckpt_dir / "last.pt", snapshot)
    if is_best:
        checkpoint.link_or_copy(ckpt_dir / "last.pt", ckpt_dir / "best.pt")
    results.write_metrics(results_dir, state.metrics)
    results.write_predictions(results_dir, state.metrics[-1]["epoch"], predictions)
    results.plot_curves(results_dir, state.metrics, trainer.p.target_wer)


if __name__ == "__main__":
    sys.exit(main())
