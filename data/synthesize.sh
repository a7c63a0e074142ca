#!/usr/bin/env bash
# Synthesise a LibriSpeech-format corpus with espeak-ng: see `data/synthesize.sh --help`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=$HERE/.venv/bin/python
[[ -x $PY ]] || PY=python3
# -P: never import a data/ folder from the caller's directory; the package is installed.
exec "$PY" -P -m data.synthesize "$@"
