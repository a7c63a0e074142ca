# shellcheck shell=bash
# A test of the launch, not the benchmark: 2 CPU tasks (gloo) on one node, the tiny model, on the tiny
# dataset of tests/trainer_fixtures.py (tests/test_slurm.py submits it to a one-machine Slurm).
export BATCHSIZE=8
export MICRO_BATCH=4
export LR=1e-2
export EXTRA_PARAMS="preset=tiny optimizer=adamw epochs=3 target_wer=99 num_workers=0"
export DGXNNODES=1
export DGXNGPU=2
export NEXP=${NEXP:-3}
export SUMMARY_RULES=log  # a scaled-down run: its fixed knobs differ on purpose
export WALLTIME=10
