#!/usr/bin/env bash
# Creates .venv with every pinned dependency. Needs no root: the synthetic corpus speaks with the
# espeakng-loader wheel and soundfile's wheel bundles libsndfile, so no Debian package is required.
# The one optional Debian package, sox (the baseline of two benchmarks), is installed when root or
# passwordless sudo allows it, and otherwise skipped with a note. Idempotent: `make setup` runs it
# only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  echo "usage: scripts/setup.sh [--system-only]   (run by 'make setup')"
  echo "Creates .venv with torch==2.13.0 and the pinned requirements*.txt. PYTHON=python3.11 picks the"
  echo "interpreter. Optional: the Debian package sox (bench/preprocess.py and bench/augment_fidelity.py"
  echo "compare against it), installed if root or passwordless sudo allows, else skipped."
  echo "--system-only: only that optional step, no .venv."
  exit 0
fi
system_only=0
if [[ "${1:-}" == "--system-only" ]]; then
  system_only=1
elif (($#)); then
  echo "setup: unknown argument $1 (see --help)" >&2
  exit 2
fi

# Optional system tools: what uses each, for the note when one is skipped.
declare -A OPTIONAL=([sox]="the sox baselines of bench/preprocess.py and bench/augment_fidelity.py")
case $(uname -m) in
  x86_64 | aarch64) ;;  # soundfile's wheel bundles libsndfile on these
  *) OPTIONAL[libsndfile1]="soundfile (its wheel bundles libsndfile only on x86_64 and aarch64)" ;;
esac

installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# Prints why the optional packages cannot be installed here, or nothing when they can.
why_not_installable() {
  if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    echo "no apt-get/dpkg on this system"
  elif [[ $(id -u) -ne 0 ]] && ! { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }; then
    echo "not root and no passwordless sudo"
  fi
}

# skip_note REASON PACKAGE...
skip_note() {
  local reason=$1 pkg
  shift
  for pkg in "$@"; do
    echo "setup: skipping optional system package $pkg (used only by ${OPTIONAL[$pkg]}): $reason" >&2
  done
  echo "setup: to have it later, as root: apt-get install -y $*" >&2
}

install_optional_packages() {
  local missing=() pkg reason
  for pkg in "${!OPTIONAL[@]}"; do
    if ! command -v dpkg-query >/dev/null || ! installed "$pkg"; then missing+=("$pkg"); fi
  done
  ((${#missing[@]})) || return 0
  reason=$(why_not_installable)
  if [[ -n $reason ]]; then
    skip_note "$reason" "${missing[@]}"
    return 0
  fi
  local sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
  echo "setup: installing optional Debian packages: ${missing[*]}"
  if ! { "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    skip_note "apt-get failed" "${missing[@]}"
  fi
}

install_optional_packages
((system_only == 0)) || exit 0

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "setup: installing torch==2.13.0 and the pinned requirements"
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -r requirements.txt -r requirements-deploy.txt -r requirements-test.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "setup: done (.venv ready)"
