"""DeepSpeech2 exactly as the 2018 reference lists it, made exact under padding.

Two 2-D convolutions (frequency x time, no padding) with BatchNorm and Hardtanh(0, 20), a stack of
recurrent layers (bidirectional: the two directions summed) and a per-frame BatchNorm + Linear head.

Differences from the reference, all about padded batches (the listing and parameter count are the same):
- frames beyond a sample's length are zeroed after every block, and BatchNorm in training uses the
  statistics of valid frames only, so padding never changes a sample's result;
- the backward direction reverses each sequence within its own length (no pack_padded_sequence, which
  makes torch's CPU GRU 2.6-4x slower in training, measured), so trailing padding never reaches a valid frame;
- forward() returns log-probabilities (float32) in training and inference: torch's CTCLoss needs them,
  and doing it inside forward keeps DistributedDataParallel's hooks on the one call the trainer makes.
  The reference applied log-softmax only at inference because warp-ctc took raw activations. Greedy
  decoding is unchanged (log-softmax is monotonic); `logits()` gives the raw activations.

The model computes in p.precision by itself (pytorch.precision says what each precision means):
callers never wrap it in autocast. Inputs shorter than the convolutions take are padded here too.
"""

import torch
from torch import nn
from torch.nn import functional as F

from data.labels import LABELS
from data.normalization import FeatureStats
from params import Params
from pytorch import precision
from pytorch.batchnorm import masked_batch_norm

RNN_CLASSES = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}

# (kernel, stride) of the two convolutions along (frequency, time).
CONV1 = ((41, 11), (2, 2))
CONV2 = ((21, 11), (2, 1))
MIN_FRAMES = 31  # shortest input (frames) with at least one output frame: T2 = (T - 11)//2 + 1 - 10


def conv_frequencies(n_features: int) -> int:
    """Frequency bins left after both convolutions (161 -> 61 -> 21)."""
    f1 = (n_features - CONV1[0][0]) // CONV1[1][0] + 1
    f2 = (f1 - CONV2[0][0]) // CONV2[1][0] + 1
    if f1 < 1 or f2 < 1:
        raise ValueError(
            f"n_features={n_features}: too few feature bins for the convolutions' 41 x 21 frequency kernels "
            f"(need at least {CONV1[0][0] + CONV1[1][0] * (CONV2[0][0] - 1)}); "
            "raise window_size or pick feature=spectrogram"
        )
    return f2


def conv1_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames after the first convolution: T1 = (T - 11)//2 + 1, at least 0. (N,) -> (N,)."""
    return ((lengths - 11).div(2, rounding_mode="floor") + 1).clamp(min=0)


def output_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Output frames per sample: T2 = T1 - 10, 0 when the input is too short for the convs. (N,) -> (N,)."""
    return (conv1_lengths(lengths) - 10).clamp(min=0)


def frame_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(N,) lengths -> (N, frames) bool, True on a sample's valid frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence's first lengths[n] frames, leaving its padding at the tail.

    x: (T, N, H), lengths: (N,) on x's device -> (T, N, H). Applying it twice gives x back.
    """
    frames = x.shape[0]
    t = torch.arange(frames, device=x.device)[:, None]
    index = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    return x.gather(0, index[:, :, None].expand_as(x))


class BatchRNN(nn.Module):
    """One recurrent layer; bidirectional = a forward and a backward unidirectional RNN, summed.

    Two unidirectional modules hold exactly the parameters of one bidirectional nn.GRU. The layer
    computes in `dtype` (its weights stay float32; see pytorch.precision.run_recurrent).
    """

    def __init__(self, rnn_type: str, input_size: int, hidden_size: int, bidirectional: bool, dtype: torch.dtype):
        super().__init__()
        rnn_class = RNN_CLASSES[rnn_type]
        self.fwd = rnn_class(input_size, hidden_size, bias=True)
        self.bwd = rnn_class(input_size, hidden_size, bias=True) if bidirectional else None
        self.dtype = dtype

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (T, N, I), lengths (N,), mask (T, N, 1) float -> (T, N, H) in self.dtype, zero beyond each length."""
        out = precision.run_recurrent(self.fwd, x, self.dtype)
        if self.bwd is not None:
            backward = precision.run_recurrent(self.bwd, reverse_within_lengths(x, lengths), self.dtype)
            out = out + reverse_within_lengths(backward, lengths)
        return out * mask.to(out.dtype)

    def extra_repr(self) -> str:
        summed = ", directions summed" if self.bwd is not None else ""
        return f"computes in {str(self.dtype).removeprefix('torch.')}{summed}"


def probe_recurrent(p: Params, device: torch.device) -> precision.RecurrentKernel:
    """What a recurrent layer of this model really computes in on `device` under p.precision, and which
    kernel computes it (precision.kernel_of: cuDNN or ATen's per-time-step loop).

    One tiny layer of the model's own kind, run forward and backward as the model runs it (inside the
    precision's autocast). PrecisionError naming the cause if the device cannot do it.
    """
    device = torch.device(device)
    precision.check(p.precision, device)
    layer = BatchRNN(p.rnn_type, 8, 8, p.bidirectional, precision.compute_dtype(p.precision)).to(device)
    x = torch.randn(5, 2, 8, device=device, requires_grad=True)
    lengths = torch.tensor([5, 3], device=device)
    mask = frame_mask(lengths, 5).t()[:, :, None].float()
    try:
        with torch.enable_grad(), precision.autocast(p.precision, device.type):
            raw = precision.run_recurrent(layer.fwd, x, layer.dtype)  # the kernel's own output
            out = layer(x, lengths, mask)
        out.float().sum().backward()
    except RuntimeError as err:
        raise precision.PrecisionError(
            f"precision={p.precision!r}: this {device.type} build of torch {torch.__version__} cannot run a "
            f"{p.rnn_type.upper()} in {precision.compute_dtype(p.precision)} ({str(err).splitlines()[0]})"
        ) from None
    dtype = str(out.dtype).removeprefix("torch.")
    return precision.RecurrentKernel(dtype, precision.kernel_of(raw), device.type)


class DeepSpeech2(nn.Module):
    """Spectrogram frames (N, F, T) -> per-frame label log-probabilities (T', N, 29)."""

    def __init__(self, p: Params):
        super().__init__()
        self.n_features = p.n_features
        channels = p.conv_channels
        rnn_input = channels * conv_frequencies(p.n_features)
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size=CONV1[0], stride=CONV1[1]),
            nn.BatchNorm2d(channels),
            nn.Hardtanh(0, 20, inplace=True),
            nn.Conv2d(channels, channels, kernel_size=CONV2[0], stride=CONV2[1]),
            nn.BatchNorm2d(channels),
            nn.Hardtanh(0, 20, inplace=True),
        )
        sizes = [rnn_input] + [p.hidden_size] * (p.hidden_layers - 1)
        dtype = precision.compute_dtype(p.precision)
        self.rnns = nn.ModuleList(BatchRNN(p.rnn_type, size, p.hidden_size, p.bidirectional, dtype) for size in sizes)
        self.precision = p.precision
        self.fc = nn.Sequential(nn.BatchNorm1d(p.hidden_size), nn.Linear(p.hidden_size, len(LABELS), bias=False))
        # Set by the trainer when several CUDA processes train: batch statistics over all ranks.
        self.sync_batchnorm = False
        if p.normalization == "global":
            # The training set's per-bin statistics travel in the checkpoint (state_dict), so that
            # inference and streaming normalise as training did from the model alone. The trainer
            # fills them (set_feature_stats); forward() never uses them: its input is normalised.
            self.register_buffer("feature_mean", torch.zeros(p.n_features))
            self.register_buffer("feature_std", torch.ones(p.n_features))

    def feature_stats(self) -> FeatureStats | None:
        """The per-bin statistics its input is normalised with (normalization=global), else None."""
        if not hasattr(self, "feature_mean"):
            return None
        return FeatureStats(
            self.feature_mean.detach().float().cpu().clone(), self.feature_std.detach().float().cpu().clone()
        )

    @torch.no_grad()
    def set_feature_stats(self, stats: FeatureStats) -> None:
        """Record the training set's statistics (normalization=global models only); ValueError otherwise."""
        if not hasattr(self, "feature_mean"):
            raise ValueError("this model normalises per utterance (normalization=utterance): it keeps no statistics")
        if stats.n_features != self.n_features:
            raise ValueError(f"feature stats of {stats.n_features} bins for a model of n_features={self.n_features}")
        self.feature_mean.copy_(stats.mean)
        self.feature_std.copy_(stats.std)

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, F, T), lengths (N,) -> (log-probs (T', N, 29) float32, out_lengths (N,)).

        out_lengths is on the device of `lengths` (give CPU lengths to keep them on the host) and is 0
        for inputs shorter than MIN_FRAMES frames, whose transcripts are then empty.
        """
        logits, out_lengths = self.logits(features, lengths)
        return F.log_softmax(logits.float(), dim=-1), out_lengths

    def logits(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features (N, F, T), lengths (N,) -> (raw activations (T', N, 29), out_lengths (N,))."""
        self._check_input(features, lengths)
        if features.shape[2] < MIN_FRAMES:  # too short for the convolutions: zero frames beyond every length
            features = F.pad(features, (0, MIN_FRAMES - features.shape[2]))
        lengths_here = lengths.to(features.device, non_blocking=True)
        with precision.autocast(self.precision, features.device.type):
            x = self._convs(features.unsqueeze(1), lengths_here)  # (N, C, F2, T2)
            n, c, f, t = x.shape
            x = x.reshape(n, c * f, t).permute(2, 0, 1).contiguous()  # (T2, N, C*F2): channel-major, as the reference
            out_here = output_lengths(lengths_here)
            mask = frame_mask(out_here, t).t()[:, :, None].float()  # (T2, N, 1)
            for rnn in self.rnns:
                x = rnn(x, out_here, mask)
            return self._head(x, mask), output_lengths(lengths)

    def _check_input(self, features: torch.Tensor, lengths: torch.Tensor) -> None:
        if features.dim() != 3 or features.shape[1] != self.n_features:
            raise ValueError(
                f"features of shape {tuple(features.shape)}: expected (batch, n_features={self.n_features}, frames)"
            )
        if lengths.shape != features.shape[:1]:
            raise ValueError(f"lengths of shape {tuple(lengths.shape)}: expected ({features.shape[0]},)")

    def _convs(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x (N, 1, F, T) -> (N, C, F2, T2), zero beyond each sample's frames."""
        conv1, bn1, act1, conv2, bn2, act2 = self.conv
        for conv, bn, act, frames_of in ((conv1, bn1, act1, conv1_lengths), (conv2, bn2, act2, output_lengths)):
            x = conv(x)
            mask = frame_mask(frames_of(lengths), x.shape[3])[:, None, None, :].float()  # (N, 1, 1, T)
            x = act(masked_batch_norm(bn, x, mask, self.sync_batchnorm))
            x = x * mask.to(x.dtype)
        return x

    def _head(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (T, N, H), mask (T, N, 1) -> (T, N, 29): BatchNorm1d + Linear applied to every frame."""
        bn, linear = self.fc
        t, n, h = x.shape
        flat = masked_batch_norm(bn, x.reshape(t * n, h), mask.reshape(t * n, 1), self.sync_batchnorm)
        return linear(flat).reshape(t, n, -1)
