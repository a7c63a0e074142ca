"""slurm/run.sub submitted to a real Slurm: a one-machine cluster on localhost (tests/slurm_cluster.py,
Debian's slurm-wlm and munge, installed when missing and root allows), the CPU test configuration
(slurm/config_CPU_1x2x4.sh: 2 tasks over gloo, the tiny model), 3 seeded runs and their summary.

`make test-slurm` runs it (CI too, after `make test`); it is skipped, saying why, where Slurm cannot be
installed or started. About a minute once the packages are there."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests import slurm_cluster, trainer_fixtures

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def config(name: str) -> dict:
    """The variables a slurm/config_*.sh exports, as a submitter's shell has them after sourcing it."""
    script = f"set -a; source {REPO / 'slurm' / name}; env -0"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert done.returncode == 0, done.stderr
    return dict(line.split("=", 1) for line in done.stdout.split("\0") if "=" in line)


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = slurm_cluster.why_not()
    if reason:
        pytest.skip(f"no local Slurm: {reason}")
    cluster = slurm_cluster.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except RuntimeError as err:
        cluster.stop()
        pytest.skip(f"local Slurm did not start here: {err}")
    yield cluster
    cluster.stop()


@pytest.mark.parametrize("launcher", ["srun", "torchrun"])
def test_run_sub_runs_every_seed_and_summarises_them(slurm, tmp_path, launcher):
    """srun: one task per rank (SLURM_PROCID ...); torchrun: one task per node starting its ranks."""
    data = trainer_fixtures.write_dataset(tmp_path / "data")
    logs = tmp_path / "logs"
    system = config("config_CPU_1x2x4.sh")
    env = system | {
        "LAUNCHER": launcher,
        "DATADIR": str(data),
        "LOGDIR": str(logs),
        "MASTER_PORT": str(slurm_cluster.free_port()),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    options = ["-N", system["DGXNNODES"], "-t", system["WALLTIME"], f"--output={tmp_path / 'job.out'}"]
    job = slurm.sbatch(REPO / "slurm" / "run.sub", *options, env=env, cwd=REPO)
    state = slurm.wait_job(job, timeout_s=600)
    out = (tmp_path / "job.out").read_text() if (tmp_path / "job.out").exists() else ""
    assert state == "COMPLETED", f"job {job}: {state}\n{out[-4000:]}"
    for n in (1, 2, 3):
        log = (logs / f"run_{n}.log").read_text()
        assert len(re.findall(r"^RESULT,SPEECH_RECOGNITION,\d+,", log, re.M)) == 1, log[-2000:]  # rank 0's only
        assert json.loads((logs / f"run_{n}" / "result.json").read_text())["params"]["seed"] == n
    summary = json.loads((logs / "summary.json").read_text())
    assert summary["summary"]["runs"] == 3 and all(r["compliant"] for r in summary["runs"])
    assert "olympic mean" in (logs / "summary.log").read_text()
