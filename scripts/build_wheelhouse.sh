#!/usr/bin/env bash
# Builds, on a machine with internet, the wheels an offline GPU machine needs beyond its own torch
# (`make wheelhouse PYTHON=3.12`, or several versions: PYTHON=3.11,3.12,3.13);
# scripts/install_wheelhouse.sh installs them there.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Small enough to carry in with the repo, and low enough to catch a dependency that drags in a
# stack (mlperf-logging's pandas and scipy, librosa's numba: 50 MB and more each). Measured
# 2026-12-02: 34 wheels, 61.4-61.8 MB for Python 3.11-3.13 on x86_64 (58.5 MB for aarch64), of which
# numpy's wheel is 16.6 MB and matplotlib with pillow and fonttools 22 MB.
LIMIT_BYTES=64000000
# Left out: torch is the GPU machine's own (never replaced), librosa is not needed to train (only a
# test and a benchmark compare against it), mlperf-logging goes in without its dependencies (pandas
# and scipy, about 50 MB, serve only its result summariser and RCP checker). numpy is carried in a
# list of its own, numpy.txt: install_wheelhouse.sh installs it only into a python that has none
# (torch's metadata does not list numpy, so a pip-installed torch may come without it).
EXCLUDED='^(numpy|torch|librosa|mlperf-logging)[=<>~! ]'
NUMPY='^numpy[=<>~! ]'
NO_DEPS='^mlperf-logging[=<>~! ]'
# From requirements-test.txt: what `make gpu-check` runs its CUDA tests with.
TEST_TOOLS='^(pytest|pytest-timeout)[=<>~! ]'
# Builds the project's editable install offline (pip's isolated build environment takes it from the
# wheelhouse).
BUILD_BACKEND=setuptools==84.2.1

usage() {
  cat <<EOF
usage: scripts/build_wheelhouse.sh --python-version X.Y[,X.Y...] [--out DIR] [--platform TAG]...
       scripts/build_wheelhouse.sh --check-size DIR | --print-requirements

Downloads (pip download --only-binary=:all:) the wheels that an offline GPU machine with Python X.Y
and torch >= 2.11 needs to run make gpu-check: the pinned requirements.txt without librosa
(mlperf-logging without its dependencies), pytest and pytest-timeout, setuptools for the project's
own editable install, and the pinned numpy (installed there only where the python has no numpy).
Writes DIR/requirements.txt, DIR/requirements-no-deps.txt and DIR/numpy.txt beside them, prints
DIR's size and fails, naming the size, if DIR holds $((LIMIT_BYTES / 1000000)) MB or more.

  --python-version X.Y   the GPU machine's Python (python3 --version there), e.g. 3.12; several,
                         comma-separated (3.11,3.12,3.13), build one wheelhouse each. Versions older
                         than pyproject.toml's requires-python are refused before any download
  --out DIR              default: <repo>/wheelhouse/pythonX.Y (where install_wheelhouse.sh looks);
                         only with a single version
  --platform TAG         wheel platform, repeatable (default: this machine's), e.g. for an ARM
                         machine: --platform manylinux_2_28_aarch64
  --check-size DIR       only check that DIR holds less than $((LIMIT_BYTES / 1000000)) MB
  --print-requirements   only print what would be downloaded (with dependencies, then numpy, then
                         without dependencies)
  -h, --help             show this help and exit
Needs internet (PyPI). Copy the result to the GPU machine's repo, then run there:
scripts/install_wheelhouse.sh && make gpu-check
EOF
}

die() {
  echo "build_wheelhouse: error: $1" >&2
  exit "${2:-1}"
}

# check_size DIR: prints DIR's size; fails naming it when DIR holds LIMIT_BYTES or more.
check_size() {
  local dir=$1 bytes mb
  [[ -d $dir ]] || die "$dir: no such directory" 2
  bytes=$(du -sb "$dir" | cut -f1)
  mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1e6 }')
  if ((bytes >= LIMIT_BYTES)); then
    echo "build_wheelhouse: largest files in $dir:" >&2
    du -b "$dir"/* | sort -rn | head -5 >&2
    die "$dir holds $mb MB ($bytes bytes): the wheelhouse must stay under $((LIMIT_BYTES / 1000000)) MB"
  fi
  echo "build_wheelhouse: $dir: $(find "$dir" -name '*.whl' | wc -l) wheels, $mb MB (limit $((LIMIT_BYTES / 1000000)) MB)"
}

# pins FILE: its requirement lines, comments and blank lines dropped.
pins() {
  sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$1" | grep -v '^$' || true
}

# What is downloaded with its dependencies.
requirements_with_deps() {
  pins "$HERE/requirements.txt" | grep -Ev "$EXCLUDED"
  pins "$HERE/requirements-test.txt" | grep -E "$TEST_TOOLS"
  echo "$BUILD_BACKEND"
}

# The numpy pin: downloaded with the rest (so that their numpy is this one), installed only where
# the GPU machine's python has none.
requirements_numpy() {
  pins "$HERE/requirements.txt" | grep -E "$NUMPY"
}

# What is downloaded without its dependencies.
requirements_without_deps() {
  pins "$HERE/requirements.txt" | grep -E "$NO_DEPS"
}

# The oldest Python the project supports: X.Y.Z of the ">=X.Y.Z" in pyproject.toml's requires-python
# (any further clauses, such as "!=3.11.0", are pip's to check when it installs the project).
min_python() {
  sed -n 's/^requires-python *= *"[^"]*>= *\([0-9][0-9.]*\).*/\1/p' "$HERE/pyproject.toml"
}

# older VERSION MIN: true when X.Y is older than MIN's X.Y (a 3.11 machine may be 3.11.4 or later:
# pip checks the patch level itself when it installs the project).
older() {
  local IFS=.
  # shellcheck disable=SC2086 # split on dots into major minor
  set -- $1 $2
  (($1 < $3 || ($1 == $3 && $2 < $4)))
}

# build VERSION OUT: one wheelhouse.
build() {
  local version=$1 out=$2 download
  mkdir -p "$out"
  rm -f "$out"/*.whl # a previous build's wheels would be counted and installed
  requirements_with_deps >"$out/requirements.txt"
  requirements_numpy >"$out/numpy.txt"
  requirements_without_deps >"$out/requirements-no-deps.txt"
  download=("$PY" -m pip download --quiet --dest "$out" --only-binary=:all: --python-version "$version" "${platforms[@]}")
  echo "build_wheelhouse: downloading wheels for Python $version into $out"
  "${download[@]}" -r "$out/requirements.txt" -r "$out/numpy.txt" ||
    die "pip download for Python $version failed (see above); it needs internet access to PyPI"
  "${download[@]}" --no-deps -r "$out/requirements-no-deps.txt" ||
    die "pip download --no-deps for Python $version failed (see above)"
  check_size "$out"
}

python_versions='' out='' platforms=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --print-requirements)
      requirements_with_deps
      echo "# numpy, installed only where there is none:"
      requirements_numpy
      echo "# without dependencies:"
      requirements_without_deps
      exit 0 ;;
    --check-size)
      [[ $# -ge 2 ]] || die "--check-size needs a directory (see --help)" 2
      check_size "$2"
      exit 0 ;;
    --python-version | --out | --platform)
      [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)" 2
      case $1 in
        --python-version) python_versions=${2//python/} ;; # python3.12 means 3.12
        --out) out=$2 ;;
        --platform) platforms+=(--platform "$2") ;;
      esac
      shift ;;
    *) die "unknown argument $1 (see --help)" 2 ;;
  esac
  shift
done
[[ -n $python_versions ]] || die "--python-version X.Y is required: the GPU machine's Python, e.g. make wheelhouse PYTHON=3.12" 2
[[ $python_versions =~ ^3\.[0-9]+(,3\.[0-9]+)*$ ]] ||
  die "--python-version $python_versions: expected 3.Y, e.g. 3.12, or several, comma-separated: 3.11,3.12" 2
IFS=, read -ra versions <<<"$python_versions"
minimum=$(min_python)
[[ -n $minimum ]] || die "pyproject.toml: no requires-python = \">=X.Y.Z\" line to check the versions against"
for version in "${versions[@]}"; do
  ! older "$version" "$minimum" ||
    die "--python-version $version: the project needs Python >= $minimum (pyproject.toml requires-python), so no wheelhouse is built for $version; on that machine use a Python >= $minimum with its own torch" 2
done
[[ -z $out || ${#versions[@]} -eq 1 ]] || die "--out DIR takes a single --python-version; several go to <repo>/wheelhouse/pythonX.Y" 2

PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3

for version in "${versions[@]}"; do
  build "$version" "${out:-$HERE/wheelhouse/python$version}"
done
