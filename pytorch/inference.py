"""Inference with a DeepSpeech2 model: loading one from a checkpoint, decoding batches, and decoding a
whole split to its errors and throughput.

Used by training (validation after every epoch), pytorch.evaluate, pytorch.transcribe and
bench.inference_latency. It never imports the training loop. The model handles precision and
short inputs itself (pytorch.model), so inference is: features -> model -> decode -> counts. The
decoder is greedy unless a caller passes another (pytorch.decoders): training always decodes greedily.
"""

import dataclasses
import time
from pathlib import Path

import torch
import torch.distributed as dist

import params
from pytorch import checkpoint, distributed, loader, precision
from pytorch.decode import ErrorCounts
from pytorch.decoders import Decoder, GreedyDecoder
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


GREEDY = GreedyDecoder()


def split_for(model, data_dir, name: str) -> loader.Split:
    """The prepared split `name`, normalised as `model` (a DeepSpeech2 or a pytorch.backends Runner) was
    trained: with its training set's statistics (normalization=global) or per utterance."""
    return loader.open_split(data_dir, name, stats=model.feature_stats())


def device_of(model) -> torch.device:
    """The device a model, or a pytorch.backends Runner (which says it), computes on."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


@torch.no_grad()
def decode_batch(model, features: torch.Tensor, lengths: torch.Tensor, decoder: Decoder = GREEDY) -> list[str]:
    """Padded features (N, F, T) on the model's device, true lengths (N,) -> N transcripts (greedy
    unless another decoder is given)."""
    log_probs, out_lengths = model(features, lengths)
    return decoder.decode(log_probs, out_lengths)


@torch.no_grad()
def evaluate(
    model, data_loader, world: World, decoder: Decoder = GREEDY
) -> tuple[ErrorCounts, list[tuple[str, str, str]]]:
    """Decode every batch of data_loader (this rank's shard; greedy unless another decoder is given) ->
    (ErrorCounts summed over ranks, predictions (id, reference, hypothesis) of all ranks, rank 0's first).

    `model` is a DeepSpeech2 (set to eval mode here) or a pytorch.backends Runner."""
    if isinstance(model, torch.nn.Module):
        model.eval()
    counts, predictions = ErrorCounts(), []
    for batch in data_loader:
        features = batch.features.to(world.device, non_blocking=True)
        for utt_id, reference, hypothesis in zip(
            batch.ids, batch.transcripts, decode_batch(model, features, batch.lengths, decoder)
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
    """A split decoded by one process: its errors, predictions and how fast it went."""

    counts: ErrorCounts
    predictions: list[tuple[str, str, str]]  # (id, reference, hypothesis) per utterance, in batch order
    utterances: int
    audio_s: float
    seconds: float  # decoding wall time, data loading included


def evaluate_split(
    model, split: loader.Split, batch_size: int, num_workers: int, decoder: Decoder = GREEDY
) -> SplitResult:
    """Decode every utterance of the split in length-ordered batches, on the model's device (greedy
    unless another decoder is given). `model`: a DeepSpeech2 or a pytorch.backends Runner."""
    world = distributed.single(device_of(model))
    cuda = world.device.type == "cuda"
    data_loader = _split_loader(split, batch_size, num_workers, cuda)
    start = time.perf_counter()
    counts, predictions = evaluate(model, data_loader, world, decoder)
    if cuda:
        torch.cuda.synchronize(world.device)  # the clock stops when the device is done, not when it was asked
    seconds = time.perf_counter() - start
    return SplitResult(counts, predictions, len(split), float(split.manifest.duration.sum()), seconds)


def _split_loader(split: loader.Split, batch_size: int, num_workers: int, pin_memory: bool):
    batches = loader.global_batches(len(split), batch_size, shuffle=False, seed=0, epoch=0)  # unshuffled: no seed
    return loader.make_loader(split.dataset, batches, num_workers, pin_memory=pin_memory)


@dataclasses.dataclass
class Emission:
    """One utterance's model output, kept to be decoded many times (LM tuning, decoder benches)."""

    id: str
    reference: str
    log_probs: torch.Tensor  # (T', C) float32 on the CPU
    audio_s: float


@torch.no_grad()
def split_emissions(model, split: loader.Split, batch_size: int, num_workers: int) -> tuple[list[Emission], float]:
    """The log-probabilities of every utterance of the split -> (emissions in batch order, seconds the
    forward passes took, data loading included)."""
    device = device_of(model)
    if isinstance(model, torch.nn.Module):
        model.eval()
    manifest = split.manifest
    durations = {manifest.id(i): float(manifest.duration[i]) for i in range(len(manifest))}
    emissions = []
    start = time.perf_counter()
    for batch in _split_loader(split, batch_size, num_workers, device.type == "cuda"):
        log_probs, out_lengths = model(batch.features.to(device, non_blocking=True), batch.lengths)
        log_probs = log_probs.float().cpu()
        for n, (utt_id, reference, length) in enumerate(zip(batch.ids, batch.transcripts, out_lengths.tolist())):
            emissions.append(Emission(utt_id, reference, log_probs[:length, n].clone(), durations[utt_id]))
    return emissions, time.perf_counter() - start


def decode_emissions(emissions: list[Emission], decoder: Decoder) -> tuple[ErrorCounts, list[str]]:
    """Decode each kept emission alone -> (its errors, the hypotheses in order)."""
    counts, hypotheses = ErrorCounts(), []
    for emission in emissions:
        hypothesis = decoder.decode(emission.log_probs.unsqueeze(1), torch.tensor([emission.log_probs.shape[0]]))[0]
        counts.add(emission.reference, hypothesis)
        hypotheses.append(hypothesis)
    return counts, hypotheses
