#!/usr/bin/env bash
# The real-size benchmarks on one GPU, in one go (for a lent GPU machine with a limited lease): the
# describer (transformers generate; vLLM too when installed), bf16 LoRA vs 4-bit QLoRA training, the
# paper's CORE (bf16 autocast and fp32) and DREAM (dense vs window). Models are built from their published
# configs with random weights (speed and memory do not depend on the weights).
#   bash eval/gpu_realsize.sh OUT_DIR [STEP ...]      steps: describe train train-b1 core core-fp32 core-workers reward
#                                                     dream (default: all)
# Packages the machine lacks: a copied package folder in .gpu/site (bitsandbytes), wheels in .gpu/whl
# (datasets, open_clip_torch and their small dependencies).
set -uo pipefail
OUT=${1:-eval/out/gpu}
shift || true
STEPS=${*:-describe train train-b1 core core-fp32 core-workers reward dream}
mkdir -p "$OUT"
export PYTHONPATH="$PWD:$PWD/.gpu/site:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python3}
if ls .gpu/whl/*.whl >/dev/null 2>&1; then  # wheels carried to a machine without an index
    $PY -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/realness-site .gpu/whl/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/realness-site"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch, transformers, peft; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.txt"
step() {
    local name=$1 limit=$2; shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    echo "== $name"; timeout "$limit" "$@" 2>&1 | grep -v -i "warn\|it/s\]" | tee "$OUT/$name.log"
}
step describe 240 $PY eval/bench_describe.py --model realsize:qwen2.5-vl-3b --engines transformers vllm --device cuda \
    --dtype bfloat16 --images 128 --batch-sizes 1 8 32 64 --max-new-tokens 64 --out "$OUT/bench_describe.json"
step train 300 $PY eval/bench_train_describer.py --model realsize:qwen2.5-vl-3b --steps 8 --warmup 3 --batch-size 4 \
    --modes lora qlora qlora-before --out "$OUT/bench_train_describer_b4.json"
step train-b1 200 $PY eval/bench_train_describer.py --model realsize:qwen2.5-vl-3b --steps 6 --warmup 2 --batch-size 1 \
    --out "$OUT/bench_train_describer_b1.json"
step core 100 $PY eval/bench_core.py --models paper --device cuda --amp bf16 --images 512 --batch-sizes 1 32 128 256 \
    --out "$OUT/bench_core.json"
step core-fp32 100 $PY eval/bench_core.py --models paper --device cuda --images 256 --batch-sizes 32 128 \
    --out "$OUT/bench_core_fp32.json"
step core-workers 120 $PY eval/bench_core.py --models paper --device cuda --amp bf16 --images 512 --batch-sizes 128 256 \
    --workers 0 8 --out "$OUT/bench_core_workers.json"
step reward 120 $PY eval/bench_reward.py --device cuda --dtype bf16 --batch-sizes 1 8 32 128 --out "$OUT/bench_reward.json"
step dream 100 $PY eval/bench_dream.py --device cuda --images 16 --out "$OUT/bench_dream.json"
