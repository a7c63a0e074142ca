"""MLPerf compliance logging (mlperf_logging.mllog) for the training run, and its checker.

Only rank 0 logs. Lines go to stdout and to <results-dir>/mlperf_log.txt. The benchmark is named
`speech_recognition`, as the 2018 reference directory and its RESULT line are; the stock rule sets of
the compliance checker only know later benchmarks, so `ds2_rules.yaml` (next to this file) holds the
rules of this one. Check a log with:

    python -m mlperf_logging.compliance_checker --usage training --ruleset 6.1.0 \
        --config "$PWD/pytorch/ds2_rules.yaml" results/<run>/mlperf_log.txt

The checker joins --config onto its own package directory, so the path must be absolute.
"""

import itertools
import logging
import subprocess
import sys
from pathlib import Path

from mlperf_logging.mllog import mllog

BENCHMARK = "speech_recognition"
LOG_NAME = "mlperf_log.txt"
RULES = Path(__file__).resolve().with_name("ds2_rules.yaml")
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

    def hyperparameters(self, p, train_samples: int, eval_samples: int) -> None:
        """The run's configuration, logged between init_start and init_stop."""
        self.event("submission_benchmark", BENCHMARK)
        self.event("seed", p.seed)
        self.event("global_batch_size", p.batch_size)
        self.event("gradient_accumulation_steps", p.gradient_accumulation_steps)
        self.event("opt_name", p.optimizer)
        self.event("opt_base_learning_rate", p.lr)
        self.event("opt_gradient_clip_norm", p.max_norm)
        self.event("train_samples", train_samples)
        self.event("eval_samples", eval_samples)
        self.event("precision", p.precision)  # custom key: fp32 | bf16 | fp16
        self.event("target_wer", p.target_wer)  # custom key: the stop rule the checker verifies

    def close(self) -> None:
        if self._logger is not None:
            for handler in list(self._logger.handlers):
                handler.close()
                self._logger.removeHandler(handler)
            self._logger = None


def check_command(log_path: Path, output_path: Path) -> list[str]:
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
        str(RULES),
        "--log_output",
        str(output_path),
        str(log_path),
    ]


def check_log(log_path: Path, output_path: Path) -> tuple[bool, str]:
    """Run the compliance checker on log_path -> (passed, its output)."""
    done = subprocess.run(check_command(log_path, output_path), capture_output=True, text=True)
    return done.returncode == 0, done.stdout + done.stderr
