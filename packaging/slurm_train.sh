#!/usr/bin/env bash
# One DTL Studio training run over several machines with Slurm: one torchrun per node,
# one process per GPU, NCCL between them. Submit with:
#
#     sbatch --nodes=2 --gpus-per-node=4 packaging/slurm_train.sh /shared/photos /shared/runs/my_run
#
# The image folder must be at the same path on every node. Only the first process
# (rank 0) writes the run folder; put it on a shared file system so that you (and the
# app) can follow it while it trains, and so that `resume` works from any node.
# Cancelling the job (scancel) stops every process after its current batch and leaves
# the last epoch checkpoint; continue with the same script and `resume` instead of `train`.
#SBATCH --job-name=dtl-train
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=dtl-train-%j.log
set -euo pipefail

DATA="${1:?usage: sbatch slurm_train.sh IMAGE_DIR RUN_DIR [extra train options]}"
RUN_DIR="${2:?usage: sbatch slurm_train.sh IMAGE_DIR RUN_DIR [extra train options]}"
shift 2
PYTHON="${PYTHON:-python}"                        # the environment's Python with dtl-studio installed
GPUS_PER_NODE="${SLURM_GPUS_ON_NODE:-${SLURM_GPUS_PER_NODE:-1}}"
HEAD_NODE="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"
PORT="${DTL_RDZV_PORT:-29500}"
export DTL_COLLECTIVE_TIMEOUT="${DTL_COLLECTIVE_TIMEOUT:-600}"   # seconds before a lost process ends the run
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}"

# scancel sends SIGTERM to every process (then SIGKILL after KillWait): the engine treats it as Stop.
srun --kill-on-bad-exit=1 "$PYTHON" -m torch.distributed.run \
    --nnodes="$SLURM_NNODES" --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv-backend=c10d --rdzv-endpoint="$HEAD_NODE:$PORT" --rdzv-id="$SLURM_JOB_ID" \
    -m dtl_engine train "$DATA" --out "$RUN_DIR" --device cuda "$@"
