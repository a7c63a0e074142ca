"""Streaming transcription for unidirectional models: audio in chunks, text as it arrives.

    streamer = Streamer(model, p)            # a DeepSpeech2 in eval mode, bidirectional=False, normalization=global
    streamer.feed(samples (S,) float32)      # -> the transcript so far (only ever grows)
    streamer.finish()                        # -> the whole transcript; streamer.log_probs: (T', 29)

The result equals the offline path (data.features.extract of the whole waveform ->
data.normalization.normalise -> the model -> greedy CTC) within float tolerance for any chunk sizes,
because each stage keeps exactly what its next outputs need:
  samples -> STFT frames: the padded samples not yet framed; the left reflect pad is added once
             padding(p) + 1 samples came and the right one at finish, as extract() pads the whole;
  frames  -> normalised frames: per bin by the model's statistics, each frame on its own;
  conv1   -> (time kernel 11, stride 2) the frames from 2j on, j its next output: the stride's phase;
  conv2   -> (kernel 11, stride 1) its last 10 inputs;
  RNNs    -> each layer's hidden state;
  head, greedy CTC -> per frame; the last best label, so a repeat across chunks is merged once.
BatchNorm in eval mode is a per-channel affine map of each frame (masked_batch_norm runs the module,
running statistics), and the offline masks are all ones on one whole utterance, so chunks see what
the whole saw. The model's conv/RNN/head modules are used as they are; only the time axis is cut.

Refused (StreamingError, exit status 2): a bidirectional model (its backward direction starts at the
end); normalization=utterance (the utterance's mean and std are unknown until the stream ends: train
with normalization=global); feature=mfcc (its top_db clipping takes the whole utterance's peak).

`python -m pytorch.transcribe --stream --chunk-ms N` is `transcribe_files` below.
"""

import sys
import time
from collections.abc import Callable, Iterator

import torch
from torch.func import functional_call
from torch.nn import functional as F

import exit_status
from data.features import FeatureError, padding, spectrogram_frames
from data.labels import BLANK, LABELS
from data.normalization import normalise
from exit_status import ExitStatus
from params import Params
from pytorch import precision
from pytorch.model import CONV1, CONV2, BatchRNN

(_, K1), (_, S1) = CONV1  # time kernel and stride of the first convolution
(_, K2), (_, S2) = CONV2


class StreamingError(exit_status.UsageError):
    """A model, or a use of a Streamer, that streaming cannot serve; the message says why."""


def check_streamable(model, p: Params) -> None:
    """StreamingError naming the reason unless `model` can be streamed exactly."""
    if p.bidirectional:
        raise StreamingError(
            "bidirectional=True: the backward recurrent direction needs the utterance's end before its "
            "first output; stream a unidirectional model (bidirectional=False, e.g. preset=reference2018)"
        )
    if p.normalization != "global" or model.feature_stats() is None:
        raise StreamingError(
            "normalization=utterance: the features are normalised by the whole utterance's mean and std, "
            "which a stream does not know until it ends; train the model with normalization=global"
        )
    if p.feature != "spectrogram":
        raise StreamingError(
            f"feature={p.feature}: its top_db clipping uses the whole utterance's peak, unknown until the "
            "stream ends; stream a feature=spectrogram model"
        )
    if model.training:
        raise StreamingError("the model is in training mode: BatchNorm would use each chunk's statistics; call .eval()")


def check_options(backend: str, decoder: str, timed: bool) -> None:
    """UsageError naming the option that --stream cannot take (it runs the torch model, greedy, text only)."""
    if backend != "torch":
        raise StreamingError(f"--backend {backend}: --stream runs the PyTorch model itself; use --backend torch")
    if decoder != "greedy":
        raise StreamingError(f"--decoder {decoder}: --stream decodes greedily (its transcript only ever grows)")
    if timed:
        raise StreamingError("--timestamps and --plot align the whole utterance offline: not with --stream")


def _recurrent(rnn: BatchRNN, x: torch.Tensor, state):
    """One unidirectional layer over x (T, 1, I) from `state` -> (outputs (T, 1, H), the new state),
    computed in the layer's dtype with autocast off, as precision.run_recurrent computes it."""
    with torch.autocast(x.device.type, enabled=False):
        if rnn.dtype == torch.float32:
            return rnn.fwd(x.float(), state)
        weights = {name: w.to(rnn.dtype) for name, w in rnn.fwd.named_parameters()}
        return functional_call(rnn.fwd, weights, (x.to(rnn.dtype), state))


class Streamer:
    """One utterance streamed through a unidirectional, globally normalised DeepSpeech2 (greedy CTC)."""

    def __init__(self, model, p: Params):
        check_streamable(model, p)
        self.model, self.p = model, p
        self.device = next(model.parameters()).device
        self.stats = model.feature_stats()
        self.samples_in = 0  # samples fed so far
        self.text = ""  # the greedy transcript so far
        self.finished = False
        self._pad = padding(p)
        self._samples = torch.empty(0)  # raw samples until the left pad is on, then padded ones not yet framed
        self._padded = False
        self._tail = torch.empty(0)  # the last pad + 1 raw samples: what the right reflect pad mirrors
        self._frames = torch.empty(1, 1, p.n_features, 0, device=self.device)  # normalised, from conv1's next window
        self._conv1 = None  # conv1 outputs (1, C, F1, t) from conv2's next window
        self._states = [None] * len(model.rnns)
        self._last = BLANK  # the last frame's best label
        self._log_probs: list[torch.Tensor] = []

    @property
    def log_probs(self) -> torch.Tensor:
        """Every output frame's log-probabilities so far (T', 29) float32 on the CPU."""
        return torch.cat(self._log_probs) if self._log_probs else torch.empty(0, len(LABELS))

    @torch.inference_mode()
    def feed(self, samples: torch.Tensor) -> str:
        """Samples (S,) float32 in [-1, 1], the next stretch of the audio -> the transcript so far."""
        if self.finished:
            raise StreamingError("feed() after finish(): start a new Streamer for the next utterance")
        if samples.dim() != 1:
            raise StreamingError(f"samples of shape {tuple(samples.shape)}: feed a 1-D chunk (S,)")
        samples = samples.detach().to("cpu", torch.float32)
        self.samples_in += samples.shape[0]
        self._tail = torch.cat([self._tail, samples])[-(self._pad + 1) :]
        self._samples = torch.cat([self._samples, samples])
        if not self._padded and self._samples.shape[0] > self._pad:
            # extract()'s left reflect pad: x[pad], ..., x[1] before x[0].
            self._samples = torch.cat([self._samples[1 : self._pad + 1].flip(0), self._samples])
            self._padded = True
        if self._padded:
            self._advance()
        return self.text

    @torch.inference_mode()
    def finish(self) -> str:
        """The end of the audio: the right reflect pad, the last frames -> the whole transcript.
        FeatureError (as extract's) for audio too short to pad."""
        if self.finished:
            return self.text
        if self.samples_in <= self._pad:
            raise FeatureError(
                f"waveform of {self.samples_in} samples is too short: need more than {self._pad} (n_fft // 2)"
            )
        self.finished = True
        # extract()'s right reflect pad: x[S-2], ..., x[S-1-pad] after x[S-1].
        self._samples = torch.cat([self._samples, self._tail[:-1].flip(0)])
        self._advance()
        return self.text

    def _advance(self) -> None:
        """Frame what the padded samples hold, and take the new frames through the model and decoder."""
        frames = self._new_frames()  # (t, F)
        if frames is None:
            return
        x = normalise(frames.t().to(self.device), self.stats)  # (F, t)
        with precision.autocast(self.model.precision, self.device.type):
            x = self._convs(x)  # (t2, 1, C*F2) or None
            if x is None:
                return
            for i, rnn in enumerate(self.model.rnns):
                x, self._states[i] = _recurrent(rnn, x, self._states[i])
            bn, linear = self.model.fc
            logits = linear(bn(x.reshape(x.shape[0], -1)))  # (t2, 29): the head, frame by frame
        log_probs = F.log_softmax(logits.float(), dim=-1).cpu()
        self._log_probs.append(log_probs)
        self._decode(log_probs)

    def _new_frames(self) -> torch.Tensor | None:
        """The STFT frames (t, F) the padded samples now hold whole; drops the samples no later frame needs."""
        n_fft, hop = self.p.n_fft, self.p.hop_length
        available = self._samples.shape[0]
        if available < n_fft:
            return None
        count = 1 + (available - n_fft) // hop
        frames = spectrogram_frames(self._samples[: (count - 1) * hop + n_fft], self.p)
        self._samples = self._samples[count * hop :]
        return frames

    def _convs(self, x: torch.Tensor) -> torch.Tensor | None:
        """Normalised frames (F, t) -> the new conv outputs as the RNNs take them (t2, 1, C*F2), or None."""
        conv1, bn1, act1, conv2, bn2, act2 = self.model.conv
        self._frames = torch.cat([self._frames, x.to(self._frames.dtype)[None, None]], dim=3)
        available = self._frames.shape[3]
        outputs = (available - K1) // S1 + 1 if available >= K1 else 0
        if outputs == 0:
            return None
        y = act1(bn1(conv1(self._frames[..., : S1 * (outputs - 1) + K1])))  # (1, C, F1, outputs)
        self._frames = self._frames[..., S1 * outputs :]  # from the next output's first frame: keeps the phase
        self._conv1 = y if self._conv1 is None else torch.cat([self._conv1, y], dim=3)
        outputs = (self._conv1.shape[3] - K2) // S2 + 1
        if outputs <= 0:
            return None
        z = act2(bn2(conv2(self._conv1)))  # (1, C, F2, outputs)
        self._conv1 = self._conv1[..., S2 * outputs :]
        n, c, f, t = z.shape
        return z.reshape(n, c * f, t).permute(2, 0, 1).contiguous()

    def _decode(self, log_probs: torch.Tensor) -> None:
        """Greedy CTC over new frames (t, 29), continuing from the last frame's label."""
        for label in log_probs.argmax(dim=-1).tolist():
            if label != self._last and label != BLANK:
                self.text += LABELS[label]
            self._last = label


def chunks(waveform: torch.Tensor, chunk_samples: int) -> Iterator[torch.Tensor]:
    """The waveform (S,) in consecutive chunks of chunk_samples (the last may be shorter)."""
    for start in range(0, waveform.shape[0], chunk_samples):
        yield waveform[start : start + chunk_samples]


def chunk_samples_of(chunk_ms: float, p: Params) -> int:
    """Samples per chunk of chunk_ms milliseconds; StreamingError below one sample."""
    samples = round(chunk_ms * p.sample_rate / 1000)
    if samples < 1:
        raise StreamingError(f"--chunk-ms {chunk_ms}: less than one sample at sample_rate={p.sample_rate}")
    return samples


def stream(model, p: Params, waveform: torch.Tensor, chunk_samples: int, on_partial: Callable | None = None) -> str:
    """Stream a whole waveform (S,) in chunks; on_partial(seconds of audio so far, text) each time the
    transcript grows. Returns the final transcript."""
    streamer = Streamer(model, p)
    for chunk in chunks(waveform, chunk_samples):
        before = streamer.text
        text = streamer.feed(chunk)
        if on_partial is not None and text != before:
            on_partial(streamer.samples_in / p.sample_rate, text)
    before = streamer.text
    text = streamer.finish()
    if on_partial is not None and text != before:
        on_partial(streamer.samples_in / p.sample_rate, text)
    return text


def transcribe_files(model, p: Params, paths, chunk_ms: float, read_audio, audio_errors: tuple = ()) -> ExitStatus:
    """`pytorch.transcribe --stream`: each file read whole, then fed in chunk_ms chunks as if it arrived
    (no waiting). Partial transcripts go to stderr ('<file> <audio s>s: <text>'), the final
    '<file>\\t<transcript>' to stdout. read_audio(path, sample_rate) -> (S,); a file it cannot read
    (audio_errors) or too short is named on stderr and the status is then 1."""
    check_streamable(model, p)
    samples = chunk_samples_of(chunk_ms, p)
    status = ExitStatus.OK
    for path in paths:
        started = time.perf_counter()

        def partial(seconds: float, text: str, path=path) -> None:
            print(f"{path} {seconds:.2f}s: {text}", file=sys.stderr, flush=True)

        try:
            text = stream(model, p, read_audio(path, p.sample_rate), samples, partial)
        except (FeatureError, *audio_errors) as err:
            exit_status.error(f"{path}: {err}" if isinstance(err, FeatureError) else f"{err}")
            status = ExitStatus.ERROR
            continue
        print(f"{path}\t{text}", flush=True)
        print(f"{path}: streamed in {time.perf_counter() - started:.2f} s", file=sys.stderr, flush=True)
    return status
