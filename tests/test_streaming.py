"""pytorch.streaming: a unidirectional, globally normalised model streamed in chunks gives the offline
output; normalization=global's statistics from preparation to the checkpoint; transcribe --stream."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

import params
from bench import streaming as bench
from data import normalization
from data.dataset_dir import DatasetDir
from data.features import FeatureError, extract
from data.normalization import FeatureStats, FeatureSums, NormalizationError, normalise, split_stats
from data.prepare import prepare
from exit_status import ExitStatus
from pytorch import checkpoint, loader, train, transcribe
from pytorch.inference import load_model
from pytorch.model import DeepSpeech2
from pytorch.streaming import Streamer, StreamingError, chunks
from tests import corpus, trainer_fixtures

STREAMABLE = {"preset": "tiny", "bidirectional": False, "normalization": "global", "hidden_layers": 2}


def _model(overrides=None, seed: int = 0) -> tuple[DeepSpeech2, params.Params]:
    """A random-weight model in eval mode with non-trivial BatchNorm and feature statistics."""
    p = params.make(STREAMABLE | (overrides or {}))
    torch.manual_seed(seed)
    model = DeepSpeech2(p)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    if p.normalization == "global":
        model.set_feature_stats(FeatureStats(torch.rand(p.n_features), torch.rand(p.n_features) + 0.5))
    return model.eval(), p


@pytest.fixture(scope="module")
def streamable():
    """(model, p, waveform (S,) of an odd length, offline log-probs (T', 29), offline greedy transcript)."""
    model, p = _model()
    rng = np.random.default_rng(0)
    waveform = torch.from_numpy(corpus.utterance_audio(rng, 1.5) + 0.05 * rng.standard_normal(24000).astype("f4"))
    waveform = waveform[:-7]
    with torch.no_grad():
        features = normalise(extract(waveform, p).t(), model.feature_stats())
        log_probs, lengths = model(features[None], torch.tensor([features.shape[1]]))
    log_probs = log_probs[: int(lengths[0]), 0]
    text = transcribe.transcribe(model, features, "cpu")
    return model, p, waveform, log_probs, text


@pytest.mark.parametrize("chunk_ms", [10, 37, 100, None], ids=["one-frame", "37ms", "100ms", "whole"])
def test_streamed_output_equals_offline(streamable, chunk_ms):
    model, p, waveform, offline, text = streamable
    assert text  # random weights still spell something: the comparison below is not of two empty strings
    size = waveform.shape[0] if chunk_ms is None else chunk_ms * p.sample_rate // 1000
    streamer, partials, frames = Streamer(model, p), [], []
    for chunk in chunks(waveform, size):
        partials.append(streamer.feed(chunk))
        frames.append(streamer.log_probs.shape[0])
    final = streamer.finish()
    assert streamer.log_probs.shape == offline.shape
    torch.testing.assert_close(streamer.log_probs, offline, atol=1e-5, rtol=1e-5)
    assert final == text
    for earlier, later in zip(partials, [*partials[1:], final]):
        assert later.startswith(earlier)
    if chunk_ms == 10:  # output frames arrive while the audio does, one per two input frames
        assert 0 < frames[len(frames) // 2] < offline.shape[0]


def test_uneven_chunks_and_a_short_stream():
    model, p = _model(seed=1)
    waveform = torch.randn(9000) * 0.1
    sizes = [1, 80, 81, 3, 500, 161, 2000]  # a few samples at a time, before and after the left pad
    streamer, start = Streamer(model, p), 0
    for size in sizes * 3:
        streamer.feed(waveform[start : start + size])
        start += size
    streamer.feed(waveform[start:])
    streamer.finish()
    with torch.no_grad():
        features = normalise(extract(waveform, p).t(), model.feature_stats())
        offline, _ = model(features[None], torch.tensor([features.shape[1]]))
    torch.testing.assert_close(streamer.log_probs, offline[:, 0], atol=1e-5, rtol=1e-5)
    short = Streamer(model, p)  # under MIN_FRAMES frames: no output, as offline
    short.feed(waveform[:3000])
    assert short.finish() == "" and short.log_probs.shape == (0, 29)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"bidirectional": True}, "bidirectional=True"),
        ({"normalization": "utterance"}, "train the model with normalization=global"),
        ({"feature": "mfcc", "n_mels": 81, "n_mfcc": 81}, "top_db clipping"),
    ],
)
def test_refusals(overrides, message):
    model, p = _model(overrides)
    with pytest.raises(StreamingError, match=message):
        Streamer(model, p)


def test_misuse_is_a_clear_error():
    model, p = _model()
    with pytest.raises(StreamingError, match="eval"):
        Streamer(model.train(), p)
    model.eval()
    streamer = Streamer(model, p)
    with pytest.raises(StreamingError, match="1-D"):
        streamer.feed(torch.zeros(2, 100))
    streamer.feed(torch.zeros(50))
    with pytest.raises(FeatureError, match="too short"):
        streamer.finish()
    done = Streamer(model, p)
    done.feed(torch.zeros(400))
    done.finish()
    with pytest.raises(StreamingError, match="after finish"):
        done.feed(torch.zeros(10))


# ---------------------------------------------------------------- the statistics, preparation to checkpoint


def test_normalise_global_is_per_bin():
    stats = FeatureStats(torch.tensor([1.0, -2.0]), torch.tensor([2.0, 0.5]))
    out = normalise(torch.tensor([[3.0, 1.0], [-2.0, -1.0]]), stats)
    assert torch.equal(out, torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    back = FeatureStats.from_json(json.loads(json.dumps(stats.to_json())))
    assert torch.equal(back.mean, stats.mean) and torch.equal(back.std, stats.std)
    with pytest.raises(ValueError, match="std positive"):
        FeatureStats.from_json({"mean": [0.0], "std": [0.0]})


def _stored_frames(data_dir, subsets) -> np.ndarray:
    """Every stored frame (T, F) of the subsets' shards, as float64."""
    shards = sorted(f for s in subsets for f in (data_dir / "features" / s).glob("*.npy"))
    return np.concatenate([np.load(f) for f in shards]).astype(np.float64)


def test_preparation_records_sums_that_give_each_splits_statistics(tmp_path):
    tree = {"dev-clean": (1, 2), "dev-other": (1, 2), "train-clean-100": (2, 2)}
    data_dir = corpus.write_tree(tmp_path / "ds", tree, seconds=(0.3, 0.6))
    p = params.make({"window_size": 0.01})
    prepare(data_dir, None, p, jobs=1)
    dataset = DatasetDir(data_dir)
    for split, subsets in (("val", ["dev-clean", "dev-other"]), ("train", ["train-clean-100"])):
        frames = _stored_frames(data_dir, subsets)
        stats = split_stats(data_dir, split)
        np.testing.assert_allclose(stats.mean.numpy(), frames.mean(axis=0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(stats.std.numpy(), frames.std(axis=0), rtol=1e-5, atol=1e-6)
    recorded = dataset.feature_sums("train-clean-100").relative_to(data_dir).as_posix()
    assert recorded in (data_dir / "checksums" / "train-clean-100.sha256").read_text()  # verify checks it
    # A directory prepared before the statistics were recorded: a named error for global only.
    dataset.feature_sums("train-clean-100").unlink()
    with pytest.raises(NormalizationError, match=r"statistics.json: missing.*--force --subsets train-clean-100"):
        split_stats(data_dir, "train")
    assert loader.open_training_split(data_dir, p).dataset.stats is None  # utterance: no statistics needed
    with pytest.raises(NormalizationError, match="statistics.json"):
        loader.open_training_split(data_dir, params.make({"window_size": 0.01, "normalization": "global"}))


def test_training_with_global_normalization_keeps_the_statistics_in_the_checkpoint(tmp_path):
    p = params.make(STREAMABLE)
    data_dir = trainer_fixtures.write_dataset(tmp_path / "data", p, train_copies=1)
    dataset = DatasetDir(data_dir)
    shard = np.load(data_dir / "features" / "train-clean-100" / "100-5.npy")
    normalization.write_sums(dataset, "train-clean-100", FeatureSums.of(shard))
    dataset.mark("prepare", "train-clean-100")  # as data.prepare leaves it: the train split's source
    words = ["--data-dir", str(data_dir), "--results-dir", str(tmp_path / "r"), "--device", "cpu"]
    overrides = [f"{k}={v}" for k, v in STREAMABLE.items()] + ["epochs=1", "target_wer=100"]
    assert train.main([*words, *overrides]) == ExitStatus.OK
    model, loaded = load_model(tmp_path / "r" / "checkpoints" / "last.pt", "cpu")
    expected = FeatureSums.of(shard).stats()
    assert loaded.normalization == "global"
    assert torch.equal(model.feature_stats().mean, expected.mean) and torch.equal(
        model.feature_stats().std, expected.std
    )
    streamer = Streamer(model, loaded)  # the checkpoint alone is enough to stream
    streamer.feed(torch.zeros(4000))
    streamer.finish()


# ---------------------------------------------------------------- python -m pytorch.transcribe --stream


def _save(path, model, p) -> None:
    optimizer = torch.optim.SGD(model.parameters(), lr=p.lr)
    checkpoint.save(path, checkpoint.snapshot(model, optimizer, None, p, checkpoint.RunState(epoch=1)))


def test_transcribe_stream_prints_partials_and_the_offline_line(tmp_path, capsys):
    model, p = _model()
    _save(tmp_path / "ckpt.pt", model, p)
    flac = tmp_path / "a.flac"
    sf.write(flac, corpus.utterance_audio(np.random.default_rng(3), 1.2), 16000, subtype="PCM_16")
    args = ["--checkpoint", str(tmp_path / "ckpt.pt"), "--device", "cpu"]
    assert transcribe.main([*args, str(flac)]) == ExitStatus.OK
    offline = capsys.readouterr().out
    assert transcribe.main([*args, "--stream", "--chunk-ms", "37", str(flac)]) == ExitStatus.OK
    out, err = capsys.readouterr()
    assert out == offline and out.split("\t")[1].strip()
    partials = [line.split(": ", 1)[1] for line in err.splitlines() if "s: " in line]
    assert partials and partials[-1] == out.split("\t")[1].rstrip("\n")
    missing = tmp_path / "missing.flac"
    assert transcribe.main([*args, "--stream", str(missing), str(flac)]) == ExitStatus.ERROR
    out, err = capsys.readouterr()
    assert out == offline and str(missing) in err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backend", "onnxruntime"], "--backend onnxruntime"),
        (["--decoder", "beam"], "--decoder beam"),
        (["--timestamps"], "--timestamps"),
        (["--chunk-ms", "0.01"], "less than one sample"),
    ],
)
def test_transcribe_stream_usage_errors(tmp_path, capsys, extra, message):
    model, p = _model()
    _save(tmp_path / "ckpt.pt", model, p)
    flac = tmp_path / "a.flac"
    sf.write(flac, np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    argv = ["--checkpoint", str(tmp_path / "ckpt.pt"), "--device", "cpu", "--stream", *extra, str(flac)]
    assert transcribe.main(argv) == ExitStatus.USAGE
    assert message in capsys.readouterr().err


def test_transcribe_stream_refuses_an_utterance_normalised_model(tmp_path, capsys):
    model, p = _model({"normalization": "utterance"})
    _save(tmp_path / "ckpt.pt", model, p)
    flac = tmp_path / "a.flac"
    sf.write(flac, np.zeros(8000, np.float32), 16000, subtype="PCM_16")
    argv = ["--checkpoint", str(tmp_path / "ckpt.pt"), "--device", "cpu", "--stream", str(flac)]
    assert transcribe.main(argv) == ExitStatus.USAGE
    assert "normalization=global" in capsys.readouterr().err


# ---------------------------------------------------------------- bench.streaming


def test_bench_streams_random_weights_and_times_words(tmp_path, capsys, streamable):
    flac = tmp_path / "a.flac"
    sf.write(flac, corpus.utterance_audio(np.random.default_rng(4), 1.0), 16000, subtype="PCM_16")
    assert bench.main(["--random", "--chunk-ms", "100,200", str(flac)]) == ExitStatus.OK
    out = capsys.readouterr().out
    assert "chunk 100 ms: RTF" in out and "chunk 200 ms: RTF" in out and "lat p99" not in out
    model, p, waveform, offline, text = streamable
    ends = bench.word_ends(text, offline, p, waveform.shape[0] / p.sample_rate)
    assert [end for end, _ in ends][-1] == len(text) and all(0 < s <= 1.5 for _, s in ends)
