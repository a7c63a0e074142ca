"""pytorch.transcribe: audio of any rate and channel count -> the trained pipeline's transcript."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import soxr
import torch

import params
from data import labels
from data.prepare import prepare
from pytorch import evaluate, loader
from pytorch.inference import load_model
from pytorch.transcribe import features_of, main, read_audio
from tests import corpus


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, write_checkpoint):
    """(checkpoint path, Params, a 16 kHz mono FLAC, a 22.05 kHz stereo WAV)."""
    root = tmp_path_factory.mktemp("transcribe")
    p = params.make({"preset": "tiny"})
    write_checkpoint(root / "ckpt.pt", p)
    rng = np.random.default_rng(0)
    flac, wav = root / "a.flac", root / "b.wav"
    sf.write(flac, corpus.utterance_audio(rng, 1.0, 16000), 16000, subtype="PCM_16")
    left, right = corpus.utterance_audio(rng, 1.2, 22050), corpus.utterance_audio(rng, 1.2, 22050)
    sf.write(wav, np.stack([left, right], axis=1), 22050, subtype="PCM_16")
    return root / "ckpt.pt", p, flac, wav


def _dominant_hz(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.fft.rfftfreq(len(wave), 1 / rate)[spectrum.argmax()]


def test_read_audio_mixes_to_mono_and_resamples(tmp_path):
    t = np.arange(22050) / 22050  # 1 s
    left, right = 0.5 * np.sin(2 * np.pi * 1000 * t), 0.1 * np.sin(2 * np.pi * 3000 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1).astype(np.float32), 22050, subtype="FLOAT")
    wave = read_audio(path, 16000).numpy()
    assert wave.dtype == np.float32 and wave.shape == (16000,)
    assert _dominant_hz(wave, 16000) == pytest.approx(1000, abs=2)
    # A band-limited resampler keeps both tones at their mixed amplitudes (mean of the channels).
    middle = wave[2000:-2000]
    expected = 0.25 * np.sin(2 * np.pi * 1000 * np.arange(2000, 14000) / 16000) + 0.05 * np.sin(
        2 * np.pi * 3000 * np.arange(2000, 14000) / 16000
    )
    assert np.abs(middle - expected).max() < 1e-3


def test_features_are_the_loaders(tmp_path):
    """The features transcribe feeds the model equal the loader's for the same prepared audio."""
    p = params.make({"preset": "tiny"})
    data_dir = corpus.write_tree(tmp_path, {"dev-clean": (1, 2)}, seconds=(0.5, 0.8))
    prepare(data_dir, ["dev-clean"], p, jobs=1)
    split = loader.open_split(data_dir, "dev-clean")
    for i in range(len(split)):
        from_loader = split.dataset[(i, None)].features  # (F, T), from the float16 shard
        ours = features_of(data_dir / split.manifest.row(i)["audio"], p)
        assert ours.shape == from_loader.shape
        assert torch.allclose(ours, from_loader, atol=0.02), split.manifest.id(i)


def test_prints_one_line_per_file(tiny, capsys):
    ckpt, _, flac, wav = tiny
    assert main(["--checkpoint", str(ckpt), str(flac), str(wav)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(flac), str(wav)]
    for line in lines:
        assert line.count("\t") == 1 and set(line.split("\t")[1]) <= set(labels.LABELS[1:])


def test_resampled_wav_matches_the_same_audio_at_16k(tiny, tmp_path):
    """The same 16 kHz audio stored at 22.05 kHz gives (nearly) the same features."""
    _, p, flac, _ = tiny
    audio, _ = sf.read(flac, dtype="float32")
    up = tmp_path / "up.wav"
    sf.write(up, soxr.resample(audio, 16000, 22050, quality="VHQ"), 22050, subtype="FLOAT")
    a, b = features_of(flac, p), features_of(up, p)
    assert a.shape == b.shape
    assert (a - b).abs().mean() < 0.05


def test_bad_files_exit_1_naming_them_and_the_rest_is_transcribed(tiny, tmp_path, capsys):
    ckpt, _, flac, _ = tiny
    missing, text, short = tmp_path / "missing.flac", tmp_path / "notes.wav", tmp_path / "short.wav"
    text.write_text("not audio")
    sf.write(short, np.zeros(10, np.float32), 16000)
    assert main(["--checkpoint", str(ckpt), str(missing), str(text), str(short), str(flac)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines()[0].startswith(f"{flac}\t") and len(out.splitlines()) == 1
    for bad in (missing, text, short):
        assert str(bad) in err


def test_missing_checkpoint_exits_1(tiny, tmp_path, capsys):
    _, _, flac, _ = tiny
    assert main(["--checkpoint", str(tmp_path / "none.pt"), str(flac)]) == 1
    assert str(tmp_path / "none.pt") in capsys.readouterr().err


def test_help_names_the_decoders_and_timestamps():
    out = subprocess.run(
        [sys.executable, "-m", "pytorch.transcribe", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "greedy" in out and "--checkpoint" in out and "--decoder {greedy,beam}" in out and "--timestamps" in out


def test_same_transcript_as_evaluate(tmp_path, capsys, write_checkpoint):
    """End to end: evaluate's hypothesis for a prepared utterance = transcribe's for its FLAC."""
    p = params.make({"preset": "tiny"})
    data_dir = corpus.write_tree(tmp_path / "data", {"dev-clean": (1, 3)}, seconds=(0.6, 1.0))
    prepare(data_dir, ["dev-clean"], p, jobs=1)
    write_checkpoint(tmp_path / "ckpt.pt", p, seed=3)
    predictions = tmp_path / "pred.jsonl"
    assert (
        evaluate.main(
            [
                "--checkpoint",
                str(tmp_path / "ckpt.pt"),
                "--data-dir",
                str(data_dir),
                "--split",
                "dev-clean",
                "--predictions",
                str(predictions),
            ]
        )
        == 0
    )
    rows = {r["id"]: r for r in loader.read_manifest(loader.manifest_path(data_dir, "dev-clean"))}
    capsys.readouterr()
    hypotheses = {
        json.loads(line)["id"]: json.loads(line)["hypothesis"] for line in predictions.read_text().splitlines()
    }
    assert any(hypotheses.values()), "all hypotheses empty: the comparison below would prove nothing"
    audio = [str(data_dir / rows[uid]["audio"]) for uid in sorted(rows)]
    assert main(["--checkpoint", str(tmp_path / "ckpt.pt"), *audio]) == 0
    transcribed = dict(line.split("\t") for line in capsys.readouterr().out.splitlines())
    agree = sum(transcribed[path] == hypotheses[uid] for uid, path in zip(sorted(rows), audio))
    # Shards are float16, so an argmax tie could flip a label; at most one utterance may differ.
    assert agree >= len(rows) - 1


def test_audio_too_short_for_the_convolutions_keeps_its_true_length(tiny, tmp_path, capsys):
    """As in training's evaluation: 0.2 s (21 frames < 31) goes in with its true length (the model
    pads it for the convolutions itself), so it has no output frame and an empty transcript."""
    from pytorch import transcribe as module

    ckpt = tiny[0]
    short = tmp_path / "short.flac"
    sf.write(short, np.random.default_rng(0).normal(0, 0.1, 3200).astype(np.float32), 16000)
    model, p = load_model(ckpt, "cpu")
    seen = []
    real_forward = model.forward
    model.forward = lambda feats, lengths: (
        seen.append((feats.shape[2], int(lengths[0]))),
        real_forward(feats, lengths),
    )[1]
    assert module.transcribe(model, module.features_of(short, p), "cpu") == ""
    assert seen == [(21, 21)]
