"""The single feature definition: waveform -> frames. Preparation, evaluation and transcription all call it.

Default (`feature=spectrogram`), as the 2018 reference code computed it: STFT with
n_fft = win_length = p.n_fft, hop p.hop_length, the periodic window named by p.window,
centred frames with reflect padding, magnitude, log1p -> (T, n_fft // 2 + 1).

`feature=mfcc` (what the reference README claimed): power spectrogram -> Slaney mel filterbank
(librosa.filters.mel defaults) -> power_to_db (ref 1, amin 1e-10, top_db 80) -> DCT-II (ortho)
-> first p.n_mfcc coefficients, i.e. librosa.feature.mfcc with the same STFT.

Per-utterance mean/std normalisation is NOT part of the stored features: the training loader
applies it, so stored shards stay reusable under other normalisations.

librosa is deliberately not imported here: its first call costs ~20 s of numba compilation.
"""

import functools
import math

import numpy as np
import torch

from params import Params

_WINDOWS = {
    "hamming": torch.hamming_window,
    "hann": torch.hann_window,
    "blackman": torch.blackman_window,
    "bartlett": torch.bartlett_window,
}


class FeatureError(ValueError):
    """A waveform that cannot be turned into features (wrong shape, too short)."""


@functools.lru_cache(maxsize=16)
def _window(name: str, n: int, device: str) -> torch.Tensor:
    """Periodic window (n,), as scipy.signal.get_window(name, n, fftbins=True)."""
    return _WINDOWS[name](n, periodic=True, dtype=torch.float32, device=device)


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa htk=False)."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    logstep = math.log(6.4) / 27.0
    mels = hz / f_sp
    above = hz >= min_log_hz
    return np.where(above, min_log_hz / f_sp + np.log(np.maximum(hz, min_log_hz) / min_log_hz) / logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = math.log(6.4) / 27.0
    return np.where(mels >= min_log_mel, min_log_hz * np.exp(logstep * (mels - min_log_mel)), f_sp * mels)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Slaney-normalised triangular filters (n_mels, n_fft // 2 + 1) float32, = librosa.filters.mel defaults."""
    fft_hz = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), n_mels + 2))
    ramps = mel_hz[:, None] - fft_hz[None, :]
    widths = np.diff(mel_hz)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]  # equal area per filter (norm='slaney')
    return weights.astype(np.float32)


def dct_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II basis (n_out, n_in) float32: y = M @ x equals scipy dct(x, type=2, norm='ortho')[:n_out]."""
    k = np.arange(n_out)[:, None]
    n = np.arange(n_in)[None, :]
    basis = np.cos(np.pi * k * (2 * n + 1) / (2 * n_in)) * math.sqrt(2.0 / n_in)
    basis[0] /= math.sqrt(2.0)
    return basis.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mfcc_matrices(sample_rate: int, n_fft: int, n_mels: int, n_mfcc: int, device: str):
    mel = torch.from_numpy(mel_filterbank(sample_rate, n_fft, n_mels)).to(device)
    dct = torch.from_numpy(dct_matrix(n_mels, n_mfcc)).to(device)
    return mel, dct


def _stft(waveform: torch.Tensor, p: Params) -> torch.Tensor:
    """(S,) or (N, S) -> complex STFT (F, T) or (N, F, T), T = 1 + S // hop, centred with reflect padding."""
    return torch.stft(
        waveform,
        n_fft=p.n_fft,
        hop_length=p.hop_length,
        win_length=p.n_fft,
        window=_window(p.window, p.n_fft, str(waveform.device)),
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )


def _log1p_magnitude(spec: torch.Tensor) -> torch.Tensor:
    """log1p |spec|, same shape, float32."""
    if spec.device.type == "cpu":
        # numpy's vectorised complex abs and log1p are ~3x faster than torch's on CPU, and this
        # is the bulk of feature extraction after the FFT itself.
        magnitude = np.abs(spec.detach().numpy())
        return torch.from_numpy(np.log1p(magnitude, out=magnitude))
    return spec.abs().log1p_()


def _power(spec: torch.Tensor) -> torch.Tensor:
    """|spec|^2 as re^2 + im^2: torch's complex abs() on CPU costs more than the FFT itself."""
    parts = torch.view_as_real(spec)
    real, imag = parts[..., 0], parts[..., 1]
    return torch.addcmul(real * real, imag, imag)


def _mfcc(power: torch.Tensor, p: Params) -> torch.Tensor:
    """|STFT|^2 (..., F, T) -> MFCC (..., T, n_mfcc), top_db clipping per utterance as librosa."""
    mel, dct = _mfcc_matrices(p.sample_rate, p.n_fft, p.n_mels, p.n_mfcc, str(power.device))
    mel_power = power.transpose(-1, -2) @ mel.T  # (..., T, n_mels)
    db = 10.0 * torch.log10(torch.clamp(mel_power, min=1e-10))
    peak = db.amax(dim=(-2, -1), keepdim=True)
    db = torch.maximum(db, peak - 80.0)
    return db @ dct.T


def extract(waveform: torch.Tensor, p: Params) -> torch.Tensor:
    """Waveform (S,) float32 in [-1, 1] -> features (T, F) float32 on the same device.

    T = 1 + S // p.hop_length; F = p.n_features. Also accepts a batch (N, S) of equal-length
    waveforms -> (N, T, F). Raises FeatureError if the waveform is too short to reflect-pad.
    """
    if waveform.dim() not in (1, 2):
        raise FeatureError(f"waveform must be (S,) or (N, S), got shape {tuple(waveform.shape)}")
    samples = waveform.shape[-1]
    if samples <= p.n_fft // 2:
        raise FeatureError(f"waveform of {samples} samples is too short: need more than {p.n_fft // 2} (n_fft // 2)")
    spec = _stft(waveform.to(torch.float32), p)
    if p.feature == "mfcc":
        return _mfcc(_power(spec), p)
    return _log1p_magnitude(spec).transpose(-1, -2)


def padding(p: Params) -> int:
    """Samples extract() reflect-pads at each end of a waveform (its frames are centred)."""
    return p.n_fft // 2


def spectrogram_frames(padded: torch.Tensor, p: Params) -> torch.Tensor:
    """Samples (L,) already padded as extract() pads them -> the spectrogram frames (T, F) they hold whole,
    T = 1 + (L - n_fft) // hop: extract()'s frames of any stretch of its padded waveform (streaming)."""
    spec = torch.stft(
        padded.to(torch.float32),
        n_fft=p.n_fft,
        hop_length=p.hop_length,
        win_length=p.n_fft,
        window=_window(p.window, p.n_fft, str(padded.device)),
        center=False,
        return_complex=True,
    )
    return _log1p_magnitude(spec).transpose(-1, -2)


def frame_count(samples: int, p: Params) -> int:
    """Frames extract() makes from `samples` samples (known from the audio header alone)."""
    return 1 + samples // p.hop_length
