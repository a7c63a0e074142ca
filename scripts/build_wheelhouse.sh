#!/usr/bin/env bash
# Builds, on a machine with internet, the wheels an offline GPU machine needs beyond its own torch
# (`make wheelhouse PYTHON=3.12`, or several versions: PYTHON=3.10,3.11,3.12,3.13);
# scripts/install_wheelhouse.sh installs them there.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Small enough to carry in with the repo, and low enough to catch a dependency that drags in a
# stack (mlperf-logging's pandas and scipy, librosa's numba: 50 MB and more each). Measured
# 2026-12-02 on x86_64: 36.7, 36.9, 36.6 and 36.6 MB for Python 3.10, 3.11, 3.12 and 3.13 (27 wheels
# for 3.10, 25 for the others; 33.6 MB for 3.12 on aarch64), of which numpy's wheel is 16.6-16.9 MB.
LIMIT_BYTES=50000000
# Left out: torch is the GPU machine's own (never replaced), librosa is not needed to train (only a
# test and a benchmark compare against it), mlperf-logging goes in without its dependencies (pandas
# and scipy, about 50 MB, serve only its result summariser and RCP checker). matplotlib (with pillow,
# fonttools, kiwisolver, contourpy, cycler, pyparsing and python-dateutil: about 22 MB) only draws
# curves.png, which the trainer skips without it (pytorch/results.py): the same curves are in the
# TensorBoard event files it writes itself (pytorch/tensorboard.py); tensorboard, should a requirement
# list it, only views those files, elsewhere. numpy is carried in a list of its own, numpy.txt:
# install_wheelhouse.sh installs it only into a python that has none (torch's metadata does not list
# numpy, so a pip-installed torch may come without it).
EXCLUDED='^(numpy|torch|librosa|mlperf-logging|matplotlib|tensorboard)[=<>~! ]'
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
       scripts/build_wheelhouse.sh --check-size DIR | --print-requirements [--python-version X.Y]

Downloads (pip download --only-binary=:all:) the wheels that an offline GPU machine with Python X.Y
and torch >= 2.11 needs to run make gpu-check: the pinned requirements.txt without librosa,
matplotlib and tensorboard (mlperf-logging without its dependencies), pytest and pytest-timeout,
setuptools for the project's own editable install, and the pinned numpy (installed there only where
the python has no numpy). Environment markers (python_version), in the requirement files and in the
wheels' own dependencies, are evaluated for each X.Y (scripts/wheelhouse.py). Writes
DIR/requirements.txt, DIR/requirements-no-deps.txt and DIR/numpy.txt beside them, prints DIR's size
and fails, naming the size, if DIR holds $((LIMIT_BYTES / 1000000)) MB or more.

  --python-version X.Y   the GPU machine's Python (python3 --version there), e.g. 3.12; several,
                         comma-separated (3.10,3.11,3.12,3.13), build one wheelhouse each. Versions
                         older than pyproject.toml's requires-python are refused before any download
  --out DIR              default: <repo>/wheelhouse/pythonX.Y (where install_wheelhouse.sh looks);
                         only with a single version
  --platform TAG         wheel platform, repeatable (default: this machine's), e.g. for an ARM
                         machine: --platform manylinux_2_28_aarch64
  --check-size DIR       only check that DIR holds less than $((LIMIT_BYTES / 1000000)) MB
  --print-requirements   only print what would be downloaded for one --python-version (default:
                         the Python running this script): with dependencies, then numpy, then
                         without dependencies
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

# pins FILE VERSION: FILE's requirement lines for Python VERSION (X.Y), each line's environment
# marker (`numpy==2.2.6; python_version < "3.11"`) evaluated for VERSION and removed: `pip download
# --python-version X.Y` would evaluate markers for the interpreter it runs in (scripts/wheelhouse.py).
pins() {
  marker_tool pins "$1" "$2"
}

# marker_tool COMMAND PATH VERSION: scripts/wheelhouse.py, for this build's target platform.
marker_tool() {
  "$PY" "$HERE/scripts/wheelhouse.py" "$@" "$minimum" ${platform:+--platform "$platform"}
}

# requirements_with_deps VERSION: what is downloaded with its dependencies.
requirements_with_deps() {
  local requirements test
  requirements=$(pins "$HERE/requirements.txt" "$1") && test=$(pins "$HERE/requirements-test.txt" "$1") || exit
  grep -Ev "$EXCLUDED" <<<"$requirements" || true
  grep -E "$TEST_TOOLS" <<<"$test" || true
  echo "$BUILD_BACKEND"
}

# requirements_numpy VERSION: the numpy pin, downloaded with the rest (so that their numpy is this
# one), installed only where the GPU machine's python has none.
requirements_numpy() {
  local requirements
  requirements=$(pins "$HERE/requirements.txt" "$1") || exit
  grep -E "$NUMPY" <<<"$requirements" || true
}

# requirements_without_deps VERSION: what is downloaded without its dependencies.
requirements_without_deps() {
  local requirements
  requirements=$(pins "$HERE/requirements.txt" "$1") || exit
  grep -E "$NO_DEPS" <<<"$requirements" || true
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
  requirements_with_deps "$version" >"$out/requirements.txt"
  requirements_numpy "$version" >"$out/numpy.txt"
  requirements_without_deps "$version" >"$out/requirements-no-deps.txt"
  download=("$PY" -m pip download --quiet --dest "$out" --only-binary=:all: --python-version "$version" "${platforms[@]}")
  echo "build_wheelhouse: downloading wheels for Python $version into $out"
  "${download[@]}" -r "$out/requirements.txt" -r "$out/numpy.txt" ||
    die "pip download for Python $version failed (see above); it needs internet access to PyPI"
  "${download[@]}" --no-deps -r "$out/requirements-no-deps.txt" ||
    die "pip download --no-deps for Python $version failed (see above)"
  # pip evaluated the wheels' own dependency markers for $PY's Python, not for $version: what
  # $version needs besides (e.g. pytest's tomli on 3.10) is added, what only $PY's needs is removed.
  local round text missing unneeded
  for round in 1 2 3 4 5 6; do
    text=$(marker_tool missing "$out" "$version") || die "$out: its wheels could not be read (see above)"
    [[ -n $text ]] || break
    ((round < 6)) || die "$out: still incomplete for Python $version after 5 more downloads: ${text//$'\n'/ }"
    mapfile -t missing <<<"$text"
    echo "build_wheelhouse: Python $version also needs ${missing[*]} (pip evaluated their markers for $PY)"
    "${download[@]}" "${missing[@]}" || die "pip download for Python $version failed (see above)"
  done
  text=$(marker_tool unneeded "$out" "$version") || die "$out: its wheels could not be read (see above)"
  if [[ -n $text ]]; then
    mapfile -t unneeded <<<"$text"
    echo "build_wheelhouse: not needed on Python $version, removed: ${unneeded[*]##*/}"
    rm -f "${unneeded[@]}"
  fi
  check_size "$out"
}

python_versions='' out='' platforms=() platform='' print_only=0
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --print-requirements) print_only=1 ;;
    --check-size)
      [[ $# -ge 2 ]] || die "--check-size needs a directory (see --help)" 2
      check_size "$2"
      exit 0 ;;
    --python-version | --out | --platform)
      [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)" 2
      case $1 in
        --python-version) python_versions=${2//python/} ;; # python3.12 means 3.12
        --out) out=$2 ;;
        --platform) platforms+=(--platform "$2") platform=${platform:-$2} ;;
      esac
      shift ;;
    *) die "unknown argument $1 (see --help)" 2 ;;
  esac
  shift
done
PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
if ((print_only)) && [[ -z $python_versions ]]; then
  python_versions=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
fi
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

if ((print_only)); then
  ((${#versions[@]} == 1)) || die "--print-requirements takes a single --python-version" 2
  requirements_with_deps "${versions[0]}"
  echo "# numpy, installed only where there is none:"
  requirements_numpy "${versions[0]}"
  echo "# without dependencies:"
  requirements_without_deps "${versions[0]}"
  exit 0
fi
for version in "${versions[@]}"; do
  build "$version" "${out:-$HERE/wheelhouse/python$version}"
done
