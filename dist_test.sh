#!/usr/bin/env bash
# Evaluate SC-CLIP on the eight benchmarks with torchrun, then print the markdown results table.
#
#   bash dist_test.sh                                   # ViT-B/16 on every visible GPU
#   GPUS=4 BACKBONE=ViT-L/14 bash dist_test.sh          # ViT-L/14 on 4 GPUs
#   bash dist_test.sh --cfg-options model.clip_path=/path/to/ViT-B-16.pt   # extra eval.py arguments
#
# Settings (environment): BACKBONE (ViT-B/16 | ViT-L/14), GPUS (processes; default: the number of
# visible GPUs, else 1 on the CPU), PORT (29500), DATASETS (space-separated subset of the names
# below), CONFIG_ROOT (./configs), WORK_DIR (./work_dirs/<backbone>), PYTHON (python).
# Run it from the repository root: the configs name their vocabularies and data relative to it.
set -uo pipefail

BACKBONE=${BACKBONE:-ViT-B/16}
PYTHON=${PYTHON:-python}
PORT=${PORT:-29500}
CONFIG_ROOT=${CONFIG_ROOT:-./configs}
DATASETS=${DATASETS:-"voc21 context60 coco_object voc20 context59 coco_stuff164k city_scapes ade20k"}
EVAL="$(dirname "$0")/eval.py"

case "$BACKBONE" in
    ViT-B/16) SUFFIX="" ; TAG=vitb16 ;;
    ViT-L/14) SUFFIX="_vitl14" ; TAG=vitl14 ;;
    *) echo "error: BACKBONE=$BACKBONE is not one of ViT-B/16, ViT-L/14" >&2; exit 2 ;;
esac
WORK_DIR=${WORK_DIR:-./work_dirs/$TAG}
if [ -z "${GPUS:-}" ]; then
    GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() or 1)") || exit 2
fi

failed=()
for dataset in $DATASETS; do
    config="$CONFIG_ROOT/cfg_${dataset}${SUFFIX}.py"
    echo "=== $BACKBONE on $dataset: $config, $GPUS process(es)"
    if ! "$PYTHON" -m torch.distributed.run --nproc_per_node="$GPUS" --master_port="$PORT" \
            "$EVAL" --config "$config" --work-dir "$WORK_DIR" --launcher pytorch "$@"; then
        failed+=("$dataset")
    fi
done

echo
"$PYTHON" "$EVAL" --summary "$WORK_DIR"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (see the messages above)" >&2
    exit 1
fi
