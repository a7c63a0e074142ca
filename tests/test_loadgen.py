"""bench.loadgen and bench.loadgen_accuracy: every LoadGen scenario runs briefly, and accuracy mode's WER
is pytorch.evaluate's on the same split.

The model is trained here for 2 epochs on the learning test's corpus (tests/trainer_fixtures, about
3 s): its validation WER is about 68%, with right and wrong words, so an equal WER means something
(a random model reads every utterance as the same word: 100% whatever the harness does).
"""

import binascii
import contextlib
import io
import json
import re

import jiwer
import pytest

import params
from bench import loadgen, loadgen_accuracy
from exit_status import ExitStatus
from pytorch import evaluate, train
from tests import trainer_fixtures

pytest.importorskip("mlperf_loadgen", reason="mlcommons-loadgen is not installed")

LEARNS = ["preset=tiny", "hidden_size=64", "conv_channels=8", "optimizer=adamw", "batch_size=8", "epochs=2",
          "target_wer=0", "lr=3e-3"]  # fmt: skip
# The tiny model answers in milliseconds: expected loads to match, so short runs stay short.
FAST_CONF = """\
ds2.SingleStream.target_latency = 5
ds2.Offline.target_qps = 200
ds2.Server.target_qps = 200
ds2.Server.target_latency = 1000
"""
# Each scenario's figure of merit in mlperf_log_summary.txt.
FIGURES = {
    "SingleStream": "90.0th percentile latency (ns)",
    "Offline": "Samples per second",
    "Server": "Completed samples per second",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(checkpoint, data dir, user.conf) of a partly trained tiny model."""
    root = tmp_path_factory.mktemp("loadgen")
    data_dir = trainer_fixtures.write_learning_dataset(root / "data", params.parse(LEARNS))
    args = ["--data-dir", str(data_dir), "--results-dir", str(root / "r"), "--device", "cpu", *LEARNS]
    assert train.main(args) == ExitStatus.TARGET_MISSED  # target_wer=0: every epoch runs
    (root / "user.conf").write_text(FAST_CONF)
    return root / "r" / "checkpoints" / "last.pt", data_dir, root / "user.conf"


def _loadgen(setup, out_dir, *extra) -> int:
    checkpoint, data_dir, user_conf = setup
    common = ["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--split", "val"]
    return loadgen.main([*common, "--user-conf", str(user_conf), "--output-dir", str(out_dir), *extra])


@pytest.fixture(scope="module")
def evaluated(setup, tmp_path_factory):
    """(the WER pytorch.evaluate prints, as printed, {id: hypothesis} of its predictions) on the val split."""
    checkpoint, data_dir, _ = setup
    predictions = tmp_path_factory.mktemp("evaluate") / "pred.jsonl"
    args = ["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--split", "val"]
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert evaluate.main([*args, "--predictions", str(predictions)]) == 0
    wer = re.search(r"^WER \(corpus\): ([0-9.]+)%", out.getvalue(), re.MULTILINE).group(1)
    rows = [json.loads(line) for line in predictions.read_text().splitlines()]
    assert 20 < float(wer) < 90, "the model should read some words right and some wrong"
    return wer, {r["id"]: r["hypothesis"] for r in rows}


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


@pytest.mark.parametrize("scenario", loadgen.SCENARIOS)
def test_each_scenario_runs_briefly(setup, tmp_path, capsys, scenario):
    assert _loadgen(setup, tmp_path, "--scenario", scenario, "--min-duration-s", "0.2") == 0
    out = capsys.readouterr().out
    summary = (tmp_path / "mlperf_log_summary.txt").read_text()
    assert f"Scenario : {scenario}" in summary and "Mode     : PerformanceOnly" in summary
    assert f"logs: {tmp_path}" in out
    assert re.search(r"^Result is : (VALID|INVALID)$", out, re.MULTILINE)
    assert re.search(rf"^{re.escape(FIGURES[scenario])}\s*: [0-9.]+", out, re.MULTILINE), out


@pytest.mark.parametrize(
    ("scenario", "batch"), [("SingleStream", "1"), ("Offline", "3"), ("Server", "4")]
)  # fmt: skip
def test_accuracy_mode_wer_equals_evaluate(setup, evaluated, tmp_path, capsys, scenario, batch):
    """The printed WER is pytorch.evaluate's, and so is every transcript LoadGen logged, whatever the batching."""
    wer, hypotheses = evaluated
    assert _loadgen(setup, tmp_path, "--scenario", scenario, "--mode", "accuracy", "--batch-size", batch) == 0
    assert _last_line(capsys.readouterr().out) == f"WER {wer}"
    split = loadgen_accuracy.loader.open_split(setup[1], "val")
    logged = loadgen_accuracy.transcripts(tmp_path / loadgen_accuracy.ACCURACY_LOG, len(split))
    assert {split.manifest.id(i): text for i, text in enumerate(logged)} == hypotheses


def test_onnxruntime_backend_gives_the_same_wer(setup, evaluated, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    assert _loadgen(setup, tmp_path, "--mode", "accuracy", "--backend", "onnxruntime") == 0
    assert _last_line(capsys.readouterr().out) == f"WER {evaluated[0]}"


@pytest.fixture(scope="module")
def accuracy_log(setup, tmp_path_factory):
    """An Offline accuracy-mode log directory of the val split."""
    out_dir = tmp_path_factory.mktemp("offline-accuracy")
    assert _loadgen(setup, out_dir, "--mode", "accuracy") == 0
    return out_dir


def test_accuracy_command_reads_a_log_directory(setup, evaluated, accuracy_log, capsys):
    args = ["--log-dir", str(accuracy_log), "--data-dir", str(setup[1]), "--split", "val"]
    assert loadgen_accuracy.main(args) == 0
    assert _last_line(capsys.readouterr().out) == f"WER {evaluated[0]}"


def _entries(log_dir) -> list[dict]:
    return json.loads((log_dir / loadgen_accuracy.ACCURACY_LOG).read_text())


def _check(setup, path, capsys) -> tuple[int, str]:
    status = loadgen_accuracy.main(["--accuracy-log", str(path), "--data-dir", str(setup[1]), "--split", "val"])
    captured = capsys.readouterr()
    return status, captured.out + captured.err


def test_wer_is_the_corpus_wer_of_the_logged_transcripts(setup, accuracy_log, tmp_path, capsys):
    """Independent arithmetic: half the samples answered with their reference, jiwer over all."""
    split = loadgen_accuracy.loader.open_split(setup[1], "val")
    entries = _entries(accuracy_log)
    for entry in entries[::2]:
        entry["data"] = binascii.hexlify(split.manifest.transcript(entry["qsl_idx"]).encode()).decode()
    (tmp_path / "log.json").write_text(json.dumps(entries))
    status, out = _check(setup, tmp_path / "log.json", capsys)
    by_index = {e["qsl_idx"]: binascii.unhexlify(e["data"]).decode() for e in entries}
    refs = [split.manifest.transcript(i) for i in range(len(split))]
    expected = 100 * jiwer.wer(refs, [by_index[i] for i in range(len(split))])
    assert status == 0 and _last_line(out) == f"WER {expected:.2f}"


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda e: e[1:], "samples are missing"),
        (lambda e: e + e[:1], "appears more than once"),
        (lambda e: [{**e[0], "data": "zz"}, *e[1:]], "entry"),
        (lambda e: [{**e[0], "data": "ff"}, *e[1:]], "utf-8"),
        (lambda e: [{**e[0], "qsl_idx": 10_000}, *e[1:]], "qsl_idx 10000"),
    ],
    ids=["missing", "duplicate", "not-hex", "not-utf8", "out-of-range"],
)
def test_bad_accuracy_log_exits_1_naming_it(setup, accuracy_log, tmp_path, capsys, damage, message):
    path = tmp_path / "log.json"
    path.write_text(json.dumps(damage(_entries(accuracy_log))))
    status, err = _check(setup, path, capsys)
    assert status == 1 and str(path) in err and message in err, err


def test_truncated_or_missing_log_exits_1_naming_it(setup, accuracy_log, tmp_path, capsys):
    path = tmp_path / "log.json"
    path.write_text((accuracy_log / loadgen_accuracy.ACCURACY_LOG).read_text()[:-10])
    status, err = _check(setup, path, capsys)
    assert status == 1 and str(path) in err and "truncated" in err
    status, err = _check(setup, tmp_path / "absent.json", capsys)
    assert status == 1 and str(tmp_path / "absent.json") in err


class _FailingRunner:
    """A backend that loads but fails on every forward pass."""

    name, device = "failing", None

    def __init__(self, p):
        self.p = p

    def __call__(self, features, lengths):
        raise RuntimeError("the accelerator fell off")

    def feature_stats(self):
        return None  # normalised per utterance, as the trained model of the fixture


def test_a_model_failure_ends_the_test_and_exits_1(setup, tmp_path, capsys, monkeypatch):
    """LoadGen must not wait forever for answers that never come: the samples are answered, then the error."""
    p = params.parse(LEARNS)
    monkeypatch.setattr(loadgen.backends, "load", lambda *args: _FailingRunner(p))
    assert _loadgen(setup, tmp_path, "--scenario", "Server", "--min-duration-s", "0.1") == 1
    assert "the accelerator fell off" in capsys.readouterr().err


def test_missing_user_conf_exits_2_naming_it(setup, tmp_path, capsys):
    checkpoint, data_dir, _ = setup
    args = ["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--user-conf", str(tmp_path / "no.conf")]
    assert loadgen.main(args) == 2
    assert str(tmp_path / "no.conf") in capsys.readouterr().err


def test_unparsable_user_conf_exits_2_naming_it(setup, tmp_path, capsys):
    (tmp_path / "bad.conf").write_text("ds2.Offline.target_qps = many\n")
    checkpoint, data_dir, _ = setup
    args = ["--checkpoint", str(checkpoint), "--data-dir", str(data_dir), "--user-conf", str(tmp_path / "bad.conf")]
    assert loadgen.main(args) == 2
    assert f"--user-conf {tmp_path / 'bad.conf'}: LoadGen cannot parse it" in capsys.readouterr().err


def test_missing_split_exits_1_naming_its_manifest(setup, tmp_path, capsys):
    assert _loadgen(setup, tmp_path, "--split", "nosuch") == 1
    assert "nosuch.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--min-duration-s", "--batch-size", "--min-query-count"])
def test_non_positive_option_exits_2_naming_it(option, capsys):
    with pytest.raises(SystemExit) as exited:
        loadgen.parse_args(["--checkpoint", "x", option, "0"])
    assert exited.value.code == 2 and option in capsys.readouterr().err


def test_shipped_user_conf_sets_every_scenario():
    lines = [line for line in loadgen.USER_CONF.read_text().splitlines() if line.strip() and line[0] != "#"]
    keys = {line.split("=")[0].strip() for line in lines}
    assert keys == {"ds2.SingleStream.target_latency", "ds2.Offline.target_qps", "ds2.Server.target_qps",
                    "ds2.Server.target_latency"}  # fmt: skip


@pytest.mark.parametrize("command", [loadgen, loadgen_accuracy], ids=["loadgen", "loadgen_accuracy"])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as exited:
        command.main(["--help"])
    out = capsys.readouterr().out
    assert exited.value.code == 0 and "--split" in out and "--data-dir" in out


def test_settings_come_from_user_conf_then_the_short_run_options():
    import mlperf_loadgen as lg  # noqa: PLC0415 (skipped above when missing)

    args = loadgen.parse_args(["--checkpoint", "x", "--scenario", "Server", "--min-duration-s", "0.25"])
    settings = loadgen.make_settings(lg, args)
    assert settings.server_target_qps == 100 and settings.server_target_latency_ns == 1_000_000_000
    assert settings.min_duration_ms == 250 and settings.min_query_count == 1
    args = loadgen.parse_args(["--checkpoint", "x", "--min-duration-s", "1", "--min-query-count", "7"])
    settings = loadgen.make_settings(lg, args)
    assert settings.offline_expected_qps == 250 and settings.min_query_count == 7
