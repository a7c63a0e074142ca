"""Train DeepSpeech2 until the validation WER reaches the target: the benchmark's one training loop.

    python -m pytorch.train --data-dir DIR --results-dir DIR [--resume] [--dry-run] [key=value ...]

One process, or one per device under torchrun (WORLD_SIZE > 1): every rank takes its share of each
global batch of p.batch_size utterances as p.gradient_accumulation_steps micro-batches, back-propagates
sum-CTC / global batch size and the gradients are summed over ranks, so the optimiser step is the same
whatever the world size. Exit status: 0 run completed (or --dry-run), 1 error, 2 bad parameters or
usage. Whether a completed run reached the target is result.json's status, success or aborted
(every epoch done, target not reached): under torchrun a non-zero exit of a rank is a crash.
"""

import argparse
import math
import os
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F

import params
from data.progress import progress_bar
from pytorch import checkpoint, loader, results
from pytorch.decode import ErrorCounts, greedy_decode
from pytorch.mlperf import MLPerfLog
from pytorch.model import MIN_FRAMES, DeepSpeech2, conv_frequencies

EXIT_SUCCESS, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
CTC = torch.nn.CTCLoss(blank=0, reduction="sum", zero_infinity=False)


class TrainError(RuntimeError):
    """A problem with the data, results directory or checkpoint that stops the run before training."""


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def sync_batchnorm(self) -> bool:
        """Several CUDA ranks take BatchNorm statistics over all ranks' micro-batches (see model.py)."""
        return self.distributed and self.device.type == "cuda"


@dataclass
class StepResult:
    loss_sum: float  # summed CTC of the kept utterances, over all ranks
    dropped: int  # utterances too short for their transcript, over all ranks
    skipped: bool  # non-finite loss somewhere: no optimiser step


# ---------------------------------------------------------------- setup


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pytorch.train",
        description="Train DeepSpeech2 on a prepared LibriSpeech dataset until the validation WER "
        "reaches target_wer. Exit status: 0 run completed (result.json status: success or aborted), "
        "1 error, 2 bad parameters.",
        epilog="Parameters (key=value), defaults from params.py:\n" + params.describe(params.make()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("LibriSpeech_dataset"), help="prepared dataset (default: %(default)s)"
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        help="where logs, metrics, predictions and checkpoints go (required unless --dry-run)",
    )
    parser.add_argument("--resume", action="store_true", help="continue from RESULTS_DIR/checkpoints/last.pt")
    parser.add_argument(
        "--dry-run", action="store_true", help="check parameters and data, print the model, do not train"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="parameter overrides, e.g. preset=demo lr=3e-4"
    )
    args = parser.parse_intermixed_args(argv)
    if args.results_dir is None and not args.dry_run:
        parser.error("--results-dir is required (unless --dry-run)")
    return args


def init_world() -> World:
    """One process (WORLD_SIZE unset or 1) or a torchrun rank with its process group."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return World(rank, size, device)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed)
    random.seed(seed)


def open_split(data_dir: Path, name: str, p: params.Params, max_duration: float = 0.0):
    """-> (rows, UtteranceDataset) of manifests/<name>.jsonl, rows optionally filtered by duration."""
    path = loader.manifest_path(data_dir, name)
    rows = loader.filter_rows(loader.read_manifest(path), max_duration)
    if not rows:
        raise TrainError(
            f"{path}: no utterances" + (f" of at most max_duration={max_duration} s" if max_duration > 0 else "")
        )
    return rows, loader.UtteranceDataset(data_dir, rows)


def make_loaders(p: params.Params, world: World, train, val):
    """(train loader, val loader); the train batches are set per epoch, the val shard is fixed."""
    pin = world.device.type == "cuda"
    train_loader = loader.make_loader(train[1], [], p.num_workers, pin)
    val_batches = loader.global_batches(len(val[0]), p.batch_size, False, p.seed, 0)[world.rank :: world.size]
    return train_loader, loader.make_loader(val[1], val_batches, p.num_workers, pin)


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 needs CUDA: float16 autocast with a GradScaler has no CPU path."""
    if precision == "fp16" and device.type != "cuda":
        raise params.ParamError(
            "precision='fp16': needs CUDA (float16 autocast with a GradScaler); use precision=bf16 or fp32 on CPU"
        )


def check_trainable(p: params.Params) -> None:
    """ParamError for what params.py accepts but training cannot do here: checked before any work.

    (Preparing, say, 13 MFCCs is fine; the reference's convolutions cannot take them.)
    """
    check_precision(p.precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        conv_frequencies(p.n_features)
    except ValueError as err:
        knob = f"n_mfcc={p.n_mfcc}" if p.feature == "mfcc" else f"window_size={p.window_size}"
        raise params.ParamError(f"{knob}: {err}") from None


def autocast(p: params.Params, device: torch.device):
    """Mixed precision around the model only; the CTC loss is always computed in fp32."""
    if p.precision == "fp32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if p.precision == "bf16" else torch.float16)


def make_optimizer(model: torch.nn.Module, p: params.Params) -> torch.optim.Optimizer:
    if p.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=p.lr, momentum=p.momentum, nesterov=True, weight_decay=p.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=p.lr, betas=(p.momentum, 0.999), weight_decay=p.weight_decay)


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


def min_frames_for(targets: list[torch.Tensor]) -> torch.Tensor:
    """Fewest CTC frames that can emit each transcript: its length plus one blank per repeated pair."""
    return torch.tensor([len(t) + int((t[1:] == t[:-1]).sum()) for t in targets], dtype=torch.long)


def ctc_loss(
    log_probs: torch.Tensor, out_lengths: torch.Tensor, targets: torch.Tensor, target_lengths: torch.Tensor
) -> torch.Tensor:
    """Summed CTC over the batch: log_probs (T, N, 29) -> scalar. fp32 whatever the autocast."""
    return CTC(log_probs.float(), targets, out_lengths, target_lengths)


def micro_batch_loss(model, batch, p: params.Params, device: torch.device) -> tuple[torch.Tensor, int, int]:
    """Forward one micro-batch -> (summed CTC of its alignable utterances, kept, dropped).

    An utterance whose output is shorter than its transcript needs (or empty) gives an infinite CTC:
    it is dropped here and counted, not left to poison the batch. With none kept the loss is a zero
    that still depends on the model, so its backward (and synchronised BatchNorm's collectives) still runs.
    """
    features, feature_lengths, targets, target_lengths, _ids = batch
    features = features.to(device, non_blocking=True)
    if features.shape[2] < MIN_FRAMES:  # a batch of only very short utterances: pad, they are dropped below
        features = F.pad(features, (0, MIN_FRAMES - features.shape[2]))
    with autocast(p, device):
        log_probs, out_lengths = model(features, feature_lengths.to(device))
    per_utt = list(torch.split(targets, target_lengths.tolist()))
    keep = (out_lengths.cpu() >= min_frames_for(per_utt)) & (out_lengths.cpu() > 0)
    kept = int(keep.sum())
    if kept == 0:
        return log_probs.sum() * 0.0, 0, len(per_utt)
    kept_targets = torch.cat([t for t, k in zip(per_utt, keep.tolist()) if k]).to(device)
    index = keep.nonzero().squeeze(1).to(device)
    loss = ctc_loss(
        log_probs.index_select(1, index), out_lengths.to(device)[index], kept_targets, target_lengths.to(device)[index]
    )
    return loss, kept, len(per_utt) - kept


def any_rank(flag: bool, world: World) -> bool:
    """True if flag is True on any rank (every rank must call it)."""
    if not world.distributed:
        return flag
    t = torch.tensor([float(flag)], device=world.device)
    dist.all_reduce(t)
    return bool(t.item() > 0)


def all_reduce_gradients(model: torch.nn.Module) -> None:
    """Sum every gradient over ranks; a rank with no data this step contributes zeros."""
    for param in model.parameters():
        if param.requires_grad:
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            dist.all_reduce(param.grad)


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
        self.sums = [torch.zeros_like(t) for t in self.buffers]
        self.forwards = 0

    def before_forward(self) -> None:
        self.restore()

    def after_forward(self) -> None:
        for total, t in zip(self.sums, self.buffers):
            total += t
        self.forwards += 1

    def restore(self) -> None:
        for t, t0 in zip(self.buffers, self.start):
            t.copy_(t0)

    @torch.no_grad()
    def finish(self, world: World) -> None:
        """Set the statistics to the mean update over every micro-batch of every rank."""
        if not self.buffers:
            return
        flat = torch.cat(
            [t.flatten().double() for t in self.sums]
            + [torch.tensor([float(self.forwards)], dtype=torch.float64, device=self.sums[0].device)]
        )
        if world.distributed:
            dist.all_reduce(flat)
        forwards = float(flat[-1])
        if forwards == 0:
            return self.restore()
        for t, total in zip(self.buffers, torch.split(flat[:-1], [t.numel() for t in self.buffers])):
            t.copy_((total / forwards).view_as(t))


def train_step(
    model, optimizer, scaler, micro_batches, global_count: int, p: params.Params, world: World
) -> StepResult:
    """One optimiser step over this rank's micro-batches of a global batch of global_count utterances.

    Each micro-batch back-propagates its summed CTC / global_count, so accumulated (and all-reduced)
    gradients are those of the mean loss of the global batch. A non-finite loss on any micro-batch of
    any rank, a non-finite gradient norm, or a global batch with no alignable utterance skips the
    whole step: nothing non-finite is back-propagated, the gradients are cleared and the BatchNorm
    statistics are put back, so neither the weights nor the optimiser state move.
    """
    optimizer.zero_grad(set_to_none=True)
    stats = RunningStats(model)
    loss_sum, kept, dropped, finite = 0.0, 0, 0, True
    for batch in micro_batches:
        stats.before_forward()
        loss, n_kept, n_dropped = micro_batch_loss(model, batch, p, world.device)
        stats.after_forward()
        kept, dropped = kept + n_kept, dropped + n_dropped
        bad = not bool(torch.isfinite(loss))
        if world.sync_batchnorm:
            # Synchronised BatchNorm's backward is collective too: every rank runs it, or none does.
            bad = any_rank(bad, world)
        finite = finite and not bad
        if not finite:
            continue  # the step is lost; the remaining forwards still run, for synchronised BatchNorm
        loss_sum += loss.item()
        scaled = loss / global_count
        (scaler.scale(scaled) if scaler is not None else scaled).backward()
    summary = torch.tensor([0.0 if finite else 1.0, loss_sum, kept, dropped], dtype=torch.float64, device=world.device)
    if world.distributed:
        dist.all_reduce(summary)
    skipped, loss_sum, kept, dropped = bool(summary[0] > 0), float(summary[1]), int(summary[2]), int(summary[3])
    if not skipped and kept > 0:
        if world.distributed:
            all_reduce_gradients(model)
        if scaler is not None:
            scaler.unscale_(optimizer)
        # clip_grad_norm_ returns the norm before clipping; inf (no clipping) still measures it.
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), p.max_norm if p.max_norm > 0 else float("inf"))
        if scaler is not None:
            scaler.step(optimizer)  # skips the update itself on inf/NaN gradients and lowers the scale
            scaler.update()
        elif bool(torch.isfinite(norm)):
            optimizer.step()
        skipped = not bool(torch.isfinite(norm))
    if skipped or kept == 0:
        optimizer.zero_grad(set_to_none=True)
        stats.restore()
        return StepResult(loss_sum, dropped, True)
    stats.finish(world)
    return StepResult(loss_sum, dropped, False)


# ---------------------------------------------------------------- epochs


def train_epoch(
    model,
    optimizer,
    scaler,
    rows,
    data_loader,
    p: params.Params,
    world: World,
    epoch: int,
    first_step: int,
    total_steps: int,
) -> dict:
    """One pass over the training set in (optionally shuffled) length-ordered batches -> epoch stats."""
    batches = loader.global_batches(len(rows), p.batch_size, p.shuffle_batches, p.seed, epoch)
    if world.sync_batchnorm:
        # Synchronised BatchNorm needs the same forwards on every rank: a tail batch too small to give every
        # micro-batch an utterance (fewer than world size x accumulation steps) is left out everywhere.
        batches = [b for b in batches if len(b) >= world.size * p.gradient_accumulation_steps]
    # Otherwise an empty tail micro-batch is left out: that rank simply contributes no gradient.
    mine = [
        [m for m in loader.micro_batches(b, world.size, p.gradient_accumulation_steps, world.rank) if m]
        for b in batches
    ]
    data_loader.batch_sampler.set([m for step in mine for m in step])
    data = iter(data_loader)
    model.train()
    losses, skipped, dropped, utterances, audio_s = [], 0, 0, 0, 0.0
    start = time.perf_counter()
    bar = progress_bar(total=len(batches), desc=f"epoch {epoch + 1}/{p.epochs}", unit="step", disable=not world.main)
    for i, (global_batch, micro_indices) in enumerate(zip(batches, mine)):
        lr = learning_rate(p, epoch, first_step + i, total_steps)
        for group in optimizer.param_groups:
            group["lr"] = lr
        result = train_step(model, optimizer, scaler, [next(data) for _ in micro_indices], len(global_batch), p, world)
        dropped += result.dropped
        skipped += result.skipped
        if not result.skipped:
            losses.append(result.loss_sum / len(global_batch))
        utterances += len(global_batch)
        audio_s += sum(rows[j]["duration"] for j in global_batch)
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
    return {
        "train_loss": float(np.mean(losses)) if losses else float("nan"),
        "lr": lr if batches else learning_rate(p, epoch, first_step, total_steps),
        "seconds": seconds,
        "utt_per_s": utterances / seconds,
        "audio_s_per_s": audio_s / seconds,
        "skipped_steps": skipped,
        "dropped_utterances": dropped,
        "steps": len(batches),
    }


@torch.no_grad()
def evaluate(
    model, rows, data_loader, p: params.Params, world: World
) -> tuple[ErrorCounts, list[tuple[str, str, str]]]:
    """Greedy-decode the validation set, sharded by batch over ranks -> (summed ErrorCounts, predictions)."""
    references = {row["id"]: row["transcript"] for row in rows}
    model.eval()
    counts, predictions = ErrorCounts(), []
    for features, feature_lengths, _targets, _target_lengths, ids in data_loader:
        features = features.to(world.device, non_blocking=True)
        if features.shape[2] < MIN_FRAMES:
            features = F.pad(features, (0, MIN_FRAMES - features.shape[2]))
        with autocast(p, world.device):
            log_probs, out_lengths = model(features, feature_lengths.to(world.device))
        for utt_id, hypothesis in zip(ids, greedy_decode(log_probs.float(), out_lengths)):
            counts.add(references[utt_id], hypothesis)
            predictions.append((utt_id, references[utt_id], hypothesis))
    if world.distributed:
        # Sum the raw counts, not the WERs: the corpus WER of the whole set, exactly.
        total = counts.as_tensor().to(world.device)
        dist.all_reduce(total)
        counts = ErrorCounts.from_tensor(total.cpu())
        gathered = [None] * world.size
        dist.all_gather_object(gathered, predictions)
        predictions = [row for part in gathered for row in part]
    return counts, predictions


# ---------------------------------------------------------------- the run


def prepare_results_dir(args, world: World) -> None:
    last = checkpoint.checkpoint_dir(args.results_dir) / "last.pt"
    if not args.resume and last.exists():
        raise TrainError(
            f"{args.results_dir}: holds a run already ({last}); pass --resume or choose another --results-dir"
        )
    if world.main:
        try:
            args.results_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TrainError(f"--results-dir {args.results_dir}: cannot create it ({err.strerror})") from None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        p = params.parse(args.overrides)
        check_trainable(p)
    except params.ParamError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    world = init_world()
    try:
        return run(args, p, world)
    except (TrainError, checkpoint.CheckpointError, loader.LoaderError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        if world.distributed:
            dist.destroy_process_group()


def run(args, p: params.Params, world: World) -> int:
    say = print if world.main else (lambda *a, **k: None)
    if not args.dry_run:
        prepare_results_dir(args, world)
    log = MLPerfLog(
        None if args.dry_run else args.results_dir, enabled=world.main and not args.dry_run, append=args.resume
    )
    try:
        log.event("cache_clear", True)
        log.start("init_start")
        seed_everything(p.seed)
        loader.check_features(args.data_dir, p)
        train_rows, train_set = open_split(args.data_dir, p.train_manifest, p, p.max_duration)
        val_rows, val_set = open_split(args.data_dir, p.val_manifest, p)
        model = DeepSpeech2(p)
        say(model)
        say(f"Number of parameters: {sum(t.numel() for t in model.parameters()):,}")
        say(
            f"Training utterances: {len(train_rows):,} ({p.train_manifest}); "
            f"validation utterances: {len(val_rows):,} ({p.val_manifest})"
        )
        if args.dry_run:
            say(f"Device: {world.device}, world size {world.size}. Dry run: not training.")
            return EXIT_SUCCESS
        return fit(args, p, world, log, model, (train_rows, train_set), (val_rows, val_set))
    finally:
        log.close()


def fit(args, p, world: World, log: MLPerfLog, model, train, val) -> int:
    """Init done up to the model: optimiser, resume, then the timed epochs and the stop rule."""
    say = print if world.main else (lambda *a, **k: None)
    model.to(world.device)
    # On CPU each micro-batch normalises over itself (as torch's SyncBatchNorm, which refuses CPU
    # tensors, would force anyway); several CUDA processes share their batch statistics.
    model.sync_batchnorm = world.sync_batchnorm
    optimizer = make_optimizer(model, p)
    scaler = torch.amp.GradScaler("cuda") if p.precision == "fp16" else None
    progress = {"epoch": 0, "step": 0, "metrics": [], "best_wer": None, "train_seconds": 0.0, "resumed": 0}
    ckpt_dir = checkpoint.checkpoint_dir(args.results_dir)
    if args.resume:
        state = checkpoint.load(ckpt_dir / "last.pt")
        checkpoint.check_compatible(state["params"], p, ckpt_dir / "last.pt")
        progress = checkpoint.restore(state, model, optimizer, scaler)
        progress["resumed"] += 1
        say(f"Resumed from {ckpt_dir / 'last.pt'} after epoch {progress['epoch']}")
    log.hyperparameters(p, len(train[0]), len(val[0]))
    if world.main:
        results.write_params(args.results_dir, p.to_dict())
    log.end("init_stop")
    log.start("run_start")
    run_start = time.time()
    steps_per_epoch = len(loader.global_batches(len(train[0]), p.batch_size, False, p.seed, 0))
    train_loader, val_loader = make_loaders(p, world, train, val)
    status, stop_time = "aborted", None
    if progress["metrics"] and progress["metrics"][-1]["wer"] <= p.target_wer:
        status = "success"  # resumed a run that had already met the target
    for epoch in range(progress["epoch"], p.epochs if status == "aborted" else progress["epoch"]):
        log.start("epoch_start", metadata={"epoch_num": epoch + 1})
        stats = train_epoch(
            model,
            optimizer,
            scaler,
            train[0],
            train_loader,
            p,
            world,
            epoch,
            progress["step"],
            steps_per_epoch * p.epochs,
        )
        log.end("epoch_stop", metadata={"epoch_num": epoch + 1})
        log.start("eval_start", metadata={"epoch_num": epoch + 1})
        counts, predictions = evaluate(model, val[0], val_loader, p, world)
        log.end("eval_stop", metadata={"epoch_num": epoch + 1})
        log.event("eval_accuracy", counts.wer, metadata={"epoch_num": epoch + 1})
        progress["step"] += stats.pop("steps")
        progress["epoch"] = epoch + 1
        metrics = {
            "epoch": epoch + 1,
            **stats,
            "wer": counts.wer,
            "wer_per_utterance_mean": counts.wer_per_utterance_mean,
            "cer": counts.cer,
        }
        progress["metrics"].append(metrics)
        say(
            f"epoch {epoch + 1}: train loss {stats['train_loss']:.3f}, WER {counts.wer:.2f}% (per-utterance mean "
            f"{counts.wer_per_utterance_mean:.2f}%), CER {counts.cer:.2f}%, {stats['utt_per_s']:.1f} utt/s, "
            f"{stats['skipped_steps']} skipped steps, {stats['dropped_utterances']} dropped utterances"
        )
        if counts.wer <= p.target_wer:
            status = "success"
        if status == "success" or epoch + 1 == p.epochs:
            # The clock stops when the target is met (or the last epoch is done), before any saving.
            log.end("run_stop", metadata={"status": status})
            stop_time = time.time()
        if world.main:
            save_epoch(
                args.results_dir,
                model,
                optimizer,
                scaler,
                p,
                progress,
                predictions,
                (stop_time or time.time()) - run_start,
            )
        if status == "success":
            break
    if stop_time is None:  # nothing was left to train: a resumed run that had already finished
        log.end("run_stop", metadata={"status": status})
        stop_time = time.time()
    seconds = progress["train_seconds"] + stop_time - run_start
    if world.main:
        results.write_result(
            args.results_dir, status, progress["metrics"], seconds, p.target_wer, p.to_dict(), progress["resumed"]
        )
        say(f"Run {status}: {len(progress['metrics'])} epochs, {seconds:.1f} s to train; results in {args.results_dir}")
    return EXIT_SUCCESS


def save_epoch(
    results_dir: Path, model, optimizer, scaler, p, progress: dict, predictions, seconds_this_run: float
) -> None:
    """After an epoch (rank 0): checkpoints, metrics.jsonl, predictions, curves."""
    metrics = progress["metrics"]
    wer = metrics[-1]["wer"]
    is_best = progress["best_wer"] is None or wer < progress["best_wer"]
    if is_best:
        progress["best_wer"] = wer
    saved = dict(progress, train_seconds=progress["train_seconds"] + seconds_this_run)
    bare = getattr(model, "module", model)
    ckpt_dir = checkpoint.checkpoint_dir(results_dir)
    checkpoint.save(ckpt_dir / "last.pt", checkpoint.snapshot(bare, optimizer, scaler, p, saved))
    if is_best:
        checkpoint.link_or_copy(ckpt_dir / "last.pt", ckpt_dir / "best.pt")
    results.write_metrics(results_dir, metrics)
    results.write_predictions(results_dir, metrics[-1]["epoch"], predictions)
    results.plot_curves(results_dir, metrics, p.target_wer)


if __name__ == "__main__":
    sys.exit(main())
