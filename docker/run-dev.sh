#!/usr/bin/env bash
# Starts the benchmark image with the GPUs, and with the working tree, the dataset and the results
# directory mounted, then runs a command in it (default: an interactive bash).
set -euo pipefail
caller_dir=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
workdir=/workspace/ds2

IMAGE=${IMAGE:-mlperf/ds2:latest}
GPUS=${GPUS:-all}
SHM_SIZE=${SHM_SIZE:-16g}

usage() {
  cat <<EOF
usage: docker/run-dev.sh [--print] [--data-dir DIR] [--results-dir DIR] [--] [COMMAND [ARG...]]

Runs COMMAND (default: bash) in ${workdir} of the image ${IMAGE}, with these mounts:
  the repo ${repo}  ->  ${workdir}
  the dataset directory  ->  ${workdir}/LibriSpeech_dataset
  the results directory  ->  ${workdir}/results
Missing host directories are created first, so that they belong to you and not to root.
Example: docker/run-dev.sh ./run_and_time.sh

  -h, --help          show this help and exit
  --print             print the docker command instead of running it (same as DRY_RUN=1)
  --data-dir DIR      dataset directory on the host (default \$DATA_DIR or <repo>/LibriSpeech_dataset)
  --results-dir DIR   results directory on the host (default \$RESULTS_DIR or <repo>/results)

environment:
  IMAGE        image to run (default mlperf/ds2:latest, as built by docker/build-docker.sh)
  GPUS         value of docker run --gpus (default all; e.g. '"device=0,1"')
  SHM_SIZE     size of /dev/shm (default 16g); SHM_SIZE=host shares the host's IPC namespace instead
  DATA_DIR     dataset directory on the host
  RESULTS_DIR  results directory on the host
  DOCKER_ARGS  extra docker run options, split on spaces (e.g. "--user 1000:1000")
  DRY_RUN=1    print the docker command instead of running it
EOF
}

die() {
  echo "run-dev.sh: $*" >&2
  exit 2
}

# Relative paths are the caller's, not the repo root's.
host_path() {
  (cd "$caller_dir" && realpath -m -- "$1")
}

dry_run=${DRY_RUN:-0}
data_dir=${DATA_DIR:-$repo/LibriSpeech_dataset}
results_dir=${RESULTS_DIR:-$repo/results}
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --print) dry_run=1 ;;
    --data-dir | --results-dir)
      [[ $# -ge 2 && -n $2 ]] || die "$1 needs a directory (see --help)"
      if [[ $1 == --data-dir ]]; then data_dir=$2; else results_dir=$2; fi
      shift ;;
    --data-dir=*) data_dir=${1#*=} ;;
    --results-dir=*) results_dir=${1#*=} ;;
    --) shift; break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) break ;;
  esac
  shift
done
command=("$@")
((${#command[@]})) || command=(bash)

data_dir=$(host_path "$data_dir")
results_dir=$(host_path "$results_dir")
for dir in "$data_dir" "$results_dir"; do
  [[ $dir != *:* ]] || die "directory $dir contains ':', which docker run -v cannot mount"
  [[ ! -e $dir || -d $dir ]] || die "$dir exists and is not a directory"
done

# /dev/shm carries the batches DataLoader workers hand to the trainer; Docker's default of 64 MB
# ends in "bus error". A sized tmpfs keeps the container's IPC namespace private (no shared
# segments with host processes, none left behind on the host by a killed run) and only uses the
# memory actually written, so 16g is a cap, not a reservation.
if [[ $SHM_SIZE == host ]]; then
  shm=(--ipc=host)
else
  shm=(--shm-size "$SHM_SIZE")
fi
read -ra docker_args <<<"${DOCKER_ARGS:-}"

cmd=(docker run --rm --gpus "$GPUS" "${shm[@]}" --ulimit memlock=-1 --ulimit stack=67108864)
if [[ -t 0 ]]; then
  cmd+=(-it)
fi
cmd+=(-v "$repo:$workdir" -v "$data_dir:$workdir/LibriSpeech_dataset" -v "$results_dir:$workdir/results")
cmd+=(-w "$workdir" "${docker_args[@]}" "$IMAGE" "${command[@]}")

if [[ $dry_run == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
command -v docker >/dev/null || die "docker not found on PATH; install Docker and the NVIDIA Container Toolkit"
# Docker would create missing mount points as root; the repo's own two are created here as well,
# because with other host directories Docker makes them inside the mounted working tree.
mkdir -p "$data_dir" "$results_dir" "$repo/LibriSpeech_dataset" "$repo/results"
exec "${cmd[@]}"
