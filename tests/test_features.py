"""data.features.extract against librosa (the reference's library), with the same definition."""

import numpy as np
import pytest
import scipy.signal
import torch

import params
from data.features import FeatureError, extract, frame_count, mel_filterbank

librosa = pytest.importorskip("librosa")


def _waveform(samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(samples)).astype(np.float32)


@pytest.mark.parametrize("window_size,bins", [(0.02, 161), (0.01, 81)])
@pytest.mark.parametrize("window", ["hamming", "hann"])
def test_spectrogram_equals_librosa_log1p_magnitude(window_size, bins, window):
    p = params.make({"window_size": window_size, "window": window})
    y = _waveform(16037)
    expected = np.log1p(
        np.abs(
            librosa.stft(
                y,
                n_fft=p.n_fft,
                hop_length=p.hop_length,
                win_length=p.n_fft,
                window=window,
                center=True,
                pad_mode="reflect",
            )
        )
    ).T
    ours = extract(torch.from_numpy(y), p)
    assert ours.dtype == torch.float32 and ours.shape == (1 + 16037 // 160, bins) == expected.shape
    np.testing.assert_allclose(ours.numpy(), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("window_size", [0.02, 0.01])
def test_mfcc_equals_librosa_mfcc(window_size):
    p = params.make({"window_size": window_size, "feature": "mfcc", "n_mels": 40, "n_mfcc": 13})
    y = _waveform(12345, seed=1)
    expected = librosa.feature.mfcc(
        y=y,
        sr=16000,
        n_mfcc=13,
        n_mels=40,
        n_fft=p.n_fft,
        hop_length=p.hop_length,
        win_length=p.n_fft,
        window=p.window,
        center=True,
        pad_mode="reflect",
    ).T
    ours = extract(torch.from_numpy(y), p).numpy()
    assert ours.shape == expected.shape == (1 + 12345 // 160, 13)
    np.testing.assert_allclose(ours, expected, atol=1e-3 * np.abs(expected).max())


def test_mel_filterbank_equals_librosa():
    np.testing.assert_allclose(
        mel_filterbank(16000, 320, 40), librosa.filters.mel(sr=16000, n_fft=320, n_mels=40), atol=1e-7
    )


@pytest.mark.parametrize("window", ["hamming", "hann", "blackman", "bartlett"])
def test_windows_are_periodic_as_scipy_fftbins(window):
    # An impulse's spectrum is flat at the window value under it, which reads the window back;
    # a symmetric window differs from the periodic one by ~2e-5 at its centre.
    p = params.make({"window": window})
    impulse = np.zeros(961, np.float32)
    impulse[480] = 1.0  # centre of frame 3 (window index 160), first sample of frame 4 (index 0)
    frames = np.expm1(extract(torch.from_numpy(impulse), p).numpy().astype(np.float64))
    w = scipy.signal.get_window(window, p.n_fft, fftbins=True)
    np.testing.assert_allclose(frames[3], np.full(161, w[160]), atol=1e-6)
    np.testing.assert_allclose(frames[4], np.full(161, w[0]), atol=1e-6)


@pytest.mark.parametrize("samples", [161, 1000, 16000, 16159, 16160])
def test_frame_count(samples):
    p = params.make()
    assert extract(torch.from_numpy(_waveform(samples)), p).shape[0] == frame_count(samples, p) == 1 + samples // 160


def test_batched_equals_single():
    p = params.make({"feature": "mfcc"})
    batch = torch.from_numpy(np.stack([_waveform(4000, seed) for seed in range(3)]))
    together = extract(batch, p)
    assert together.shape == (3, 26, 13)
    for i in range(3):
        torch.testing.assert_close(together[i], extract(batch[i], p))


def test_too_short_and_wrong_shape_are_named_errors():
    p = params.make()
    with pytest.raises(FeatureError, match="160 samples is too short"):
        extract(torch.zeros(160), p)
    with pytest.raises(FeatureError, match="shape"):
        extract(torch.zeros(1, 1, 400), p)
