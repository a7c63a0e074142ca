# shellcheck shell=bash
# One H100 or H200 GPU: the same run as 1x8 (global batch 256) in 8 micro-batches of 32 per step.
#   source slurm/config_DGXH100_1x1x32.sh && sbatch -N "$DGXNNODES" -t "$WALLTIME" slurm/run.sub
export BATCHSIZE=256
export MICRO_BATCH=32
export LR=1e-3
export EXTRA_PARAMS=""
export DGXNNODES=1
export DGXNGPU=1
# ESTIMATE: about 5 h for 10 epochs on one H100 (bench.cost_model).
export WALLTIME_RUN_MINUTES=330
export WALLTIME=$((${NEXP:-10} * WALLTIME_RUN_MINUTES + 15))
