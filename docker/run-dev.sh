#!/usr/bin/env bash
# Starts the benchmark image as the invoking user, with the GPUs, the host's network and IPC
# namespaces, the InfiniBand devices when the host has them, and with the working tree, the dataset
# and the results directory mounted, then runs a command in it (default: an interactive bash).
# Ready for several nodes.
set -euo pipefail
caller_dir=$PWD
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
workdir=/workspace/ds2

IMAGE=${IMAGE:-mlperf/ds2:latest}
GPUS=${GPUS:-all}
NETWORK=${NETWORK:-host}
IPC=${IPC:-host}
SHM_SIZE=${SHM_SIZE:-16g}
INFINIBAND=${INFINIBAND:-/dev/infiniband}
CONTAINER_USER=${CONTAINER_USER:-}
# Passed into the container from the caller's environment when set: the launch (run_and_time.sh
# starts torchrun from these) and every NCCL_* variable.
LAUNCH_VARIABLES=(NPROC NNODES NODE_RANK MASTER_ADDR MASTER_PORT)

usage() {
  cat <<EOF
usage: docker/run-dev.sh [--print] [--data-dir DIR] [--results-dir DIR] [--] [COMMAND [ARG...]]

Runs COMMAND (default: bash) in ${workdir} of the image ${IMAGE}, with these mounts:
  the repo ${repo}  ->  ${workdir}
  the dataset directory  ->  ${workdir}/LibriSpeech_dataset
  the results directory  ->  ${workdir}/results
It runs as whoever runs it (--user UID:GID, here $(id -u):$(id -g), with the other groups of
id -G), so that everything it writes into these directories is yours, not root's (CONTAINER_USER
below); HOME is the image's /home/ds2, writable by any user. Missing host directories are created
first, for the same reason.
Example: docker/run-dev.sh ./run_and_time.sh

  -h, --help          show this help and exit
  --print             print the docker command instead of running it (same as DRY_RUN=1)
  --data-dir DIR      dataset directory on the host (default \$DATA_DIR or <repo>/LibriSpeech_dataset)
  --results-dir DIR   results directory on the host (default \$RESULTS_DIR or <repo>/results)

environment:
  IMAGE        image to run (default mlperf/ds2:latest, as built by docker/build-docker.sh)
  GPUS         value of docker run --gpus (default all; e.g. '"device=0,1"')
  NETWORK      docker run --network (default host: torchrun's rendezvous and NCCL's sockets use the
               host's interfaces, so other nodes reach the container at the host's address)
  IPC          docker run --ipc (default host: /dev/shm for DataLoader workers and NCCL's shared
               memory); IPC=private keeps a private namespace with a /dev/shm of SHM_SIZE
  SHM_SIZE     size of /dev/shm when IPC=private (default 16g); SHM_SIZE=host means IPC=host
  INFINIBAND   InfiniBand device directory, passed with --device and --cap-add IPC_LOCK when it
               exists (default /dev/infiniband; INFINIBAND=none never passes it)
  NCCL_*, ${LAUNCH_VARIABLES[*]}
               passed into the container when set (e.g. NCCL_SOCKET_IFNAME, NCCL_IB_HCA, NCCL_DEBUG)
  DATA_DIR     dataset directory on the host
  RESULTS_DIR  results directory on the host
  CONTAINER_USER
               who the container runs as (default: you, $(id -u):$(id -g)); CONTAINER_USER=root runs
               as root, e.g. to apt-get install in the container (what it writes is then root's)
  DOCKER_ARGS  extra docker run options, split on spaces (e.g. "--name ds2")
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

# /dev/shm carries the batches DataLoader workers hand to the trainer and NCCL's intra-node
# buffers; Docker's private default of 64 MB ends in "bus error". The host's IPC namespace is what
# NVIDIA recommends for its PyTorch images; IPC=private gets a sized tmpfs instead (a cap, not a
# reservation), with no segment shared with, or left behind on, the host.
[[ $SHM_SIZE != host ]] || IPC=host
if [[ $IPC == private ]]; then
  ipc=(--ipc private --shm-size "$SHM_SIZE")
else
  ipc=(--ipc "$IPC")
fi
# Without the InfiniBand devices NCCL silently falls back to TCP sockets between nodes (NET/Socket
# in its NCCL_DEBUG=INFO output instead of NET/IB); RDMA also needs to pin memory (IPC_LOCK and an
# unlimited memlock, which is always set).
infiniband=()
if [[ $INFINIBAND != none && -d $INFINIBAND ]]; then
  infiniband=(--device "$INFINIBAND" --cap-add IPC_LOCK)
fi
passed_env=()
for name in "${LAUNCH_VARIABLES[@]}" $(compgen -e NCCL_ || true); do
  [[ -z ${!name+set} ]] || passed_env+=(-e "$name")
done
read -ra docker_args <<<"${DOCKER_ARGS:-}"
# As the invoking user, so that what the container writes into the mounted repo, dataset and
# results (results, reports, __pycache__, .pytest_cache) is not root-owned on the host. With the
# user's other groups too: a dataset on shared storage may be readable by a group only.
if [[ -n $CONTAINER_USER ]]; then
  user=(--user "$CONTAINER_USER")
else
  user=(--user "$(id -u):$(id -g)")
  for group in $(id -G); do
    [[ $group == "$(id -g)" ]] || user+=(--group-add "$group")
  done
fi

cmd=(docker run --rm "${user[@]}" --gpus "$GPUS" --network "$NETWORK" "${ipc[@]}" "${infiniband[@]}")
cmd+=(--ulimit memlock=-1 --ulimit stack=67108864 "${passed_env[@]}")
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
