# shellcheck shell=bash
# One node of 8 H100 or H200 GPUs: the default recipe as it was built, 32 utterances per GPU and step.
#   source slurm/config_DGXH100_1x8x32.sh && sbatch -N "$DGXNNODES" -t "$WALLTIME" slurm/run.sub
## the recipe (params.py defaults): global batch 256 = 8 GPUs x 1 micro-batch of 32
export BATCHSIZE=256
export MICRO_BATCH=32
export LR=1e-3
export EXTRA_PARAMS=""
## the system
export DGXNNODES=1
export DGXNGPU=8
# 10 epochs at most: about 38 min each run by the cost model's ESTIMATE for 8 H100s (bench.cost_model),
# plus set-up and evaluation; 10 runs a result (NEXP, run.sub).
export WALLTIME_RUN_MINUTES=60
export WALLTIME=$((${NEXP:-10} * WALLTIME_RUN_MINUTES + 15))
