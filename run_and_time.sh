#!/usr/bin/env bash
# Time one training run to the target WER, MLPerf style: a thin wrapper over `python -m pytorch.train`.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: ./run_and_time.sh [--data-dir DIR] [--results-dir DIR] [--resume] [--dry-run] [key=value ...]

Trains DeepSpeech2 until the validation WER reaches target_wer and prints, as other MLPerf references:
  STARTING TIMING RUN AT <date>
  ENDING TIMING RUN AT <date>
  RESULT,SPEECH_RECOGNITION,<seed>,<seconds>,<user>,<start date>
(seconds = wall time of this script). result.json in the results dir holds status and time to train.

  --data-dir DIR     prepared dataset (default: ./LibriSpeech_dataset under the repo)
  --results-dir DIR  logs, metrics, checkpoints (default: ./results/<date-time> under the repo)
  --resume           continue from DIR/checkpoints/last.pt (not a valid MLPerf timing)
  --dry-run          check parameters and data, print the model; no training, no timing lines
  key=value          parameter overrides, e.g. preset=demo lr=3e-4 (python -m pytorch.train --help)

Environment: NPROC (processes per node, default 1), NNODES (default 1), NODE_RANK, MASTER_ADDR,
MASTER_PORT: with NPROC > 1 or NNODES > 1 the trainer runs under torchrun. With NNODES > 1,
--results-dir must be on a file system all nodes share (rank 0 writes, every rank resumes from it).

Exit status: 0 target reached, 1 error, 2 bad parameters, 3 aborted (every epoch run without
reaching the target: MLPerf counts that as a failed run; result.json says status "aborted").
EOF
}

absolute() { if [[ $1 = /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }

DATA_DIR=""
RESULTS_DIR=""
FLAGS=()
OVERRIDES=()
while (($#)); do
    case $1 in
        -h | --help) usage; exit 0 ;;
        --data-dir) (($# >= 2)) || { echo "error: --data-dir needs a directory" >&2; exit 2; }; DATA_DIR=$(absolute "$2"); shift ;;
        --data-dir=*) DATA_DIR=$(absolute "${1#*=}") ;;
        --results-dir) (($# >= 2)) || { echo "error: --results-dir needs a directory" >&2; exit 2; }; RESULTS_DIR=$(absolute "$2"); shift ;;
        --results-dir=*) RESULTS_DIR=$(absolute "${1#*=}") ;;
        --resume | --dry-run) FLAGS+=("$1") ;;
        *=*) OVERRIDES+=("$1") ;;
        *) echo "error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

cd "$(dirname "${BASH_SOURCE[0]}")"
# DS2_PYTHON (set in the Docker image) wins over a .venv that a host may have left in the mounted repo.
PYTHON=${DS2_PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || command -v "$PYTHON" >/dev/null || PYTHON=python3
if ((${NNODES:-1} > 1)) && [[ -z $RESULTS_DIR ]]; then
    echo "error: NNODES > 1 needs --results-dir on a file system every node shares (checkpoints, resume)" >&2
    exit 2
fi
DATA_DIR=${DATA_DIR:-$PWD/LibriSpeech_dataset}
RESULTS_DIR=${RESULTS_DIR:-$PWD/results/$(date +%Y%m%d-%H%M%S)}

NPROC=${NPROC:-1}
NNODES=${NNODES:-1}
LAUNCH=("$PYTHON" -m pytorch.train)
if ((NPROC > 1 || NNODES > 1)); then
    LAUNCH=("$PYTHON" -m torch.distributed.run --nproc-per-node "$NPROC")
    if ((NNODES > 1)); then
        LAUNCH+=(--nnodes "$NNODES" --node-rank "${NODE_RANK:?set NODE_RANK for NNODES > 1}"
            --master-addr "${MASTER_ADDR:?set MASTER_ADDR for NNODES > 1}" --master-port "${MASTER_PORT:-29500}")
    else
        LAUNCH+=(--standalone)  # one node: torchrun picks a free port, so parallel runs cannot collide
    fi
    LAUNCH+=(-m pytorch.train)
fi
ARGS=(--data-dir "$DATA_DIR" --results-dir "$RESULTS_DIR" ${FLAGS[@]+"${FLAGS[@]}"} ${OVERRIDES[@]+"${OVERRIDES[@]}"})

if [[ " ${FLAGS[*]-} " == *" --dry-run "* ]]; then
    exec "${LAUNCH[@]}" "${ARGS[@]}"
fi

# The seed of the RESULT line, as the trainer will resolve it (preset, then overrides); bad
# parameters stop here, before the timing starts, with the trainer's message and status 2.
SEED_OF='
import sys, params
from pytorch.train import check_trainable
try:
    p = params.parse(sys.argv[1:])
    check_trainable(p)
    print(p.seed)
except params.ParamError as err:
    sys.exit(f"error: {err}")'
SEED=$("$PYTHON" -c "$SEED_OF" ${OVERRIDES[@]+"${OVERRIDES[@]}"}) || exit 2

START=$(date +%s)
START_FMT=$(date +"%Y-%m-%d %r")
echo "STARTING TIMING RUN AT $START_FMT"
STATUS=0
"${LAUNCH[@]}" "${ARGS[@]}" || STATUS=$?
END=$(date +%s)
echo "ENDING TIMING RUN AT $(date +"%Y-%m-%d %r")"
echo "RESULT,SPEECH_RECOGNITION,$SEED,$((END - START)),${USER:-$(id -un)},$START_FMT"
# Only the node of global rank 0 writes result.json; the others report the launcher's status.
if ((STATUS == 0)) && [[ ${NODE_RANK:-0} == 0 ]]; then
    RUN_STATUS=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$RESULTS_DIR/result.json") || exit 1
    if [[ $RUN_STATUS != success ]]; then
        echo "Target not reached: run $RUN_STATUS (see $RESULTS_DIR/result.json)" >&2
        STATUS=3
    fi
fi
exit "$STATUS"
