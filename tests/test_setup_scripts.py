"""scripts/setup.sh, build_wheelhouse.sh and install_wheelhouse.sh where they can be tested offline:
setup without root, the wheelhouse's size limit and versions, and refusing a GPU machine's python it
must not touch; the user docker/run-dev.sh runs the container as. The real offline install, from a
wheelhouse into a fresh venv, is tests/test_offline_install.py (slow, needs PyPI)."""

import os
import re
import shlex
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
RUN_DEV = REPO / "docker" / "run-dev.sh"


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


@pytest.mark.parametrize("size, fits", [(1_000_000, True), (49_000_000, True), (50_000_000, False)])
def test_wheelhouse_size_check_names_the_size(tmp_path, size, fits):
    with open(tmp_path / "big-1.0-py3-none-any.whl", "wb") as f:
        f.truncate(size)  # sparse: the apparent size is what counts, and costs no disk
    done = run("build_wheelhouse.sh", "--check-size", str(tmp_path))
    mb = f"{size / 1e6:.1f}"
    if fits:
        assert done.returncode == 0 and f"1 wheels, {mb} MB (limit 50 MB)" in done.stdout, done
    else:
        assert done.returncode == 1 and f"holds {mb} MB" in done.stderr and "under 50 MB" in done.stderr, done


@pytest.mark.parametrize("versions", ["twelve", "3.12,twelve", "3.12,", "3.12,,3.13", "3.12 3.13"])
def test_wheelhouse_needs_the_gpu_machines_python_version(versions):
    done = run("build_wheelhouse.sh")
    assert done.returncode == 2 and "--python-version X.Y is required" in done.stderr
    done = run("build_wheelhouse.sh", "--python-version", versions)
    assert done.returncode == 2 and "expected 3.Y" in done.stderr, done


def test_wheelhouse_refuses_a_python_the_project_does_not_support_before_downloading(tmp_path):
    minimum = re.search(r'^requires-python = "[^"]*>=([\d.]+)', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    out = tmp_path / "wheelhouse"
    done = run("build_wheelhouse.sh", "--python-version", "3.9", "--out", str(out))
    assert done.returncode == 2 and f"needs Python >= {minimum} (pyproject.toml requires-python)" in done.stderr
    assert "downloading" not in done.stdout and not out.exists()
    # one unsupported version in a list stops the whole list, before anything is downloaded
    done = run("build_wheelhouse.sh", "--python-version", "3.12,3.9")
    assert done.returncode == 2 and "--python-version 3.9" in done.stderr and "downloading" not in done.stdout


def test_wheelhouse_out_takes_a_single_version(tmp_path):
    done = run("build_wheelhouse.sh", "--python-version", "3.12,3.13", "--out", str(tmp_path / "w"))
    assert done.returncode == 2 and "--out DIR takes a single --python-version" in done.stderr
    assert not (tmp_path / "w").exists()


def test_make_wheelhouse_passes_several_versions_to_the_script():
    versions = "3.10,3.11,3.12,3.13"
    done = subprocess.run(
        ["make", "-n", "wheelhouse", f"PYTHON={versions}"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and f"scripts/build_wheelhouse.sh --python-version {versions}" in done.stdout
    done = subprocess.run(["make", "wheelhouse"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "usage: make wheelhouse PYTHON=3.12" in done.stderr


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


def test_install_refuses_a_python_without_numpy_when_the_wheelhouse_carries_none(tmp_path):
    """A wheelhouse built before it carried numpy: a clear error before pip runs, not a pip failure."""
    bare = tmp_path / "venv"
    venv.create(bare, with_pip=False)  # no numpy (and no pip: nothing could be installed into it)
    env = fake_torch(tmp_path, "2.13.0+cpu")
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "requirements.txt").write_text("soundfile==0.14.0\n")
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    python = str(bare / "bin" / "python")
    done = run("install_wheelhouse.sh", "--python", python, "--wheelhouse", str(wheelhouse), env=env)
    assert done.returncode == 1 and "has no numpy" in done.stderr and "carries none" in done.stderr, done
    assert f"make wheelhouse PYTHON={version}" in done.stderr and "installing" not in done.stdout


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


def printed_requirements(*args: str) -> tuple[list[str], list[str], list[str]]:
    """build_wheelhouse.sh --print-requirements: with dependencies, numpy, without dependencies."""
    done = run("build_wheelhouse.sh", "--print-requirements", *args)
    assert done.returncode == 0, done
    with_deps, rest = done.stdout.split("# numpy, installed only where there is none:\n")
    numpy, without_deps = rest.split("# without dependencies:\n")
    return with_deps.splitlines(), numpy.splitlines(), without_deps.splitlines()


def pin_for(name: str, marker: str) -> str:
    """The requirements.txt line pinning `name` under that python_version marker, marker removed."""
    text = (REPO / "requirements.txt").read_text()
    line = re.search(rf"^{name}==[^;\s]+; python_version {marker}( +#.*)?$", text, re.M)
    assert line, f"requirements.txt: no {name} line for python_version {marker}"
    return line.group(0).split(";")[0]


def test_wheelhouse_holds_what_a_gpu_machine_lacks_and_nothing_it_has():
    with_deps, numpy, without_deps = printed_requirements()  # for the python running the script
    names = {line.split("==")[0].lower() for line in with_deps}
    assert not names & {"torch", "numpy", "librosa"}  # the machine's own; training does not need librosa
    # curves.png is optional (pytorch/results.py) and the trainer writes TensorBoard's files itself
    assert not names & {"matplotlib", "tensorboard"}
    assert {"espeakng-loader", "pytest", "pytest-timeout", "soundfile", "setuptools"} <= names
    current = '>= "3.11"' if sys.version_info >= (3, 11) else '< "3.11"'
    assert numpy == [pin_for("numpy", current)]  # the tested numpy, for a machine whose torch came without one
    assert without_deps[0].startswith("mlperf-logging==")  # its pandas and scipy serve only its summariser


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_wheelhouse_requirements_follow_the_target_pythons_markers(version):
    """pip download --python-version X.Y would evaluate the markers for the running python: the script
    evaluates them for X.Y itself and hands pip plain pins, one per package."""
    with_deps, numpy, without_deps = printed_requirements("--python-version", version)
    lines = with_deps + numpy + without_deps
    assert not [line for line in lines if ";" in line or "python_version" in line]
    names = [line.split("==")[0].lower() for line in lines]
    assert len(names) == len(set(names)), lines
    marker = '< "3.11"' if version == "3.10" else '>= "3.11"'
    assert numpy == [pin_for("numpy", marker)]
    assert pin_for("python-Levenshtein", marker) in with_deps


def test_wheelhouse_print_requirements_takes_a_single_version():
    done = run("build_wheelhouse.sh", "--print-requirements", "--python-version", "3.10,3.12")
    assert done.returncode == 2 and "--print-requirements takes a single --python-version" in done.stderr


# A stand-in for `python -m pip download` that downloads as pip does: a wheel (empty but for its
# METADATA) for each requirement, and for each dependency whose marker holds for the running
# interpreter, whatever --python-version says. Its pytest needs tomli below 3.11 and `newer` from 3.11
# on. It logs each download: its words, then the pins of its -r files. Other commands run the real python.
FAKE_PIP = r"""#!@PYTHON@
import os, re, sys, zipfile
words = sys.argv[1:]
if words[:3] != ["-m", "pip", "download"]:
    os.execv("@PYTHON@", ["@PYTHON@", *words])
from packaging.markers import Marker
DEPENDENCIES = {"pytest": ['tomli>=1; python_version < "3.11"', 'newer>=1; python_version >= "3.11"']}
requirements, previous = [], ""
with open("@LOG@", "a") as log:
    log.write("=== pip " + " ".join(words) + "\n")
    for word in words[3:]:
        if previous == "-r":
            pins = open(word).read().split()
            log.write("".join(f"{pin}\n" for pin in pins))
            requirements += pins
        elif previous not in ("--dest", "--python-version", "--platform") and not word.startswith("-"):
            requirements.append(word)
        previous = word
dest = words[words.index("--dest") + 1]
while requirements:
    name, version = (re.split(r"[=<>~!]=?", requirements.pop()) + ["1.0"])[:2]
    dependencies = [] if "--no-deps" in words else DEPENDENCIES.get(name, [])
    metadata = [f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {d}" for d in dependencies]
    with zipfile.ZipFile(os.path.join(dest, f"{name.replace('-', '_')}-{version}-py3-none-any.whl"), "w") as whl:
        whl.writestr(f"{name.replace('-', '_')}-{version}.dist-info/METADATA", "\n".join(metadata) + "\n")
    requirements += [d.split(";")[0] for d in dependencies if Marker(d.split(";")[1]).evaluate()]
"""


def test_wheelhouse_build_evaluates_every_marker_for_each_target_python(tmp_path):
    """The whole build with a stand-in pip (no network). Each version's downloads get its
    --python-version and plain pins chosen for it, and what pip chose by the running python's markers
    in the wheels' own dependencies is corrected: pytest's tomli added for 3.10, `newer` left out."""
    log = tmp_path / "pip.log"
    fake = tmp_path / "python"
    fake.write_text(FAKE_PIP.replace("@PYTHON@", sys.executable).replace("@LOG@", str(log)))
    fake.chmod(0o755)
    chosen_by_pip = "tomli" if sys.version_info < (3, 11) else "newer"  # for the running python
    for version in ("3.10", "3.13"):
        out = tmp_path / f"python{version}"
        done = run("build_wheelhouse.sh", "--python-version", version, "--out", str(out), env={"DS2_PYTHON": str(fake)})
        assert done.returncode == 0 and "MB (limit 50 MB)" in done.stdout, done
        marker = '< "3.11"' if version == "3.10" else '>= "3.11"'
        assert (out / "numpy.txt").read_text() == pin_for("numpy", marker) + "\n"
        downloads = log.read_text().split("=== pip ")[1:]
        log.unlink()
        assert all(f"--python-version {version} " in d for d in downloads), downloads
        with_deps, without_deps, *completions = downloads
        assert pin_for("numpy", marker) in with_deps and pin_for("matplotlib", marker) not in with_deps
        assert pin_for("python-Levenshtein", marker) in with_deps and ";" not in with_deps
        assert "--no-deps" in without_deps and "mlperf-logging==" in without_deps
        wheels = {p.name.split("-")[0] for p in out.glob("*.whl")}
        assert {"numpy", "pytest", "soundfile", "setuptools", "mlperf_logging"} <= wheels
        needed, not_needed = ("tomli", "newer") if version == "3.10" else ("newer", "tomli")
        assert needed in wheels and not_needed not in wheels, wheels
        if needed == chosen_by_pip:
            assert completions == [] and "removed" not in done.stdout, done.stdout
        else:
            assert len(completions) == 1 and completions[0].rstrip().endswith(f" {needed}>=1"), completions
            assert f"Python {version} also needs {needed}>=1" in done.stdout
            assert f"not needed on Python {version}, removed: {not_needed}-1-py3-none-any.whl" in done.stdout


def write_wheel(directory: Path, name: str, version: str, *requires: str) -> None:
    with zipfile.ZipFile(directory / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        metadata = [f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {r}" for r in requires]
        whl.writestr(f"{name}-{version}.dist-info/METADATA", "\n".join(metadata) + "\n")


def marker_tool(*args) -> subprocess.CompletedProcess:
    command = [sys.executable, str(SCRIPTS / "wheelhouse.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


def test_wheelhouse_markers_follow_extras_versions_and_the_target_platform(tmp_path):
    """scripts/wheelhouse.py's walk: a dependency is needed where its marker holds for the target
    (python_version, an extra asked for, the platform's machine), satisfied only by a wheel of a
    version its specifier allows."""
    (tmp_path / "requirements.txt").write_text("app[gpu]==1.0\nold==1.0; python_version < '3.11'\n")
    (tmp_path / "requirements-no-deps.txt").write_text("nodeps==2.0\n")
    requires = ["lib>=2", 'gpu-extra; extra == "gpu"', 'cli; extra == "cli"', 'arm; platform_machine == "aarch64"']
    write_wheel(tmp_path, "app", "1.0", *requires)
    write_wheel(tmp_path, "lib", "1.5")  # too old for lib>=2
    write_wheel(tmp_path, "nodeps", "2.0", "never-walked")
    write_wheel(tmp_path, "cli", "1.0")
    x86 = ("--platform", "manylinux_2_28_x86_64")
    done = marker_tool("missing", tmp_path, "3.12", "3.10.12", *x86)
    assert done.returncode == 0 and done.stdout.split() == ["lib>=2", "gpu-extra"], done
    on_310 = marker_tool("missing", tmp_path, "3.10", "3.10.12", *x86).stdout.split()
    assert on_310 == ["old==1.0", "lib>=2", "gpu-extra"]
    unneeded = marker_tool("unneeded", tmp_path, "3.12", "3.10.12", *x86).stdout.split()
    assert [Path(p).name for p in unneeded] == ["cli-1.0-py3-none-any.whl", "lib-1.5-py3-none-any.whl"]
    done = marker_tool("missing", tmp_path, "3.12", "3.10.12", "--platform", "manylinux_2_28_aarch64")
    assert "arm" in done.stdout.split(), done


def test_wheelhouse_bad_marker_names_the_file_and_line(tmp_path):
    (tmp_path / "r.txt").write_text("a==1\nb==2; python_versio < '3.11'\n")
    done = marker_tool("pins", tmp_path / "r.txt", "3.10", "3.10.12")
    assert done.returncode != 0 and f"{tmp_path / 'r.txt'}:2:" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------- docker/run-dev.sh: whom it runs as


def run_dev_words(tmp_path: Path, **env: str) -> list[str]:
    """The docker command run-dev.sh prints, for a user 1000:1000 in groups 27 and 44 (a stand-in id)."""
    fake_id = 'case "$1" in -u|-g) echo 1000 ;; -G) echo "1000 27 44" ;; *) exec /usr/bin/id "$@" ;; esac'
    path = fake_commands(tmp_path / "bin", id=fake_id)
    clean = {k: v for k, v in os.environ.items() if k not in {"CONTAINER_USER", "DOCKER_ARGS"}}
    done = subprocess.run(
        [str(RUN_DEV), "--print"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **path, **env},
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done
    return shlex.split(done.stdout)


def options(words: list[str], name: str) -> list[str]:
    return [words[i + 1] for i, word in enumerate(words) if word == name]


def test_run_dev_runs_the_container_as_the_invoking_user_with_their_groups(tmp_path):
    words = run_dev_words(tmp_path)
    # nothing the container writes into the mounted repo, dataset or results is root's on the host
    assert options(words, "--user") == ["1000:1000"]
    assert options(words, "--group-add") == ["27", "44"]  # e.g. a dataset readable by a group only
    assert words.index("--user") < words.index("mlperf/ds2:latest")  # an option of docker run, not of the command


@pytest.mark.parametrize("user", ["root", "1234:5678"])
def test_run_dev_container_user_overrides_who_it_runs_as(tmp_path, user):
    words = run_dev_words(tmp_path, CONTAINER_USER=user)
    assert options(words, "--user") == [user] and options(words, "--group-add") == []


def test_run_dev_help_says_how_to_run_as_root():
    done = subprocess.run([str(RUN_DEV), "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "CONTAINER_USER=root" in done.stdout and "--user UID:GID" in done.stdout


def test_dockerfile_gives_any_user_a_writable_home():
    """run-dev.sh's user has no passwd entry in the image (HOME would be /): matplotlib's and the
    other caches need a HOME anyone may write to."""
    text = (REPO / "docker" / "Dockerfile").read_text()
    home = re.search(r"^ENV .*\bHOME=(\S+)", text, re.M)
    assert home and re.search(rf"^RUN mkdir -p {home.group(1)} && chmod 1777 {home.group(1)}$", text, re.M)
