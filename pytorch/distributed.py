"""The processes of a run: which device each uses, and everything they say to each other.

One process, or one per device: started by torchrun (RANK, WORLD_SIZE, LOCAL_RANK), by Slurm's srun
with one task per GPU (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID) or by Open MPI's mpirun
(OMPI_COMM_WORLD_RANK, _SIZE, _LOCAL_RANK); the rendezvous is MASTER_ADDR:MASTER_PORT (slurm/run.sub
exports them). NCCL between CUDA devices, gloo on CPU (gloo also all-reduces CUDA tensors, which lets
two ranks share one GPU in a test). Gradients are summed by DistributedDataParallel (`wrap`); the few
other collectives of the trainer and the synchronised BatchNorm are here. Every collective waits at
most p.dist_timeout_s for the other ranks: a rank that hangs stops the run with an error, not forever.
"""

import datetime
import inspect
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

    def say(self, *words, **print_kwargs) -> None:
        """print() on the main rank only: every rank runs the same code, one speaks for the run."""
        if self.main:
            print(*words, **print_kwargs, flush=True)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def sync_batchnorm(self) -> bool:
        """Several CUDA ranks take BatchNorm statistics over all ranks' micro-batches (see model.py).

        On CPU each micro-batch normalises over itself, which is what makes N processes train exactly
        like one process with N accumulation steps (tested)."""
        return self.distributed and self.device.type == "cuda"


@dataclass(frozen=True)
class Launch:
    """Where this process stands in the run, as its launcher said."""

    rank: int
    size: int
    local_rank: int
    launcher: str  # torchrun, slurm, mpi, or none (one process)


# (launcher, its variables for rank, world size, local rank), in the order they are believed: torchrun
# sets its own even inside a Slurm job, so one torchrun per node under srun is torchrun's.
LAUNCHERS = (
    ("torchrun", ("RANK", "WORLD_SIZE", "LOCAL_RANK")),
    ("slurm", ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")),
    ("mpi", ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK")),
)


def launch(env=None) -> Launch:
    """This process's rank, world size and local rank from its launcher's variables (one process if
    none). Slurm's count only inside an srun step (SLURM_STEP_ID): the batch script itself is one
    process whatever --ntasks says. UsageError naming a variable that is not a whole number."""
    env = os.environ if env is None else env
    for name, variables in LAUNCHERS:
        if variables[1] not in env or (name == "slurm" and "SLURM_STEP_ID" not in env):
            continue
        values = []
        for variable in variables:
            text = env.get(variable, "0").strip()
            if not text.isdigit():
                raise UsageError(f"{variable}={text!r}: must be a whole number (set by {name})")
            values.append(int(text))
        rank, size, local_rank = values
        if not 0 <= rank < size:
            raise UsageError(f"{variables[0]}={rank}: must be below {variables[1]}={size}")
        return Launch(rank, size, local_rank, name)
    return Launch(0, 1, 0, "none")


def single(device: str | torch.device = "cpu") -> World:
    """The world of one process on `device` (evaluation, benchmarks, tests)."""
    return World(0, 1, torch.device(device))


def pick_device(requested: str = "auto") -> torch.device:
    """'auto': this rank's CUDA device (its local rank) if CUDA is available, else the CPU; or as given."""
    local_rank = launch().local_rank
    if requested == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if local_rank >= torch.cuda.device_count():
            raise UsageError(
                f"local rank {local_rank} but this node has {torch.cuda.device_count()} CUDA device(s): start at most "
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


def rendezvous_store(me: Launch, timeout: datetime.timedelta) -> dist.Store:
    """The key-value store the ranks meet in, at MASTER_ADDR:MASTER_PORT (default 29500): torchrun's
    agent hosts it, else rank 0 does. Its keys are kept apart per elastic restart: torchrun's store
    outlives the workers, and a restarted rank that read its peer's address from the attempt before
    (still there) would connect to a dead process and time out."""
    under_agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"],
        int(os.environ.get("MASTER_PORT", "29500")),
        me.size,
        is_master=not under_agent and me.rank == 0,
        timeout=timeout,
        multi_tenant=True,
    )
    return dist.PrefixStore(f"ds2/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def init(device: str = "auto", backend: str | None = None, timeout_s: float = 1800.0) -> World:
    """This process's World; with several ranks also its process group, whose collectives wait at
    most timeout_s for the others.

    backend: nccl (default between CUDA devices) or gloo (default on CPU; also CUDA tensors).
    """
    me = launch()
    where = pick_device(device)
    if where.type == "cuda":
        torch.cuda.set_device(where)
    if me.size > 1:
        backend = backend or ("nccl" if where.type == "cuda" else "gloo")
        if backend not in BACKENDS:
            raise UsageError(f"--dist-backend {backend!r}: must be one of {', '.join(BACKENDS)}")
        if backend == "nccl" and where.type != "cuda":
            raise UsageError("--dist-backend nccl needs CUDA devices; use gloo on CPU")
        if me.launcher != "torchrun" and not os.environ.get("MASTER_ADDR", "").strip():
            raise UsageError(f"{me.launcher}: {me.size} ranks need MASTER_ADDR (and MASTER_PORT) for the rendezvous")
        timeout = datetime.timedelta(seconds=timeout_s)
        try:
            dist.init_process_group(backend, store=rendezvous_store(me, timeout), rank=me.rank, world_size=me.size,
                                    timeout=timeout)  # fmt: skip
        except (RuntimeError, ValueError) as err:
            raise Failure(f"cannot join the process group ({backend}, rank {me.rank} of {me.size}): {err}") from None
    return World(me.rank, me.size, where)


# What a collective says when another rank hung or died: gloo's timeouts and closed sockets, NCCL's watchdog.
PEER_FAILURES = ("Timed out", "timed out", "Connection closed by peer", "Connection reset by peer", "Broken pipe")


def peer_failure(err: RuntimeError, world: World, timeout_s: float) -> Failure | None:
    """The Failure to report for a collective that another rank never answered (None: not that)."""
    text = str(err)
    if not world.distributed or not (isinstance(err, dist.DistError) or any(m in text for m in PEER_FAILURES)):
        return None
    what = "timed out" if "imed out" in text else "lost its connection"
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
    return Failure(
        f"rank {world.rank} of {world.size}: a collective {what} (dist_timeout_s={timeout_s:g}): another rank hung "
        f"or died; the launcher's report names the ranks that failed [{first[:300]}]"
    )


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

    No buffer sync at each forward: the BatchNorm running statistics are averaged over every
    micro-batch of every rank by the trainer (RunningStats), not copied from rank 0. (torch 2.13 names
    that forward_sync_buffers=False and deprecates broadcast_buffers=False; 2.11 and 2.12 know only the
    latter. Syncing at init, which 2.13 still does, copies what every rank already holds: same seed.)
    """
    if not world.distributed:
        return model
    parameters = inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
    no_buffer_sync = {"forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers": False}
    ddp = torch.nn.parallel.DistributedDataParallel(
        model,
        # No device_ids: DDP would then copy every input tensor to the GPU, the lengths too, which must
        # stay on the host (CTC reads them there; copying them back would stop the host once per step).
        device_ids=None,
        gradient_as_bucket_view=True,
        **no_buffer_sync,
    )
    ddp.register_comm_hook(None, _sum_gradients)
    return ddp
