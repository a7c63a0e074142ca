#!/usr/bin/env bash
# The whole benchmark end to end on this machine, on a synthetic LibriSpeech-format corpus:
# synthesise -> serve from a loopback mirror -> download_dataset.sh (md5, extract, preprocess)
# -> verify_dataset.sh -> run_and_time.sh preset=demo, until the validation WER reaches the target.
# A second run reuses the corpus and the prepared dataset; training always runs anew.
set -euo pipefail
cd "$(dirname "$0")"

usage() {
  cat <<EOF
usage: ./demo.sh [--dir DIR] [--train N] [--dev N] [--jobs N] [key=value ...]

Runs the real pipeline on a synthetic espeak-ng corpus served from a loopback HTTP mirror, then
trains the demo preset to the benchmark's target (validation WER <= 23.0) on this CPU.

  --dir DIR     where corpus, dataset and results go (default: ./demo)
  --train N     training utterances (train-clean-100; default: ${DEMO_TRAIN:-12000})
  --dev N       held-out validation utterances (dev-clean; default: ${DEMO_DEV:-500})
  --jobs N      processes for synthesis and preprocessing (default: number of cores)
  key=value     params overrides for training, on top of preset=demo (e.g. epochs=3)
EOF
}

DIR=demo
TRAIN=${DEMO_TRAIN:-12000}
DEV=${DEMO_DEV:-500}
JOBS=$(nproc)
OVERRIDES=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --dir) DIR=$2; shift 2 ;;
    --train) TRAIN=$2; shift 2 ;;
    --dev) DEV=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    *=*) OVERRIDES+=("$1"); shift ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

PY=${DS2_PYTHON:-.venv/bin/python}
[[ -x $PY ]] || command -v "$PY" >/dev/null || PY=python3
CORPUS=$DIR/corpus-$TRAIN-$DEV
DATASET=$DIR/dataset-$TRAIN-$DEV
RESULTS=$DIR/results/$(date +%Y%m%d-%H%M%S)
mkdir -p "$DIR" "$RESULTS"

STAGES=()
stage_start() { STAGE_T0=$(date +%s%N); echo; echo "=== demo: $1"; }
stage_end() {
  local ms=$((($(date +%s%N) - STAGE_T0) / 1000000))
  STAGES+=("$(printf '%-12s %5d.%d s' "$1" $((ms / 1000)) $((ms % 1000 / 100)))")
}

stage_start "synthesise $TRAIN training + $DEV held-out utterances -> $CORPUS"
if [[ -f $CORPUS/md5sum.txt ]]; then
  echo "corpus already there (delete $CORPUS to remake it)"
else
  synthetic/synthesize.sh --out "$CORPUS" --subsets "train-clean-100:$TRAIN,dev-clean:$DEV" --seed 1 --jobs "$JOBS"
fi
stage_end synthesise

stage_start "serve $CORPUS on a loopback mirror"
PORT_FILE=$DIR/mirror.port
rm -f "$PORT_FILE"
"$PY" -m synthetic.mirror --root "$CORPUS" --port-file "$PORT_FILE" &
MIRROR_PID=$!
trap 'kill "$MIRROR_PID" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -s $PORT_FILE ]] && break; sleep 0.1; done
[[ -s $PORT_FILE ]] || { echo "demo.sh: the mirror did not start" >&2; exit 1; }
MIRROR=http://127.0.0.1:$(cat "$PORT_FILE")
echo "mirror at $MIRROR"
stage_end mirror

stage_start "download_dataset.sh from the mirror (md5 check, safe extraction, preprocessing)"
./download_dataset.sh --data-dir "$DATASET" --subsets train-clean-100,dev-clean --mirror "$MIRROR" \
  --checksums "$CORPUS/md5sum.txt" --jobs "$JOBS" preset=demo
kill "$MIRROR_PID" 2>/dev/null || true
stage_end download

stage_start "verify_dataset.sh"
./verify_dataset.sh --data-dir "$DATASET" --jobs "$JOBS"
stage_end verify

stage_start "run_and_time.sh preset=demo ${OVERRIDES[*]}"
set +e
./run_and_time.sh --data-dir "$DATASET" --results-dir "$RESULTS" preset=demo "${OVERRIDES[@]}" 2>&1 | tee "$RESULTS/run_and_time.log"
STATUS=${PIPESTATUS[0]}
set -e
stage_end train

echo
echo "=== demo: done (run_and_time.sh exit status $STATUS)"
grep -E '^RESULT,' "$RESULTS/run_and_time.log" || true
"$PY" - "$RESULTS/result.json" <<'EOF' || true
import json, sys
r = json.load(open(sys.argv[1]))
print(f"status {r['status']}: final validation WER {r['final_wer']:.2f} (target {r['target_wer']}) "
      f"after {r['epochs']} epochs, time to train {r['time_to_train_s']:.1f} s")
EOF
echo "results:     $RESULTS"
echo "  run log:   $RESULTS/run_and_time.log"
echo "  metrics:   $RESULTS/metrics.jsonl"
# curves.png is drawn only where matplotlib is installed (pytorch/results.py); the TensorBoard event
# files, which hold the same curves, are written either way.
if [[ -f $RESULTS/curves.png ]]; then
  echo "  curves:    $RESULTS/curves.png"
elif ! "$PY" -c 'import matplotlib' 2>/dev/null; then
  echo "  curves:    see TensorBoard (matplotlib not installed): tensorboard --logdir $RESULTS/tensorboard"
fi
echo "  MLPerf log: $RESULTS/mlperf_log.txt"
echo "time per stage:"
printf '  %s\n' "${STAGES[@]}"
exit "$STATUS"
