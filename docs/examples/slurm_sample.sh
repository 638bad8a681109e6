#!/bin/bash
# A diffsde command on several GPU nodes under SLURM: one torchrun per node, one process per GPU.
#
#   sbatch docs/examples/slurm_sample.sh                      # the compare run below
#   sbatch docs/examples/slurm_sample.sh train --toy ring --batch-size 4096 --out runs/ring
#
# Any of sample, compare, converge and train; the other commands refuse more than one process.
# Rank 0 writes the output folder and may run on any node: give --out a path on a file system
# every node shares (and run from such a folder).
#SBATCH --job-name=diffsde
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun per node; it starts the node's processes
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=16
#SBATCH --time=01:00:00

set -euo pipefail

GPUS_PER_NODE=4                      # keep equal to --gpus-per-node above
PORT=29500                           # a free TCP port on the first node (the rendezvous)

# source /path/to/venv/bin/activate  # the environment where diffsde is installed

if [ "$#" -eq 0 ]; then              # no arguments: this command
    set -- compare --toy ring --ns 25 50 100 200 --n-samples 1000000 --repeats 3 \
        --out "diffsde-compare-$SLURM_JOB_ID"
fi

# The rendezvous runs on the job's first node; every node's torchrun meets there.
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)

srun torchrun \
    --nnodes="$SLURM_NNODES" \
    --nproc-per-node="$GPUS_PER_NODE" \
    --rdzv-id="$SLURM_JOB_ID" \
    --rdzv-backend=c10d \
    --rdzv-endpoint="$head_node:$PORT" \
    -m diffsde "$@" --device cuda --dist-timeout 900
