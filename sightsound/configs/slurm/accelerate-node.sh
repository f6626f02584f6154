#!/usr/bin/env bash
# One node's share of a multi-node `accelerate launch`, under Slurm: run it with one task per node
#     srun --ntasks-per-node=1 bash configs/slurm/accelerate-node.sh --config_file configs/accelerate/zero3-2nodes.yaml \
#         -m sightsound sft --config RUN/config/sft.launch.yaml
# (what `run.launch` does in configs/sightsound-r1-2nodes.yaml). The first node of the allocation is
# the main process's host; each node's rank is its Slurm node id.
set -euo pipefail
head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
exec accelerate launch --num_machines "$SLURM_NNODES" --machine_rank "$SLURM_NODEID" \
    --main_process_ip "$head_node" --main_process_port "${MAIN_PROCESS_PORT:-29500}" "$@"
