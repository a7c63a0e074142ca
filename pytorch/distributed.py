"""The processes of a run: which device each uses, and everything they say to each other.

One process, or one per device under torchrun (WORLD_SIZE > 1): NCCL between CUDA devices, gloo on
CPU (gloo also all-reduces CUDA tensors, which lets two ranks share one GPU in a test). Gradients are
summed by DistributedDataParallel (`wrap`); the few other collectives of the trainer and the
synchronised BatchNorm are here.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from exit_status import Failure, UsageError

BACKENDS = ("nccl", "gloo")


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
        """Several CUDA ranks take BatchNorm statistics over all ranks' micro-batches (see model.py).

        On CPU each micro-batch normalises over itself, which is what makes N processes train exactly
        like one process with N accumulation steps (tested)."""
        return self.distributed and self.device.type == "cuda"


def single(device: str | torch.device = "cpu") -> World:
    """The world of one process on `device` (evaluation, benchmarks, tests)."""
    return World(0, 1, torch.device(device))


def pick_device(requested: str = "auto") -> torch.device:
    """'auto': this rank's CUDA device (LOCAL_RANK) if CUDA is available, else the CPU; or as given."""
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if requested == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} CUDA device(s): start at most "
                "one process per GPU (NPROC), or share one device with --device cuda:0 --dist-backend gloo"
            )
        return torch.device("cuda", local_rank)
    try:
        device = torch.device(requested)
    except RuntimeError as err:
        raise UsageError(f"--device {requested!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {requested}: CUDA is not available here")
    return device


def init(device: str = "auto", backend: str | None = None) -> World:
    """This process's World; under torchrun (WORLD_SIZE > 1) also its process group.

    backend: nccl (default between CUDA devices) or gloo (default on CPU; also CUDA tensors).
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    where = pick_device(device)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if size > 1:
        backend = backend or ("nccl" if where.type == "cuda" else "gloo")
        if backend not in BACKENDS:
            raise UsageError(f"--dist-backend {backend!r}: must be one of {', '.join(BACKENDS)}")
        if backend == "nccl" and where.type != "cuda":
            raise UsageError("--dist-backend nccl needs CUDA devices; use gloo on CPU")
        try:
            dist.init_process_group(backend)
        except (RuntimeError, ValueError) as err:
            raise Failure(f"cannot join the process group ({backend}, rank {rank} of {size}): {err}") from None
    return World(rank, size, where)


def finish(world: World, completed: bool = True) -> None:
    """Tear the process group down. After a completed run, every rank first waits for the others:
    a rank that destroys its gloo group while a peer's last collective is still in flight makes that
    peer abort ('terminate called without an active exception', seen at the end of 2-process runs).
    After an error there is no waiting: the other ranks may be inside another collective."""
    if world.distributed and dist.is_initialized():
        if completed:
            dist.barrier()
        dist.destroy_process_group()


class _SumOverRanks(torch.autograd.Function):
    """y = sum of x over ranks; its gradient is the sum of the ranks' gradients with respect to y."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def sum_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """Differentiable all-reduce (sum): every rank must call it, in the same order, forward and backward."""
    return _SumOverRanks.apply(x)


def all_reduce_(t: torch.Tensor, world: World) -> torch.Tensor:
    """Sum t over ranks in place (a no-op for one process); returns t."""
    if world.distributed:
        dist.all_reduce(t)
    return t


def _sum_gradients(process_group, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """DDP communication hook: SUM the gradient buckets over ranks (DDP's default divides by the
    world size). Each rank back-propagates its CTC sum / GLOBAL batch size, so the sum is the
    gradient of the mean loss of the global batch, whatever the world size."""
    work = dist.all_reduce(bucket.buffer(), group=process_group, async_op=True)
    return work.get_future().then(lambda future: future.value()[0])


def wrap(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """DistributedDataParallel around the model when there are several ranks (else the model itself).

    broadcast_buffers=False: the BatchNorm running statistics are averaged over every micro-batch of
    every rank by the trainer (RunningStats), not copied from rank 0 at each forward.
    """
    if not world.distributed:
        return model
    ddp = torch.nn.parallel.DistributedDataParallel(
        model,
        # No device_ids: DDP would then copy every input tensor to the GPU, the lengths too, which must
        # stay on the host (CTC reads them there; copying them back would stop the host once per step).
        device_ids=None,
        broadcast_buffers=False,
        gradient_as_bucket_view=True,
    )
    ddp.register_comm_hook(None, _sum_gradients)
    return ddp
