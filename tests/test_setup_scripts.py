"""scripts/setup.sh, build_wheelhouse.sh and install_wheelhouse.sh where they can be tested offline:
setup without root, the wheelhouse's size limit, and refusing a GPU machine's python it must not touch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"


def run(script: str, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(SCRIPTS / script), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def fake_commands(directory: Path, **scripts: str) -> dict:
    """Executables named after the keywords, first on PATH."""
    directory.mkdir(exist_ok=True)
    for name, body in scripts.items():
        path = directory / name.replace("_", "-")
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)
    return {"PATH": f"{directory}:{os.environ['PATH']}"}


def test_setup_without_root_skips_the_optional_system_package_and_says_so(tmp_path):
    env = fake_commands(tmp_path / "bin", id="echo 1000", sudo="exit 1", dpkg_query="exit 1")
    done = run("setup.sh", "--system-only", env=env)
    assert done.returncode == 0, done
    assert "skipping optional system package sox" in done.stderr and "not root" in done.stderr
    assert "apt-get install -y sox" in done.stderr


def test_setup_help_and_bad_argument():
    assert run("setup.sh", "--help").returncode == 0
    done = run("setup.sh", "--bogus")
    assert done.returncode == 2 and "unknown argument --bogus" in done.stderr


@pytest.mark.parametrize("size, fits", [(1_000_000, True), (51_000_000, False)])
def test_wheelhouse_size_check_names_the_size(tmp_path, size, fits):
    with open(tmp_path / "big-1.0-py3-none-any.whl", "wb") as f:
        f.truncate(size)  # sparse: the apparent size is what counts, and costs no disk
    done = run("build_wheelhouse.sh", "--check-size", str(tmp_path))
    if fits:
        assert done.returncode == 0 and "1 wheels, 1.0 MB (limit 50 MB)" in done.stdout, done
    else:
        assert done.returncode == 1 and "holds 51.0 MB" in done.stderr and "under 50 MB" in done.stderr, done


def test_wheelhouse_needs_the_gpu_machines_python_version():
    done = run("build_wheelhouse.sh")
    assert done.returncode == 2 and "--python-version X.Y is required" in done.stderr
    done = run("build_wheelhouse.sh", "--python-version", "twelve")
    assert done.returncode == 2 and "expected 3.Y" in done.stderr


def fake_torch(tmp_path: Path, version: str) -> dict:
    """PYTHONPATH under which `import torch` finds a stand-in of that version (the real one is not touched)."""
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text(f"__version__ = {version!r}\n")
    return {"PYTHONPATH": str(tmp_path)}


def test_install_refuses_a_torch_older_than_2_11_before_installing_anything(tmp_path):
    env = fake_torch(tmp_path, "2.10.0+cu128")
    done = run("install_wheelhouse.sh", "--python", sys.executable, "--wheelhouse", str(tmp_path / "none"), env=env)
    assert done.returncode == 1 and "torch 2.10.0+cu128" in done.stderr and "older than 2.11" in done.stderr, done
    assert "never replaces torch" in done.stderr and "installing" not in done.stdout


def test_install_refuses_a_python_without_torch(tmp_path):
    (tmp_path / "torch").mkdir()
    (tmp_path / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    done = run("install_wheelhouse.sh", "--python", sys.executable, "--wheelhouse", str(tmp_path / "none"), env=env)
    assert done.returncode == 1 and "has no torch" in done.stderr and "never installs torch" in done.stderr, done


def test_install_says_how_to_build_a_missing_wheelhouse(tmp_path):
    env = fake_torch(tmp_path, "2.11.0+cu130")
    missing = tmp_path / "wheelhouse"
    done = run("install_wheelhouse.sh", "--python", sys.executable, "--wheelhouse", str(missing), env=env)
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert done.returncode == 1 and f"make wheelhouse PYTHON={version}" in done.stderr, done


@pytest.mark.parametrize("script", ["build_wheelhouse.sh", "install_wheelhouse.sh"])
def test_wheelhouse_scripts_help(script):
    done = run(script, "--help")
    assert done.returncode == 0 and done.stdout.startswith(f"usage: scripts/{script}"), done


def test_wheelhouse_holds_what_a_gpu_machine_lacks_and_nothing_it_has():
    done = run("build_wheelhouse.sh", "--print-requirements")
    assert done.returncode == 0, done
    with_deps, without_deps = done.stdout.split("# without dependencies:\n")
    names = {line.split("==")[0].lower() for line in with_deps.splitlines()}
    assert not names & {"torch", "numpy", "librosa"}  # the machine's own; training does not need librosa
    assert {"espeakng-loader", "pytest", "soundfile", "setuptools"} <= names
    assert without_deps.startswith("mlperf-logging==")  # its pandas and scipy serve only its summariser
