"""Inference with a DeepSpeech2 model: loading one from a checkpoint, decoding batches, and decoding a
whole split to its errors and throughput.

Used by training (validation after every epoch), pytorch.evaluate, pytorch.transcribe and
bench.inference_latency. It never imports the training loop. The model handles precision and
short inputs itself (pytorch.model), so inference is: features -> model -> greedy decode -> counts.
"""

import dataclasses
import time
from pathlib import Path

import torch
import torch.distributed as dist

import params
from pytorch import checkpoint, distributed, loader, precision
from pytorch.decode import ErrorCounts, greedy_decode
from pytorch.distributed import World
from pytorch.model import DeepSpeech2


def load_model(path, device, precision_override: str | None = None) -> tuple[DeepSpeech2, params.Params]:
    """(model in eval mode on device, its Params) from a checkpoint written by training, computing in
    `precision_override` when given (None: the checkpoint's precision).

    Raises checkpoint.CheckpointError naming the file when it is missing, unreadable or does not hold
    a model of its own parameters, and precision.PrecisionError for fp16 without CUDA.
    """
    path = Path(path)
    state = checkpoint.load(path)
    try:
        p = params.make(state["params"])
        if precision_override is not None:
            p = dataclasses.replace(p, precision=precision_override)
        precision.check(p.precision, torch.device(device))
        model = DeepSpeech2(p)
        model.load_state_dict(state["model"])
    except KeyError as err:
        raise checkpoint.CheckpointError(f"{path}: checkpoint lacks the entry {err}") from None
    except (params.ParamError, RuntimeError, ValueError, TypeError) as err:
        if isinstance(err, precision.PrecisionError):
            raise
        raise checkpoint.CheckpointError(f"{path}: checkpoint does not hold a usable model: {err}") from None
    return model.to(device).eval(), p


@torch.no_grad()
def decode_batch(model, features: torch.Tensor, lengths: torch.Tensor) -> list[str]:
    """Padded features (N, F, T) on the model's device, true lengths (N,) -> N greedy transcripts."""
    log_probs, out_lengths = model(features, lengths)
    return greedy_decode(log_probs, out_lengths)


@torch.no_grad()
def evaluate(model, data_loader, world: World) -> tuple[ErrorCounts, list[tuple[str, str, str]]]:
    """Greedy-decode every batch of data_loader (this rank's shard) -> (ErrorCounts summed over ranks,
    predictions (id, reference, hypothesis) of all ranks, rank 0's first)."""
    model.eval()
    counts, predictions = ErrorCounts(), []
    for batch in data_loader:
        features = batch.features.to(world.device, non_blocking=True)
        for utt_id, reference, hypothesis in zip(
            batch.ids, batch.transcripts, decode_batch(model, features, batch.lengths)
        ):
            counts.add(reference, hypothesis)
            predictions.append((utt_id, reference, hypothesis))
    if world.distributed:
        # Sum the raw counts, not the WERs: the corpus WER of the whole set, exactly.
        total = counts.as_tensor().to(world.device)
        dist.all_reduce(total)
        counts = ErrorCounts.from_tensor(total.cpu())
        gathered = [None] * world.size
        dist.all_gather_object(gathered, predictions)
        predictions = [row for part in gathered for row in part]
    return counts, predictions


@dataclasses.dataclass
class SplitResult:
    """A split greedy-decoded by one process: its errors, predictions and how fast it went."""

    counts: ErrorCounts
    predictions: list[tuple[str, str, str]]  # (id, reference, hypothesis) per utterance, in batch order
    utterances: int
    audio_s: float
    seconds: float  # decoding wall time, data loading included


def evaluate_split(model, split: loader.Split, batch_size: int, num_workers: int) -> SplitResult:
    """Greedy-decode every utterance of the split in length-ordered batches, on the model's device."""
    world = distributed.single(next(model.parameters()).device)
    cuda = world.device.type == "cuda"
    batches = loader.global_batches(len(split), batch_size, shuffle=False, seed=0, epoch=0)  # unshuffled: no seed
    data_loader = loader.make_loader(split.dataset, batches, num_workers, pin_memory=cuda)
    start = time.perf_counter()
    counts, predictions = evaluate(model, data_loader, world)
    if cuda:
        torch.cuda.synchronize(world.device)  # the clock stops when the device is done, not when it was asked
    seconds = time.perf_counter() - start
    return SplitResult(counts, predictions, len(split), float(split.manifest.duration.sum()), seconds)
