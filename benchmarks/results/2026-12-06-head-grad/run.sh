#!/usr/bin/env bash
# The head's gradient summed projected (project_head_grad): estimate vs measured peak tensor bytes on SmolLM2-135M
# with its own (untied) head, batch 4 x 512, gradient checkpointing, chunked loss, GaLore outside the layers, 3 steps
# (step 0 computes the head's projector). Run from the repository root.
set -e
cd "$(dirname "$0")"
B="python ../../memory_estimate_check.py --json --untie-head --chunked-loss --outside-optimizer galore --steps 3 --seq-len 512 --gradient-checkpointing"
$B --methods ows,lisa,galore --project-head-grad > projected.json
$B --methods ows,lisa,galore > whole.json
$B --methods ows --dtype bfloat16 --project-head-grad > projected-bf16.json
$B --methods ows --dtype bfloat16 > whole-bf16.json
