#!/bin/bash
# SSL pretraining at the paper's scale on SLURM: N nodes x 8 GPUs, one torchrun per node (issue #15).
# Prepare the CTs once (any node, CPU only), into a folder every node can read:
#   python -m swinunetr_lib.data build-manifest /data/ct --layout flat --out /shared/ct.json
#   python -m swinunetr_lib.data prepare /shared/ct.json --out /shared/prepared --spacing 1.5,1.5,1.5
# Then: sbatch --nodes 2 ci/slurm_pretrain.sh   (RUN_DIR must be on a shared file system: checkpoints, resume)
#SBATCH --job-name=swin-ssl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

PREPARED=${PREPARED:-/shared/prepared}      # written by `data prepare`
RUN_DIR=${RUN_DIR:-/shared/runs/ssl_5050}   # shared by all nodes; a resubmitted job resumes from its last.pt
GPUS=${GPUS:-8}
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=${MASTER_PORT:-29500}
export OMP_NUM_THREADS=1                    # the DataLoader workers take the cores

srun --kill-on-bad-exit=1 .venv/bin/torchrun \
    --nnodes "$SLURM_NNODES" --nproc-per-node "$GPUS" \
    --rdzv-id "$SLURM_JOB_ID" --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" \
    -m swinunetr_lib.pretrain --prepared-dir "$PREPARED" --run-dir "$RUN_DIR" \
    --max-steps "${MAX_STEPS:-45000}" --batch-size 2 --num-samples 2 --resume true "$@"
