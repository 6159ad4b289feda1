set -x
B=/work/main/benchmarks/memory_estimate_check.py
P=/work/main/.venv/bin/python
$P $B --json > /tmp/memcheck/default.json
$P $B --json --batch-size 4 --seq-len 128 --gradient-checkpointing --chunked-loss --loss-chunk-size 128 > /tmp/memcheck/ckpt.json
$P $B --json --methods ows,lisa,full,galore --batch-size 1 --seq-len 64 --gradient-checkpointing --chunked-loss > /tmp/memcheck/b1.json
$P $B --json --methods ows,lisa,full,galore --batch-size 1 --seq-len 64 --gradient-checkpointing --chunked-loss --fused-step > /tmp/memcheck/b1_fused.json
$P $B --json --methods ows,lisa,galore --batch-size 1 --seq-len 64 --gradient-checkpointing --chunked-loss --fused-step --outside-optimizer adamw8bit > /tmp/memcheck/b1_fused_8bit.json
$P $B --json --methods ows,lisa,galore --batch-size 1 --seq-len 64 --gradient-checkpointing --chunked-loss --fused-step --outside-optimizer galore > /tmp/memcheck/b1_fused_galorehead.json
$P $B --json --methods ows,galore --batch-size 1 --seq-len 64 --gradient-checkpointing --chunked-loss --fused-step --svd-method gram > /tmp/memcheck/b1_fused_gram.json
$P $B --json --methods ows,lisa,galore --batch-size 1 --seq-len 64 --gradient-checkpointing --chunked-loss --dtype bfloat16 > /tmp/memcheck/b1_bf16.json
$P $B --json --methods ows,lisa,galore --batch-size 1 --seq-len 64 --gradient-checkpointing --chunked-loss --dtype bfloat16 --master-weights > /tmp/memcheck/b1_bf16_masters.json
echo done > /tmp/memcheck/DONE
