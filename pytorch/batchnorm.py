"""BatchNorm that padding cannot see, and the running statistics of one optimiser step.

`masked_batch_norm` takes a batch's statistics over its valid frames only (summed over ranks when the
BatchNorm is synchronised), so a sample's result never depends on how much padding shares its batch.
`RunningStats` makes the running means and variances of an optimiser step independent of how the step
is split into micro-batches and ranks: the trainer calls it around every micro-batch's forward.
"""

import torch
from torch import nn

from pytorch.distributed import sum_over_ranks


def masked_batch_norm(
    bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, mask: torch.Tensor, sync: bool = False
) -> torch.Tensor:
    """BatchNorm over the valid positions of x only.

    x: (N, C, ...) with channels on dim 1; mask: float, broadcastable to x with size 1 on dim 1,
    1 on valid positions. In training the batch statistics are those of the valid positions and the
    running statistics are updated as nn.BatchNorm does (unbiased variance); in eval mode the module
    runs as it is. sync=True (several CUDA processes) takes the statistics over the valid positions
    of every rank's batch, summed with a differentiable all_reduce: what SyncBatchNorm does, but
    blind to padding. Every rank must then make the same calls, forward and backward.
    """
    if not bn.training or not bn.track_running_stats:
        return bn(x)
    dims = [d for d in range(x.dim()) if d != 1]
    shape = [1, -1] + [1] * (x.dim() - 2)
    x, mask = x.float(), mask.float()
    count = mask.expand(x.shape[:1] + (1,) + x.shape[2:]).sum()
    total = (x * mask).sum(dims)
    if sync:
        packed = sum_over_ranks(torch.cat([total, count.reshape(1)]))
        total, count = packed[:-1], packed[-1]
    mean = total / count.clamp(min=1)
    centred = x - mean.view(shape)
    squares = (centred.square() * mask).sum(dims)
    if sync:
        squares = sum_over_ranks(squares)
    var = squares / count.clamp(min=1)
    _update_running_stats(bn, mean.detach(), var.detach(), count)
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        return centred * (scale * bn.weight).view(shape) + bn.bias.view(shape)
    return centred * scale.view(shape)


@torch.no_grad()
def _update_running_stats(bn, mean: torch.Tensor, var: torch.Tensor, count: torch.Tensor) -> None:
    """The running-average update of nn.BatchNorm, with the valid-position count n: var * n/(n-1).

    A batch without one valid position (n = 0) says nothing about the statistics: its weight is 0,
    applied as a tensor so that no host-device synchronisation is added to every forward.
    """
    bn.num_batches_tracked.add_(1)
    factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    weight = (count > 0).to(bn.running_mean.dtype) * factor
    unbiased = var * (count / (count - 1).clamp(min=1))
    bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), weight)
    bn.running_var.lerp_(unbiased.to(bn.running_var.dtype), weight)


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
