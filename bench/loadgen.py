"""An MLPerf Inference harness for DeepSpeech2: MLPerf LoadGen (mlperf_loadgen) drives the model over a
prepared split, in one of its scenarios and modes, on any backend (pytorch.backends).

    python -m bench.loadgen --checkpoint best.pt --data-dir D --split test --scenario Offline --mode performance
    python -m bench.loadgen --checkpoint best.pt --data-dir D --split test --scenario Server --mode accuracy \
        --backend onnxruntime
    python -m bench.loadgen ... --scenario SingleStream --min-duration-s 2     # a short run (CI): INVALID

The query sample library (QSL) holds the split's normalised features in memory, loaded when LoadGen
asks (untimed), so no disk read is timed. The system under test (SUT) queues the samples LoadGen
issues and one worker thread answers them: up to --batch-size waiting samples per forward pass, padded
(the model's output does not depend on padding), decoded greedily with the benchmark's decoder
(pytorch.inference), each answered with its transcript in UTF-8. SingleStream sends one sample at a
time, Offline all of them in one query (sorted by length here, so batches pad little), Server sends
queries at Poisson-distributed times and the worker batches what has queued up.

Settings: LoadGen's mlperf.conf, then bench/user.conf (this model's expected load on a 2-core CPU),
then --min-duration-s. Logs (mlperf_log_summary.txt, _detail.txt, _accuracy.json) go to --output-dir.
Accuracy mode ends with bench.loadgen_accuracy: the corpus WER of the transcripts LoadGen logged, the
same figure as pytorch.evaluate's, on the last line as `WER <value>`.
Exit status (exit_status.py): 0 done (whatever LoadGen's VALID/INVALID verdict), 1 a missing or unusable
checkpoint, data, user.conf or log, or a model failure during the run, 2 bad usage.
"""

import argparse
import collections
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

import exit_status
import params
from bench import loadgen_accuracy
from data import dataset_dir
from pytorch import backends, inference, loader

SCENARIOS = ("SingleStream", "Offline", "Server")
MODES = ("performance", "accuracy")
MODEL = "ds2"  # the model name of user.conf's lines
USER_CONF = Path(__file__).with_name("user.conf")
# The summary lines printed after a run: the verdict and each scenario's figure of merit.
SUMMARY_KEYS = (
    "Result is",
    "90.0th percentile latency (ns)",
    "Samples per second",
    "Completed samples per second",
    "99.00 percentile latency (ns)",
    "Min duration satisfied",
    "Min queries satisfied",
    "Early stopping satisfied",
    "Performance constraints satisfied",
)


def _loadgen():
    """The mlperf_loadgen module, or a Failure saying how to install it."""
    try:
        import mlperf_loadgen  # noqa: PLC0415 (only this command needs it)
    except ImportError as err:
        raise exit_status.Failure(f"mlperf_loadgen is not installed ({err}); pip install mlcommons-loadgen") from None
    return mlperf_loadgen


class SampleLibrary:
    """The QSL: sample i is row i of the split's manifest; its features (F, T) float32, normalised as
    evaluation normalises them, are held in memory between LoadGen's load and unload calls."""

    def __init__(self, split: loader.Split, performance_count: int):
        self.split, self.performance_count = split, performance_count
        self._features: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.split)

    def load(self, indices) -> None:
        for i in indices:
            self._features[i] = self.split.dataset[(i, None)].features

    def unload(self, indices) -> None:
        for i in indices:
            self._features.pop(i, None)

    def features(self, i: int) -> torch.Tensor:
        return self._features[i]


def pad(features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """N features (F, T_n) -> (zero-padded (N, F, max T_n) float32, lengths (N,) int64)."""
    lengths = torch.tensor([f.shape[1] for f in features], dtype=torch.long)
    batch = torch.zeros(len(features), features[0].shape[0], int(lengths.max()))
    for n, f in enumerate(features):
        batch[n, :, : f.shape[1]] = f
    return batch, lengths


class SystemUnderTest:
    """The SUT: LoadGen's threads queue samples (issue); one worker thread runs them in batches of up
    to batch_size and answers each with its transcript. A model error is kept (error) and the samples
    answered empty, so LoadGen still finishes; run() raises it after the test."""

    def __init__(self, lg, runner, library: SampleLibrary, batch_size: int, threads: int | None = None):
        self.lg, self.runner, self.library, self.batch_size, self.threads = lg, runner, library, batch_size, threads
        self.error: BaseException | None = None
        self._waiting: collections.deque = collections.deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="ds2-sut", daemon=True)
        self._worker.start()

    def issue(self, samples) -> None:
        """LoadGen's callback: queue the query's samples, longest first (Offline's one query of all
        samples then runs in batches of similar lengths: little padding)."""
        samples = sorted(samples, key=lambda s: -self.library.features(s.index).shape[1])
        with self._ready:
            self._waiting.extend(samples)
            self._ready.notify()

    def flush(self) -> None:
        """LoadGen's callback at the end of a test: nothing is held back, so nothing to flush."""

    def stop(self) -> None:
        with self._ready:
            self._stopping = True
            self._ready.notify()
        self._worker.join()

    def _next_batch(self) -> list:
        """Up to batch_size waiting samples, waiting for one; [] once stopped."""
        with self._ready:
            while not self._waiting and not self._stopping:
                self._ready.wait()
            count = min(self.batch_size, len(self._waiting))
            return [self._waiting.popleft() for _ in range(count)]

    def _work(self) -> None:
        if self.threads:
            # Set in the thread that runs the model: OpenMP's thread count is a per-thread setting.
            # On 2 cores, 1 leaves a core to LoadGen's threads: 16 ms SingleStream p90 against 60 ms with 2.
            torch.set_num_threads(self.threads)
        while batch := self._next_batch():
            try:
                transcripts = self._transcribe([s.index for s in batch])
            except Exception as err:  # noqa: BLE001 (kept for run() to report; LoadGen must still finish)
                self.error = self.error or err
                transcripts = [""] * len(batch)
            self._respond(batch, transcripts)

    def _transcribe(self, indices: list[int]) -> list[str]:
        features, lengths = pad([self.library.features(i) for i in indices])
        return inference.decode_batch(self.runner, features, lengths, inference.GREEDY)

    def _respond(self, batch, transcripts: list[str]) -> None:
        # The arrays must live until QuerySamplesComplete returns: LoadGen copies the bytes then.
        data = [np.frombuffer(t.encode("utf-8"), dtype=np.uint8) for t in transcripts]
        responses = [self.lg.QuerySampleResponse(s.id, d.ctypes.data, d.nbytes) for s, d in zip(batch, data)]
        self.lg.QuerySamplesComplete(responses)


def make_settings(lg, args):
    """LoadGen's TestSettings: mlperf.conf, then args.user_conf's lines for this model and scenario,
    then --min-duration-s / --min-query-count. UsageError naming a user.conf LoadGen rejects."""
    settings = lg.TestSettings()
    settings.scenario = getattr(lg.TestScenario, args.scenario)
    modes = {"performance": lg.TestMode.PerformanceOnly, "accuracy": lg.TestMode.AccuracyOnly}
    settings.mode = modes[args.mode]
    if not args.user_conf.is_file():
        raise exit_status.UsageError(f"--user-conf {args.user_conf}: no such file")
    status = settings.FromConfig(str(args.user_conf), MODEL, args.scenario)
    if status != 0:  # LoadGen says no more than a negative errno
        raise exit_status.UsageError(
            f"--user-conf {args.user_conf}: LoadGen cannot parse it (status {status}); "
            f"each line is `{MODEL}.<scenario or *>.<key> = <number>` or a # comment"
        )
    if args.min_duration_s is not None:
        settings.min_duration_ms = round(args.min_duration_s * 1000)
        # A short run is decided by its duration alone: mlperf.conf's query counts would make it long.
        settings.min_query_count = 1
    if args.min_query_count is not None:
        settings.min_query_count = args.min_query_count
    return settings


def log_settings(lg, output_dir: Path):
    """LoadGen's LogSettings: its files into output_dir, its summary not copied to stdout (run prints
    the key lines)."""
    output = lg.LogOutputSettings()
    output.outdir = str(output_dir)
    output.copy_summary_to_stdout = False
    settings = lg.LogSettings()
    settings.log_output = output
    return settings


def summary_lines(output_dir: Path) -> list[str]:
    """The key lines of mlperf_log_summary.txt (SUMMARY_KEYS), latencies also in ms; [] if it lacks them."""
    path = output_dir / "mlperf_log_summary.txt"
    try:
        lines = [line.strip() for line in path.read_text().splitlines()]
    except OSError as err:
        raise exit_status.Failure(f"LoadGen wrote no summary: {exit_status.describe_os_error(err, path)}") from None
    picked = []
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() not in SUMMARY_KEYS:
            continue
        if key.strip().endswith("(ns)"):
            line += f"  ({int(value) / 1e6:.2f} ms)"
        picked.append(line)
    return picked


def default_output_dir(args) -> Path:
    """results/loadgen/<scenario>-<mode>-<time>: a fresh directory per run."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("results") / "loadgen" / f"{args.scenario}-{args.mode}-{stamp}"


def make_output_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise exit_status.Failure(f"--output-dir: {exit_status.describe_os_error(err, path)}") from None
    return path


def run_test(lg, sut: SystemUnderTest, library: SampleLibrary, settings, logs) -> None:
    """One LoadGen test over the SUT and QSL; its handles destroyed and the worker stopped afterwards."""
    sut_handle = lg.ConstructSUT(sut.issue, sut.flush)
    qsl_handle = lg.ConstructQSL(len(library), library.performance_count, library.load, library.unload)
    try:
        lg.StartTestWithLogSettings(sut_handle, qsl_handle, settings, logs)
    finally:
        lg.DestroyQSL(qsl_handle)
        lg.DestroySUT(sut_handle)
        sut.stop()


def batch_size_of(args, p: params.Params) -> int:
    """--batch-size, else 1 for SingleStream (one sample per query) and the checkpoint's per-device
    micro-batch for Offline and Server (as pytorch.evaluate)."""
    if args.batch_size is not None:
        return args.batch_size
    return 1 if args.scenario == "SingleStream" else p.micro_batch(1)


def device_of(args) -> str:
    """--device, else cuda for the torch backend where there is one, else cpu (the ONNX backends' only one)."""
    if args.device:
        return args.device
    return "cuda" if args.backend == "torch" and torch.cuda.is_available() else "cpu"


def run(args) -> None:
    lg = _loadgen()
    settings = make_settings(lg, args)
    loader.manifest_path(args.data_dir, args.split)  # before the model: a bad split fails in a second
    runner = backends.load(args.checkpoint, args.backend, device_of(args), args.precision, args.threads)
    loader.check_features(args.data_dir, runner.p)
    split = inference.split_for(runner, args.data_dir, args.split)
    library = SampleLibrary(split, min(len(split), args.performance_sample_count or len(split)))
    output_dir = make_output_dir(args.output_dir or default_output_dir(args))
    batch_size = batch_size_of(args, runner.p)
    print(f"checkpoint: {args.checkpoint} (backend {runner.name}, precision {runner.p.precision})")
    print(f"split: {args.split} ({len(split)} utterances), scenario {args.scenario}, mode {args.mode}, "
          f"batch size up to {batch_size}")  # fmt: skip
    sut = SystemUnderTest(lg, runner, library, batch_size, args.threads)
    run_test(lg, sut, library, settings, log_settings(lg, output_dir))
    if sut.error is not None:
        raise exit_status.Failure(f"the model failed during the test: {sut.error!r}") from sut.error
    print(f"logs: {output_dir}")
    print("\n".join(summary_lines(output_dir)))
    if args.mode == "accuracy":
        print(loadgen_accuracy.report(output_dir / loadgen_accuracy.ACCURACY_LOG, split))


def _positive(kind):
    """An argparse type: kind(text) > 0, else an error naming the value."""

    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text}: must be greater than 0")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m bench.loadgen",
        description="Run DeepSpeech2 under MLPerf LoadGen over a prepared split: SingleStream, Offline or Server, "
        "performance or accuracy mode, on the torch, onnxruntime or openvino backend.",
        epilog="Accuracy mode prints the corpus WER of LoadGen's accuracy log last, as `WER <value>` (percent, "
        "pytorch.evaluate's figure); python -m bench.loadgen_accuracy computes it again from a log directory. "
        "Exit status: 0 done, 1 missing or unusable checkpoint, data, user.conf or model failure, 2 bad usage.",
    )
    parser.add_argument("--checkpoint", required=True, type=Path, help="a training checkpoint .pt, or an .onnx")
    dataset_dir.add_data_dir_argument(parser)
    parser.add_argument("--split", default="val", help="val, test or any manifests/<name>.jsonl name (default: val)")
    parser.add_argument("--scenario", choices=SCENARIOS, default="Offline", help="LoadGen scenario (default: Offline)")
    parser.add_argument("--mode", choices=MODES, default="performance", help="default: performance")
    backends.add_argument(parser)
    parser.add_argument(
        "--batch-size",
        type=_positive(int),
        help="most samples per forward pass (default: 1 for SingleStream, else the checkpoint's micro-batch)",
    )
    parser.add_argument(
        "--min-duration-s",
        type=_positive(float),
        help="shortest test in seconds, instead of mlperf.conf's 600; also sets min_query_count 1 (a short run, "
        "e.g. CI: LoadGen calls it INVALID)",
    )
    parser.add_argument("--min-query-count", type=_positive(int), help="instead of mlperf.conf's / the above")
    parser.add_argument(
        "--performance-sample-count",
        type=_positive(int),
        help="samples LoadGen keeps loaded in performance mode (default: the whole split)",
    )
    parser.add_argument(
        "--user-conf", type=Path, default=USER_CONF, help="LoadGen user settings (default: %(default)s)"
    )
    parser.add_argument("--output-dir", type=Path, help="LoadGen's logs (default: a new results/loadgen/<run>)")
    parser.add_argument(
        "--precision", choices=params.choices("precision"), help="default: the checkpoint's; fp16 needs CUDA"
    )
    parser.add_argument("--device", help="the torch backend's device (default: cuda if available, else cpu)")
    parser.add_argument(
        "--threads",
        type=_positive(int),
        help="CPU threads of torch or the ONNX runtime (default: its own choice); on a 2-core CPU 1 is fastest "
        "for torch: the other core runs LoadGen (bench/user.conf was measured so)",
    )
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return exit_status.run(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
