"""Will the run fit in device memory? Checked before the clock starts, on the run's longest micro-batch.

Length-ordered batches put the longest utterances in the last steps of an epoch: without this check an
out-of-memory error would come hours into the first epoch. Near the limit, torch reports a failed
allocation as torch.OutOfMemoryError, but cuDNN's and cuBLAS's own workspace allocations fail as a
plain RuntimeError (CUDNN_STATUS_ALLOC_FAILED, CUBLAS_STATUS_ALLOC_FAILED): `is_out_of_memory` knows all.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

import params
from exit_status import Failure
from pytorch import loader
from pytorch.batchnorm import RunningStats
from pytorch.distributed import World

# What the CUDA libraries' allocation failures say (torch.OutOfMemoryError aside).
OUT_OF_MEMORY_MARKERS = (
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDA out of memory",
    "CUDA error: out of memory",
)


class OutOfMemory(Failure):
    """The run's longest micro-batch does not fit on the device (exit status 1, before the clock starts)."""


def is_out_of_memory(err: BaseException) -> bool:
    """True for any device allocation failure: torch's own, cuDNN's or cuBLAS's."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(marker in str(err) for marker in OUT_OF_MEMORY_MARKERS)


@dataclass(frozen=True)
class MemoryCheck:
    utterances: int  # of the largest micro-batch
    frames: int  # of its longest utterance (tempo perturbation included)
    seconds: float
    peak_bytes: int | None  # device memory at the peak (CUDA only)


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


def check(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    split: loader.Split,
    p: params.Params,
    world: World,
    loss_of: Callable[[loader.Batch], torch.Tensor],
) -> MemoryCheck:
    """One forward and backward (`loss_of`) of the largest micro-batch the run will see, with room for
    the optimiser's state, before the clock starts: OutOfMemory naming the knobs that size it.

    Leaves the model, gradients, BatchNorm statistics and optimiser untouched.
    """
    cuda = world.device.type == "cuda"
    n, frames = largest_micro_batch(split, p, world)
    seconds = round((frames - 1) * p.hop_length / p.sample_rate, 2)
    stats = RunningStats(model)
    state_bytes = sum(t.numel() * t.element_size() for t in model.parameters())
    state_bytes *= 2 if p.optimizer == "adamw" else 1  # AdamW: two moments; SGD: the momentum buffer
    if cuda:
        torch.cuda.reset_peak_memory_stats(world.device)
    try:
        optimizer_state = torch.empty(state_bytes, dtype=torch.uint8, device=world.device)
        model.train()
        loss_of(loader.Batch.synthetic(n, p.n_features, frames, torch.Generator().manual_seed(p.seed))).backward()
        if cuda:
            torch.cuda.synchronize(world.device)
        del optimizer_state
    except RuntimeError as err:  # torch.OutOfMemoryError is one
        if not is_out_of_memory(err):
            raise
        raise OutOfMemory(
            f"out of memory on {world.device} with the longest micro-batch of this run: {n} utterances of up to "
            f"{seconds} s ({frames} frames), from batch_size={p.batch_size} over {world.size} process(es) x "
            f"{p.accumulation_steps(world.size)} accumulation steps (gradient_accumulation_steps="
            f"{p.gradient_accumulation_steps}, micro_batch_size={p.micro_batch_size}) and "
            f"max_duration={p.max_duration:g}; raise gradient_accumulation_steps (or lower micro_batch_size) or "
            f"lower batch_size (docs/gpu.md: memory guidance) [{str(err).splitlines()[0]}]"
        ) from None
    finally:
        optimizer.zero_grad(set_to_none=True)
        stats.restore()
        if cuda:
            torch.cuda.empty_cache()
    peak = torch.cuda.max_memory_allocated(world.device) if cuda else None
    return MemoryCheck(n, frames, seconds, peak)
