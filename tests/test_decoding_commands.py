"""The decoders through the commands: pytorch.evaluate, pytorch.transcribe (--timestamps, --plot),
pytorch.tune_lm, bench.decoding and bench.inference_latency, on a tiny checkpoint and dataset."""

import json
import re

import numpy as np
import pytest
import soundfile as sf

import params
from bench import decoding as decoding_bench
from bench import inference_latency
from pytorch import align, evaluate, lm, transcribe, tune_lm
from tests import corpus, trainer_fixtures

pytest.importorskip("flashlight.lib.text", reason="flashlight-text (KenLM) is not installed for this platform")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, write_checkpoint):
    """(checkpoint, data dir, LM of the training transcripts, a 1.5 s FLAC, Params) for preset=tiny."""
    root = tmp_path_factory.mktemp("decoding")
    p = params.make({"preset": "tiny"})
    data_dir = trainer_fixtures.write_dataset(root / "data", p)
    write_checkpoint(root / "ckpt.pt", p, seed=5)
    arpa = root / "train.arpa"
    assert lm.main(["--order", "2", "--out", str(arpa), "--data-dir", str(data_dir), "--split", "train"]) == 0
    flac = root / "a.flac"
    sf.write(flac, corpus.utterance_audio(np.random.default_rng(0), 1.5, 16000), 16000, subtype="PCM_16")
    return root / "ckpt.pt", data_dir, arpa, flac, p


def predictions(path) -> dict[str, str]:
    return {row["id"]: row["hypothesis"] for row in map(json.loads, path.read_text().splitlines())}


def test_evaluate_beam_of_size_1_predicts_as_greedy_and_says_which_decoder(setup, tmp_path, capsys):
    ckpt, data_dir, _, _, _ = setup
    base = ["--checkpoint", str(ckpt), "--data-dir", str(data_dir), "--num-workers", "0"]
    assert evaluate.main([*base, "--predictions", str(tmp_path / "g.jsonl")]) == 0
    assert "decoder: greedy" in capsys.readouterr().out
    beam1 = [*base, "--decoder", "beam", "--beam-size", "1", "--predictions", str(tmp_path / "b.jsonl")]
    assert evaluate.main(beam1) == 0
    assert "decoder: beam search (beam 1, threshold 25, no LM, lexicon-free)" in capsys.readouterr().out
    assert predictions(tmp_path / "g.jsonl") == predictions(tmp_path / "b.jsonl")


def test_evaluate_with_an_lm_prints_only_lexicon_words(setup, tmp_path, capsys):
    ckpt, data_dir, arpa, _, _ = setup
    argv = ["--checkpoint", str(ckpt), "--data-dir", str(data_dir), "--num-workers", "0", "--decoder", "beam"]
    argv += ["--lm", str(arpa), "--lm-weight", "2", "--predictions", str(tmp_path / "lm.jsonl")]
    assert evaluate.main(argv) == 0
    out = capsys.readouterr().out
    vocabulary = set(lm.read_vocabulary(arpa))
    assert f"LM {arpa} over {len(vocabulary)} words, lm_weight 2, word_score 0" in out and "WER (corpus)" in out
    for hypothesis in predictions(tmp_path / "lm.jsonl").values():
        assert set(hypothesis.split()) <= vocabulary


def test_evaluate_refuses_bad_decoder_options(setup, tmp_path, capsys):
    ckpt, data_dir, _, _, _ = setup
    base = ["--checkpoint", str(ckpt), "--data-dir", str(data_dir)]
    assert evaluate.main([*base, "--lm", str(tmp_path / "x.arpa")]) == 2
    assert "--lm is an option of --decoder beam (not of --decoder greedy)" in capsys.readouterr().err
    assert evaluate.main([*base, "--decoder", "beam", "--lm", str(tmp_path / "x.arpa")]) == 1
    assert f"--lm {tmp_path / 'x.arpa'}: no such file" in capsys.readouterr().err


def test_transcribe_timestamps_are_json_with_words_inside_the_audio(setup, capsys):
    ckpt, _, arpa, flac, _ = setup
    assert transcribe.main(["--checkpoint", str(ckpt), str(flac)]) == 0
    plain = capsys.readouterr().out.split("\t")[1].strip()
    assert transcribe.main(["--checkpoint", str(ckpt), "--timestamps", str(flac)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["file"] == str(flac) and record["transcript"] == plain
    assert [w["word"] for w in record["words"]] == plain.split()
    ends = [0.0] + [t for w in record["words"] for t in (w["start"], w["end"])]
    assert ends == sorted(ends) and ends[-1] <= 1.5 + 1e-9
    argv = ["--checkpoint", str(ckpt), "--timestamps", "--decoder", "beam", "--lm", str(arpa), str(flac)]
    assert transcribe.main(argv) == 0
    with_lm = json.loads(capsys.readouterr().out)
    assert set(with_lm["transcript"].split()) <= set(lm.read_vocabulary(arpa))


def test_transcribe_plot_writes_a_png_of_one_file(setup, tmp_path, capsys):
    ckpt, _, _, flac, _ = setup
    png = tmp_path / "align.png"
    assert transcribe.main(["--checkpoint", str(ckpt), "--plot", str(png), str(flac)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plot: {png}" in capsys.readouterr().err
    assert transcribe.main(["--checkpoint", str(ckpt), "--plot", str(png), str(flac), str(flac)]) == 2
    assert "draws one file; 2 AUDIO files given" in capsys.readouterr().err
    assert transcribe.main(["--checkpoint", str(ckpt), "--plot", str(tmp_path / "a.jpg"), str(flac)]) == 2


def test_tune_lm_searches_the_grid_and_reports_the_best(setup, tmp_path, capsys):
    ckpt, data_dir, arpa, _, _ = setup
    argv = ["--checkpoint", str(ckpt), "--data-dir", str(data_dir), "--lm", str(arpa), "--num-workers", "0"]
    argv += ["--lm-weights", "0,1", "--word-scores", "0,2", "--beam-size", "4", "--json", str(tmp_path / "t.json")]
    assert tune_lm.main(argv) == 0
    out = capsys.readouterr().out
    assert len(re.findall(r"^\[\d/4\] lm_weight", out, re.M)) == 4
    record = json.loads((tmp_path / "t.json").read_text())
    best = record["best"]
    assert best == record["trials"][0] and best["wer"] == min(t["wer"] for t in record["trials"])
    assert f"best on val: --lm-weight {best['lm_weight']:g} --word-score {best['word_score']:g}" in out
    assert "greedy: WER" in out and "| lm_weight | word_score | WER (%) | CER (%) |" in out


def test_tune_lm_says_when_the_best_is_on_the_edge_of_the_search():
    points = tune_lm.grid([0.0, 1.0, 2.0], [-1.0, 0.0, 1.0])
    inside = tune_lm.Trial(1.0, 0.0, 5.0, 2.0, 5, 100)
    assert tune_lm.edge_notes(inside, points) == []
    corner = tune_lm.Trial(2.0, -1.0, 5.0, 2.0, 5, 100)
    assert tune_lm.edge_notes(corner, points) == [
        "note: the best lm_weight, 2, is the largest tried: widen the search past it",
        "note: the best word_score, -1, is the smallest tried: widen the search past it",
    ]


def test_tune_lm_random_points_are_seeded():
    a = tune_lm.random_points(5, 3, (0, 2), (-1, 1))
    assert a == tune_lm.random_points(5, 3, (0, 2), (-1, 1)) != tune_lm.random_points(5, 4, (0, 2), (-1, 1))
    assert all(0 <= x <= 2 and -1 <= y <= 1 for x, y in a)
    with pytest.raises(SystemExit):
        tune_lm.parse_args(["--checkpoint", "c", "--lm", "l", "--lm-weight-range", "2,1"])


def test_decoding_bench_times_three_decoders_in_paired_repeats(setup, tmp_path, capsys):
    ckpt, data_dir, arpa, _, _ = setup
    argv = ["--checkpoint", str(ckpt), "--data-dir", str(data_dir), "--lm", str(arpa), "--repeats", "2"]
    assert decoding_bench.main([*argv, "--beam-size", "4", "--json", str(tmp_path / "d.json")]) == 0
    out = capsys.readouterr().out
    assert "| decoder | WER (%) |" in out and "load average (1, 5, 15 min) before" in out
    report = json.loads((tmp_path / "d.json").read_text())
    assert [r["decoder"] for r in report["rows"]] == ["greedy", "beam, no LM", "beam + LM (train.arpa)"]
    for row in report["rows"]:
        assert len(row["seconds"]) == 2 and row["min_s"] <= row["median_s"] <= row["max_s"]
        assert row["times_real_time"] == pytest.approx(report["audio_s"] / row["median_s"])


def test_inference_latency_can_time_decoding_too(tmp_path, capsys):
    grid = ["preset=tiny", "--batch-sizes", "1", "--durations", "0.5", "--warmup", "0", "--iterations", "1"]
    out_json = tmp_path / "l.json"
    assert inference_latency.main([*grid, "--decoder", "beam", "--beam-size", "2", "--json", str(out_json)]) == 0
    assert "preset=tiny + beam decoding" in capsys.readouterr().out
    assert json.loads((tmp_path / "l.json").read_text())["decoder"].startswith("beam search (beam 2")
    assert inference_latency.main([*grid, "--lm", "x.arpa"]) == 2
    assert "add --decoder beam" in capsys.readouterr().err


@pytest.mark.parametrize("command", [tune_lm, decoding_bench, transcribe, evaluate], ids=lambda m: m.__name__)
def test_help_names_the_decoding_options(command, capsys):
    with pytest.raises(SystemExit) as exit_info:  # in this process: a python -m per command costs seconds
        command.parse_args(["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "--lm" in out and "--beam-size" in out


def test_word_timestamps_bench_knows_each_words_audible_span(setup, tmp_path, capsys):
    from bench import word_timestamps as bench

    quiet, loud = np.zeros(100, np.int16), np.full(50, 10_000, np.int16)
    samples, truth = bench.join_words([np.concatenate([quiet, loud, quiet])] * 2, ["A", "B"])
    assert len(samples) == 500 and [(t.start * 16000, t.end * 16000) for t in truth] == [(100, 150), (350, 400)]
    predicted = [align.WordTime(w, 0.0, 1.0, 0, 1) for w in ("A", "X", "B")]
    assert [(p.word, t.word) for p, t in bench.matched(predicted, truth)] == [("A", "A"), ("B", "B")]
    ckpt = setup[0]
    assert bench.main(["--checkpoint", str(ckpt), "--sentences", "1", "--json", str(tmp_path / "w.json")]) == 0
    assert "sentences: 1, recognised word for word:" in capsys.readouterr().out
    (sentence,) = json.loads((tmp_path / "w.json").read_text())["sentences"]
    edges = [x for t in sentence["truth"] for x in (t["start"], t["end"])]
    assert [t["word"] for t in sentence["truth"]] == sentence["text"].split() and edges == sorted(edges)
