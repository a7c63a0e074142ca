#!/usr/bin/env bash
# Creates .venv with every pinned dependency, and installs the Debian packages the project uses
# (espeak-ng for the synthetic corpus, sox for the preprocessing benchmark, libsndfile1 for soundfile).
# Idempotent: `make setup` runs it only when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  echo "usage: scripts/setup.sh   (run by 'make setup')"
  echo "Installs Debian packages espeak-ng, sox, libsndfile1 (needs root or sudo) and creates .venv"
  echo "with torch==2.13.0 and the pinned requirements*.txt. PYTHON=python3.11 picks the interpreter."
  exit 0
fi

DEB_PACKAGES=(espeak-ng sox libsndfile1)
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    SUDO=(sudo)
  else
    echo "setup: cannot install Debian packages ${missing[*]} (not root, no passwordless sudo)." >&2
    echo "setup: ask an administrator for: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null; then
    echo "setup: apt-get not found; install these packages with your system's package manager: ${missing[*]}" >&2
    exit 1
  fi
  echo "setup: installing Debian packages: ${missing[*]}"
  "${SUDO[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
echo "setup: installing torch==2.13.0 and the pinned requirements"
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -r requirements.txt -r requirements-test.txt
.venv/bin/python -m pip install -q --no-deps -e .
echo "setup: done (.venv ready)"
