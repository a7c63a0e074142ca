#!/usr/bin/env bash
# Builds, on a machine with internet, the wheels an offline GPU machine needs beyond its own torch
# and numpy (`make wheelhouse PYTHON=3.12`); scripts/install_wheelhouse.sh installs them there.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LIMIT_BYTES=50000000 # 50 MB: small enough to carry in with the repo
# Left out: numpy and torch are the GPU machine's own (never replaced), librosa is not needed to
# train (only a test and a benchmark compare against it), mlperf-logging goes in without its
# dependencies (pandas and scipy, about 50 MB, serve only its result summariser and RCP checker).
EXCLUDED='^(numpy|torch|librosa|mlperf-logging)[=<>~! ]'
NO_DEPS='^mlperf-logging[=<>~! ]'
# From requirements-test.txt: what `make gpu-check` runs its CUDA tests with.
TEST_TOOLS='^(pytest|pytest-timeout)[=<>~! ]'
# Builds the project's editable install offline (pip's isolated build environment takes it from the
# wheelhouse).
BUILD_BACKEND=setuptools==84.2.1

usage() {
  cat <<EOF
usage: scripts/build_wheelhouse.sh --python-version X.Y [--out DIR] [--platform TAG]...
       scripts/build_wheelhouse.sh --check-size DIR | --print-requirements

Downloads (pip download --only-binary=:all:) the wheels that an offline GPU machine with Python X.Y,
torch >= 2.11 and numpy needs to run make gpu-check: the pinned requirements.txt without numpy and
librosa (mlperf-logging without its dependencies), pytest and pytest-timeout, and setuptools for the
project's own editable install. Writes DIR/requirements.txt and DIR/requirements-no-deps.txt beside
them, and fails, naming the size, if DIR holds 50 MB or more.

  --python-version X.Y   the GPU machine's Python (python3 --version there), e.g. 3.12
  --out DIR              default: <repo>/wheelhouse/pythonX.Y (where install_wheelhouse.sh looks)
  --platform TAG         wheel platform, repeatable (default: this machine's), e.g. for an ARM
                         machine: --platform manylinux_2_28_aarch64
  --check-size DIR       only check that DIR holds less than 50 MB
  --print-requirements   only print what would be downloaded (with dependencies, then without)
  -h, --help             show this help and exit
Needs internet (PyPI). Copy the result to the GPU machine's repo, then run there:
scripts/install_wheelhouse.sh && make gpu-check
EOF
}

die() {
  echo "build_wheelhouse: error: $1" >&2
  exit "${2:-1}"
}

# check_size DIR: fails naming the size when DIR holds LIMIT_BYTES or more.
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

# What is downloaded without its dependencies.
requirements_without_deps() {
  pins "$HERE/requirements.txt" | grep -E "$NO_DEPS"
}

python_version='' out='' platforms=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --print-requirements)
      requirements_with_deps
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
        --python-version) python_version=${2#python} ;;
        --out) out=$2 ;;
        --platform) platforms+=(--platform "$2") ;;
      esac
      shift ;;
    *) die "unknown argument $1 (see --help)" 2 ;;
  esac
  shift
done
[[ -n $python_version ]] || die "--python-version X.Y is required: the GPU machine's Python, e.g. make wheelhouse PYTHON=3.12" 2
[[ $python_version =~ ^3\.[0-9]+$ ]] || die "--python-version $python_version: expected 3.Y, e.g. 3.12" 2
out=${out:-$HERE/wheelhouse/python$python_version}

PY=${DS2_PYTHON:-$HERE/.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3

mkdir -p "$out"
rm -f "$out"/*.whl # a previous build's wheels would be counted and installed
requirements_with_deps >"$out/requirements.txt"
requirements_without_deps >"$out/requirements-no-deps.txt"

download=("$PY" -m pip download --quiet --dest "$out" --only-binary=:all: --python-version "$python_version" "${platforms[@]}")
echo "build_wheelhouse: downloading wheels for Python $python_version into $out"
"${download[@]}" -r "$out/requirements.txt" || die "pip download failed (see above); it needs internet access to PyPI"
"${download[@]}" --no-deps -r "$out/requirements-no-deps.txt" || die "pip download --no-deps failed (see above)"
# Pulled in as a dependency (soundfile, matplotlib, ...), but the GPU machine's own is kept.
rm -f "$out"/numpy-*.whl
check_size "$out"
