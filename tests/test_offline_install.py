"""The offline install as a GPU machine without internet does it, end to end (slow: `make test-all`).

A wheelhouse is built (scripts/build_wheelhouse.sh: this needs PyPI, and the tests skip, saying so,
where PyPI cannot be reached), a fresh virtual environment gets only torch (the suite's own CPU build,
which this machine's pip finds on its disk), the wheelhouse goes in through scripts/install_wheelhouse.sh
(pip --no-index, this machine's pip settings cleared, and inside a network namespace without any
network where this machine allows one), and the GPU check's CPU rehearsal runs there. A machine's own
numpy is kept, by install_wheelhouse.sh and by the Dockerfile's install step (run as written).
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
PYTHON_VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"


def _pin(name: str) -> str:
    """requirements.txt's version of `name` for this python (its python_version markers evaluated)."""
    lines = (re.sub(r"(^|\s)#.*", "", line).strip() for line in (REPO / "requirements.txt").read_text().splitlines())
    (version,) = {
        str(r.specifier).removeprefix("==")
        for r in map(Requirement, filter(None, lines))
        if r.name == name and (r.marker is None or r.marker.evaluate())
    }
    return version


NUMPY_PIN = _pin("numpy")
OTHER_NUMPY = "2.3.5" if sys.version_info >= (3, 11) else "2.1.3"  # a machine's own, not the wheelhouse's
TIMES: dict[str, float] = {}  # seconds per stage of the wheelhouse rehearsal, printed by the test


def _run(args, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


def _tail(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


def _no_network() -> list[str]:
    """A prefix that runs a command in a new network namespace holding only a loopback interface (the
    rehearsal's demo serves its corpus on it), where this machine allows one; else nothing: then
    pip's --no-index and the cleared pip settings alone keep the install offline."""
    prefix = ["unshare", "--map-root-user", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh"]
    if shutil.which("unshare") and shutil.which("ip") and _run([*prefix, "true"], timeout=30).returncode == 0:
        return prefix
    return []


def _without_pip_settings(**extra: str) -> dict:
    """The environment with this machine's pip settings (its indexes and find-links) left out."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, **extra}


def _versions(python: Path) -> dict:
    """torch's and numpy's installed versions in that python (None: not installed)."""
    code = (
        "import importlib.metadata as m, json\n"
        "def v(name):\n"
        "    try:\n"
        "        return m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        return None\n"
        "print(json.dumps({n: v(n) for n in ('torch', 'numpy', 'pytest', 'pytest-timeout', 'matplotlib')}))"
    )
    done = _run([python, "-c", code])
    assert done.returncode == 0, _tail(done)
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def pypi(tmp_path_factory):
    """Skips these tests where PyPI cannot be reached: the wheelhouse build downloads from it. The
    probe asks pip's default index alone (this machine's pip settings, which may add local indexes
    that answer offline, left out), with no cache."""
    probe = tmp_path_factory.mktemp("probe")
    done = _run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-cache-dir", "--retries", "1"]
        + ["--timeout", "20", "--dest", probe, "pytest-timeout==2.4.0"],
        env=_without_pip_settings(),
        timeout=180,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"needs PyPI, which this machine cannot reach: build_wheelhouse.sh downloads from it ({last})")


@pytest.fixture(scope="module")
def wheelhouse(pypi, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheelhouse") / f"python{PYTHON_VERSION}"
    start = time.monotonic()
    done = _run([SCRIPTS / "build_wheelhouse.sh", "--python-version", PYTHON_VERSION, "--out", out])
    TIMES["build"] = time.monotonic() - start
    assert done.returncode == 0, _tail(done)
    assert "limit 50 MB" in done.stdout and len(list(out.glob(f"numpy-{NUMPY_PIN}-*.whl"))) == 1, done.stdout
    assert not list(out.glob("torch-*.whl")) and not list(out.glob("matplotlib-*.whl"))
    return out


def _fresh_venv(path: Path, *packages: str) -> Path:
    """A new virtual environment of this interpreter with the suite's torch (the CPU build, from this
    machine's pip settings) and the given packages, nothing else; its python."""
    venv.create(path, with_pip=True)
    python = path / "bin" / "python"
    done = _run([python, "-m", "pip", "install", "-q", f"torch=={torch.__version__}", *packages], timeout=900)
    assert done.returncode == 0, _tail(done)
    return python


def _install(python: Path, wheelhouse: Path) -> subprocess.CompletedProcess:
    command = [SCRIPTS / "install_wheelhouse.sh", "--python", python, "--wheelhouse", wheelhouse]
    return _run([*_no_network(), *command], env=_without_pip_settings(), timeout=900)


def test_a_venv_with_only_torch_installs_the_wheelhouse_offline_and_passes_the_rehearsal(wheelhouse, tmp_path):
    start = time.monotonic()
    python = _fresh_venv(tmp_path / "venv")
    TIMES["venv with torch only"] = time.monotonic() - start
    before = _versions(python)
    assert before["torch"] == torch.__version__ and before["numpy"] is None  # torch's metadata lists no numpy

    start = time.monotonic()
    done = _install(python, wheelhouse)
    TIMES["offline install"] = time.monotonic() - start
    assert done.returncode == 0, _tail(done)
    assert f"has no numpy: installing the wheelhouse's numpy=={NUMPY_PIN}" in done.stdout, done.stdout
    after = _versions(python)
    assert after["torch"] == torch.__version__ and after["numpy"] == NUMPY_PIN
    assert after["matplotlib"] is None and "no matplotlib, so training draws no curves.png" in done.stdout
    done = _run([python, SCRIPTS / "safepath.py", "-c", "import bench.gpu_check"], cwd=tmp_path)
    assert done.returncode == 0, _tail(done)

    out = tmp_path / "report"
    start = time.monotonic()
    done = _run(
        [*_no_network(), SCRIPTS / "gpu-check.sh", "--rehearse", "--out", out],
        env=_without_pip_settings(DS2_PYTHON=str(python)),
        cwd=tmp_path,
        timeout=900,
    )
    TIMES["rehearsal"] = time.monotonic() - start
    print("wheelhouse rehearsal, seconds: " + ", ".join(f"{stage} {s:.1f}" for stage, s in TIMES.items()))
    assert done.returncode == 0, _tail(done)
    report = json.loads((out / "report.json").read_text())
    assert report["environment"]["rehearsal"]
    assert {name: step["status"] for name, step in report["steps"].items()} == {"tests": 0, "sweep": 0, "train": 0}
    assert "passed" in report["steps"]["tests"]["cases"].values()  # pytest ran, from the wheelhouse
    assert report["steps"]["train"]["result"]["status"] == "success"
    assert _versions(python)["numpy"] == NUMPY_PIN  # nothing the check ran installed anything


def test_a_machines_own_numpy_is_kept_by_the_install_and_by_the_dockerfile(wheelhouse, tmp_path):
    python = _fresh_venv(tmp_path / "venv", f"numpy=={OTHER_NUMPY}")
    done = _install(python, wheelhouse)
    assert done.returncode == 0, _tail(done)
    assert f"numpy {OTHER_NUMPY} kept" in done.stdout and "installing the wheelhouse's numpy" not in done.stdout
    assert _versions(python)["numpy"] == OTHER_NUMPY

    # The Dockerfile's requirements step, as written, with this python as the image's `python` (its
    # pip reaches PyPI, as a docker build does) and its scratch files under tmp_path.
    text = (REPO / "docker" / "Dockerfile").read_text()
    step = re.search(r"^COPY requirements\.txt requirements-test\.txt \./\nRUN ((?:.*\\\n)*.*)$", text, re.M)
    assert step, "docker/Dockerfile: no RUN right after COPY requirements.txt requirements-test.txt ./"
    context = tmp_path / "context"
    context.mkdir()
    for name in ("requirements.txt", "requirements-test.txt"):
        shutil.copy(REPO / name, context)
    env = {**os.environ, "PATH": f"{python.parent}:{os.environ['PATH']}"}
    env.pop("PIP_CONSTRAINT", None)
    done = _run(["bash", "-o", "pipefail", "-c", step.group(1).replace("/tmp/", f"{tmp_path}/")], cwd=context, env=env)
    assert done.returncode == 0, _tail(done)
    versions = _versions(python)
    assert versions["numpy"] == OTHER_NUMPY and versions["torch"] == torch.__version__
    tools = (REPO / "requirements-test.txt").read_text()
    for tool in ("pytest", "pytest-timeout"):  # make gpu-check's tests step needs them in the image
        assert versions[tool] == re.search(rf"^{tool}==(\S+)", tools, re.M).group(1)
    assert importlib.metadata.version("numpy") == NUMPY_PIN  # the suite's own venv was not touched
