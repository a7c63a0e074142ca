#!/usr/bin/env bash
# Builds the benchmark's CUDA image from docker/Dockerfile, with the repo root as build context.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

IMAGE=${IMAGE:-mlperf/ds2:latest}

usage() {
  cat <<EOF
usage: docker/build-docker.sh [--print] [DOCKER_BUILD_OPTION...]

Builds the image ${IMAGE} (docker build -f docker/Dockerfile -t \$IMAGE <repo root>).
Any other option is passed on to docker build, e.g. --no-cache or --pull.

  -h, --help   show this help and exit
  --print      print the docker command instead of running it (same as DRY_RUN=1)

environment:
  IMAGE        tag of the image (default mlperf/ds2:latest)
  BASE_IMAGE   NGC PyTorch base, e.g. nvcr.io/nvidia/pytorch:25.12-py3 (default: the Dockerfile's)
  DRY_RUN=1    print the docker command instead of running it
EOF
}

dry_run=${DRY_RUN:-0}
extra=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --print) dry_run=1 ;;
    *) extra+=("$1") ;;
  esac
  shift
done

cmd=(docker build -f docker/Dockerfile -t "$IMAGE")
if [[ -n ${BASE_IMAGE:-} ]]; then
  cmd+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi
cmd+=("${extra[@]}" .)

if [[ $dry_run == 1 ]]; then
  printf '%q ' "${cmd[@]}"
  echo
  exit 0
fi
if ! command -v docker >/dev/null; then
  echo "build-docker.sh: docker not found on PATH; install Docker and the NVIDIA Container Toolkit" >&2
  exit 1
fi
exec "${cmd[@]}"
