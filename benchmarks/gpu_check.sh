#!/usr/bin/env bash
# Benchmark SC-CLIP on one CUDA GPU in a few minutes: ViT-B/16 and ViT-L/14 at the default
# precision (fp16 autocast), ViT-B/16 again in fp32, and the fp16 prediction agreement on the
# golden cases. Results (JSON and the printed tables) go to $OUT (default work_dirs/gpu_check).
#
#   bash benchmarks/gpu_check.sh
#   OUT=/some/folder PYTHON=python3 bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-work_dirs/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
"$PYTHON" -c "import mmengine, mmseg, ftfy, scclip, torch; assert torch.cuda.is_available(), 'no CUDA device'" || {
    echo "missing packages or no GPU: install requirements.txt (mmengine, mmsegmentation, mmcv-lite, ftfy) first" >&2
    exit 1
}

"$PYTHON" benchmarks/benchmark.py --device cuda --backbones ViT-B/16 ViT-L/14 --batch-sizes 1 32 \
    --crop-batch-size 256 --json "$OUT/benchmark_cuda_fp16.json" 2>&1 | tee "$OUT/benchmark_cuda_fp16.log"
"$PYTHON" benchmarks/benchmark.py --device cuda --backbones ViT-B/16 --precision fp32 --cases sliding \
    --batch-sizes 1 32 --crop-batch-size 256 --json "$OUT/benchmark_cuda_fp32.json" 2>&1 | tee "$OUT/benchmark_cuda_fp32.log"
"$PYTHON" benchmarks/precision_agreement.py --device cuda --precision fp16 \
    --json "$OUT/agreement_cuda_fp16.json" 2>&1 | tee "$OUT/agreement_cuda_fp16.log"
if [ "${COMPILE:-0}" = 1 ]; then
    "$PYTHON" benchmarks/benchmark.py --device cuda --backbones ViT-B/16 --cases sliding --compile \
        --batch-sizes 32 --crop-batch-size 256 --json "$OUT/benchmark_cuda_compile.json" 2>&1 | tee "$OUT/benchmark_cuda_compile.log"
fi
