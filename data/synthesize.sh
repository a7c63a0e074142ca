#!/usr/bin/env bash
# Synthesise a LibriSpeech-format corpus with espeak-ng: see `data/synthesize.sh --help`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -x .venv/bin/python ]]; then
    PYTHON=.venv/bin/python
else
    PYTHON=python3
fi
exec "$PYTHON" -m data.synthesize "$@"
