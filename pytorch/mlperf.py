"""MLPerf compliance logging (mlperf_logging.mllog) for the training run, and its rules and checker.

Only rank 0 logs. Lines go to stdout and to <results-dir>/mlperf_log.txt. The benchmark is named
`speech_recognition`, as the 2018 reference directory and its RESULT line are. Every knob of
params.py is logged (under MLPerf's own key where it has one, else under its params.py name), so a
log says everything the run was.

The stock rule sets of the compliance checker only know later benchmarks, so this module writes this
benchmark's rules from params.py, the one owner of what is fixed and what is tunable:
  ds2_rules.yaml      the benchmark: the log's form, AND every fixed knob at its benchmark value, the
                      LibriSpeech validation set, at most `epochs` epochs, each one evaluated
  ds2_log_rules.yaml  the log's form only (types, choices, ranges, event order): for the demo, the
                      tests and other scaled-down runs, whose fixed knobs differ on purpose
(`python -m pytorch.mlperf --write-rules` rewrites both; a test checks they are current). Check a log:

    python -m mlperf_logging.compliance_checker --usage training --ruleset 6.1.0 \
        --config "$PWD/pytorch/ds2_rules.yaml" results/<run>/mlperf_log.txt

The checker joins --config onto its own package directory, so the path must be absolute.
"""

import argparse
import itertools
import json
import logging
import subprocess
import sys
from pathlib import Path

import yaml
from mlperf_logging.mllog import mllog

import params
from data import librispeech

BENCHMARK = "speech_recognition"
LOG_NAME = "mlperf_log.txt"
RULES = Path(__file__).resolve().with_name("ds2_rules.yaml")
LOG_RULES = Path(__file__).resolve().with_name("ds2_log_rules.yaml")
# MLPerf's own names for the knobs it has one for; every other knob is logged under its params.py name.
MLPERF_KEYS = {
    "batch_size": "global_batch_size",
    "optimizer": "opt_name",
    "lr": "opt_base_learning_rate",
    "max_norm": "opt_gradient_clip_norm",
}
LOGGED_KNOBS = tuple(name for name in params.KNOBS if name != "preset")  # a preset is only a way to set them
VALIDATION_UTTERANCES = sum(librispeech.SUBSETS[s].utterances for s in librispeech.SPLITS["val"])  # 5,567
TRAIN_UTTERANCES = sum(librispeech.SUBSETS[s].utterances for s in librispeech.SPLITS["train"])  # 281,241
RULESET = "6.1.0"  # only selects the checker's log parser: the rules are all in RULES

_ids = itertools.count()


class MLPerfLog:
    """mllog events for one run; does nothing on ranks other than 0 (enabled=False)."""

    def __init__(self, results_dir: Path | None, enabled: bool = True, append: bool = False):
        self.enabled = enabled
        self._logger = None
        if not enabled:
            return
        # A logger of our own per run, so repeated runs in one process (tests) never share handlers.
        logger = logging.getLogger(f"ds2.mllog.{next(_ids)}")
        logger.propagate = False
        logger.setLevel(logging.INFO)
        logger.addHandler(logging.StreamHandler(sys.stdout))
        if results_dir is not None:
            logger.addHandler(logging.FileHandler(Path(results_dir) / LOG_NAME, mode="a" if append else "w"))
        self._logger = logger
        self._mllog = mllog.MLLogger(logger=logger, default_stack_offset=2)

    def event(self, key: str, value=None, metadata: dict | None = None) -> None:
        if self.enabled:
            self._mllog.event(key=key, value=value, metadata=metadata)

    def start(self, key: str, value=None, metadata: dict | None = None) -> None:
        if self.enabled:
            self._mllog.start(key=key, value=value, metadata=metadata)

    def end(self, key: str, value=None, metadata: dict | None = None) -> None:
        if self.enabled:
            self._mllog.end(key=key, value=value, metadata=metadata)

    def hyperparameters(self, p: params.Params, train_samples: int, eval_samples: int, accumulation_steps: int):
        """The run's configuration, logged between init_start and init_stop: every knob, with the
        accumulation steps this world size really uses (gradient_accumulation_steps=0 means 'derived')."""
        self.event("submission_benchmark", BENCHMARK)
        for name in LOGGED_KNOBS:
            value = accumulation_steps if name == "gradient_accumulation_steps" else getattr(p, name)
            self.event(log_key(name), value)
        self.event("train_samples", train_samples)
        self.event("eval_samples", eval_samples)

    def start_run(self, p: params.Params, samples: tuple[int, int], accumulation_steps: int, recurrent) -> None:
        """The end of init and the start of the clock: the configuration (hyperparameters; what the
        recurrent layers really compute in and on which kernel, a pytorch.precision.RecurrentKernel),
        init_stop, run_start."""
        self.hyperparameters(p, *samples, accumulation_steps)
        self.event("recurrent_dtype", recurrent.dtype)
        self.event("recurrent_kernel", recurrent.kernel)
        self.end("init_stop")
        self.start("run_start")

    def close(self) -> None:
        if self._logger is not None:
            for handler in list(self._logger.handlers):
                handler.close()
                self._logger.removeHandler(handler)
            self._logger = None


def log_key(name: str) -> str:
    """The MLPerf log key of a params.py knob."""
    return MLPERF_KEYS.get(name, name)


# ---------------------------------------------------------------- the rules, derived from params.py

_TYPE_CHECKS = {
    bool: "isinstance(v['value'], bool)",
    int: "is_integer(v['value'])",
    float: "isinstance(v['value'], (int, float)) and not isinstance(v['value'], bool)",
    str: "isinstance(v['value'], str)",
}


def _knob_checks(name: str, benchmark: bool) -> list[str]:
    """CHECK expressions of one knob's log line: its benchmark value if fixed (benchmark rules), else
    its type, choices and range as params.py declares them."""
    knob, field = params.KNOBS[name], params.FIELDS[name]
    if benchmark and knob.rule == params.FIXED:
        return [f"v['value'] == {field.default!r}"]
    checks = [_TYPE_CHECKS[field.type]]
    if knob.choices:
        checks.append(f"v['value'] in {list(knob.choices)!r}")
    if knob.range is not None:
        low, high = knob.range
        if name == "gradient_accumulation_steps":
            low = 1  # the log holds the steps really used, never 0 ('derived')
        checks.append(f"{low!r} {'<' if knob.low_open else '<='} v['value'] <= {high!r}")
    return checks


def _key(name: str, checks: list[str] | str, post: str = "", req: str = "EXACTLY_ONE") -> dict:
    """One KEY record of the checker: how often the key occurs, its CHECKs and what POST records."""
    record = {"NAME": name, "REQ": req, "CHECK": checks}
    return {"KEY": record | ({"POST": post} if post else {})}


def _event_rules() -> list[dict]:
    """The timed run's shape: init, then run_start, epochs (each evaluated) and one run_stop."""

    def event(name, req, checks, post=""):
        return _key(name, checks, post, req)

    return [
        event("cache_clear", "AT_LEAST_ONE", "not s['run_started']"),
        event(
            "init_start", "AT_LEAST_ONE", ["not s['init_stopped']", "not s['run_started']"], "s['init_started'] = True"
        ),
        event("init_stop", "EXACTLY_ONE", ["s['init_started']", "not s['run_started']"], "s['init_stopped'] = True"),
        event("run_start", "EXACTLY_ONE", "s['init_stopped']", "s['run_started'] = True"),
        event(
            "epoch_start",
            "AT_LEAST_ONE",
            [
                "s['run_started'] and not s['run_stopped']",
                "not s['in_epoch']",
                "v['metadata']['epoch_num'] > s['last_epoch']",
                "v['metadata']['epoch_num'] <= s['epochs']",  # the epoch cap
                "s['last_eval_epoch'] == s['last_epoch']",  # every epoch is evaluated before the next
            ],
            "s['in_epoch'] = True; s['last_epoch'] = v['metadata']['epoch_num']",
        ),
        event(
            "epoch_stop",
            "AT_LEAST_ONE",
            ["s['in_epoch']", "v['metadata']['epoch_num'] == s['last_epoch']"],
            "s['in_epoch'] = False",
        ),
        event(
            "eval_start", "AT_LEAST_ONE", ["s['run_started'] and not s['run_stopped']", "'epoch_num' in v['metadata']"]
        ),
        event("eval_stop", "AT_LEAST_ONE", "'epoch_num' in v['metadata']"),
        event(
            "eval_accuracy",
            "AT_LEAST_ONE",
            [
                "s['run_started'] and not s['run_stopped']",
                "v['metadata']['epoch_num'] == s['last_epoch']",
                "v['value'] >= 0",
            ],
            "s['last_wer'] = v['value']; s['last_eval_epoch'] = v['metadata']['epoch_num']",
        ),
        # An elastic restart (torchrun's MAX_RESTARTS) continues the same run from its last checkpoint, whose
        # epochs are all evaluated: the epoch counter goes back to the checkpoint's, the clock runs on.
        event(
            "restart",
            "OPTIONAL",
            ["s['run_started'] and not s['run_stopped']", "v['metadata']['epoch_num'] <= s['last_eval_epoch']"],
            "s['in_epoch'] = False; s['last_epoch'] = s['last_eval_epoch'] = v['metadata']['epoch_num']",
        ),
        event(
            "run_stop",
            "EXACTLY_ONE",
            ["s['run_started']", "v['metadata']['status'] in ['success', 'aborted']"],
            "s['run_stopped'] = True; s['status'] = v['metadata']['status']",
        ),
    ]


def rules(benchmark: bool) -> list[dict]:
    """The compliance checker's rules: of the benchmark (True) or of the log's form only (False)."""
    begin = {
        "init_started": False,
        "init_stopped": False,
        "run_started": False,
        "run_stopped": False,
        "in_epoch": False,
        "last_epoch": 0,
        "last_eval_epoch": 0,
        "last_wer": None,
        "target_wer": None,
        "epochs": None,
        "status": None,
    }
    read_back = ("target_wer", "epochs")  # knobs the event and END rules compare against
    knobs = [
        _key(log_key(name), _knob_checks(name, benchmark), f"s['{name}'] = v['value']" if name in read_back else "")
        for name in LOGGED_KNOBS
    ]
    if benchmark:
        samples = [
            # the whole training set, every epoch: no submitter can shrink it (max_duration is fixed at 0)
            _key("train_samples", f"v['value'] == {TRAIN_UTTERANCES}"),
            _key("eval_samples", f"v['value'] == {VALIDATION_UTTERANCES}"),  # dev-clean + dev-other, whole
        ]
    else:
        samples = [_key(n, "is_integer(v['value']) and v['value'] >= 1") for n in ("train_samples", "eval_samples")]
    end = [
        "s['run_stopped']",
        "s['last_eval_epoch'] == s['last_epoch']",
        # success: the last evaluation met the target; aborted: none did, and every epoch ran.
        "s['status'] != 'success' or (s['last_wer'] is not None and s['last_wer'] <= s['target_wer'])",
        "s['status'] != 'aborted' or s['last_wer'] is None or s['last_wer'] > s['target_wer']",
        "s['status'] != 'aborted' or s['last_epoch'] == s['epochs']",
    ]
    return (
        [{"BEGIN": {"CODE": f"s.update({begin!r})"}}, _key("submission_benchmark", f"v['value'] == {BENCHMARK!r}")]
        + knobs
        + samples
        + _event_rules()
        + [{"END": {"CHECK": end}}]
    )


RULES_HEADER = """\
# GENERATED by `python -m pytorch.mlperf --write-rules` from params.py: do not edit (a test checks it).
# Compliance rules of the DeepSpeech2 speech_recognition benchmark for the checker of the
# mlperf-logging package: {what}.
#   python -m mlperf_logging.compliance_checker --usage training --ruleset 6.1.0 \\
#       --config "$PWD/pytorch/{name}" results/<run>/mlperf_log.txt
# (--config must be absolute: the checker joins it onto its own directory.)
"""


def rules_text(benchmark: bool) -> str:
    what = (
        "a valid run of the benchmark (fixed knobs at their values)"
        if benchmark
        else "the log's form only (for scaled-down runs: the demo, the tests)"
    )
    name = (RULES if benchmark else LOG_RULES).name
    body = yaml.safe_dump(rules(benchmark), sort_keys=False, width=1000, default_flow_style=False)
    return RULES_HEADER.format(what=what, name=name) + body


def write_rules() -> None:
    for benchmark, path in ((True, RULES), (False, LOG_RULES)):
        path.write_text(rules_text(benchmark))


# ---------------------------------------------------------------- reading a log back


def read_events(log_path: Path) -> list[dict]:
    """The :::MLLOG events of a log, in order (malformed lines left to the checker to report)."""
    events = []
    for line in Path(log_path).read_text(encoding="utf-8").splitlines():
        if line.startswith(":::MLLOG "):
            try:
                events.append(json.loads(line[len(":::MLLOG ") :]))
            except ValueError:
                continue
    return events


def run_start_time(results_dir: Path) -> float | None:
    """Wall time (s) of the run's run_start in its log: where an elastic restart's clock counts from."""
    path = Path(results_dir) / LOG_NAME
    starts = [e["time_ms"] for e in read_events(path) if e["key"] == "run_start"] if path.is_file() else []
    return starts[0] / 1000 if starts else None


# ---------------------------------------------------------------- the checker


def check_command(log_path: Path, output_path: Path, rules_path: Path = RULES) -> list[str]:
    """argv of the compliance checker for one log (its own report goes to output_path)."""
    return [
        sys.executable,
        "-m",
        "mlperf_logging.compliance_checker",
        "--usage",
        "training",
        "--ruleset",
        RULESET,
        "--config",
        str(rules_path),
        "--log_output",
        str(output_path),
        str(log_path),
    ]


def check_log(log_path: Path, output_path: Path, rules_path: Path = RULES) -> tuple[bool, str]:
    """Run the compliance checker on log_path under rules_path -> (passed, its output)."""
    done = subprocess.run(check_command(log_path, output_path, rules_path), capture_output=True, text=True)
    return done.returncode == 0, done.stdout + done.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytorch.mlperf", description="Write the compliance rules files.")
    parser.add_argument("--write-rules", action="store_true", help=f"rewrite {RULES.name} and {LOG_RULES.name}")
    args = parser.parse_args(argv)
    if not args.write_rules:
        parser.error("nothing to do (pass --write-rules)")
    write_rules()
    print(f"wrote {RULES} and {LOG_RULES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
