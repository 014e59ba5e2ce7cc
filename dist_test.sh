#!/usr/bin/env bash
# Evaluate a method on the eight benchmarks with torchrun, then print its results beside the published numbers.
#
#   bash dist_test.sh                                   # SC-CLIP with ViT-B/16 on every visible GPU
#   GPUS=4 BACKBONE=ViT-L/14 bash dist_test.sh          # ViT-L/14 on 4 GPUs
#   METHOD=clearclip bash dist_test.sh                  # a baseline, with its release's settings (configs/clearclip/)
#   ABLATION=1 DATASETS="voc21 context60" bash dist_test.sh   # SC-CLIP's ablation table (benchmarks/ablation.py)
#   bash dist_test.sh --cfg-options model.clip_path=/path/to/ViT-B-16.pt   # extra eval.py arguments
#   BACKBONE=metaclip_vitl14_fullcc bash dist_test.sh   # an open_clip backbone of configs/backbones/
#
# Settings (environment): METHOD (scclip, or a folder of configs/: vanilla, maskclip, sclip, clearclip,
# naclip, vanilla_sclip, vanilla_clearclip), BACKBONE (ViT-B/16 | ViT-L/14 | a backbone file name of
# configs/backbones/, e.g. openclip_vitb16_laion2b: SC-CLIP with it, ViT-B ones with the ViT-B/16 settings,
# others with ViT-L/14's; work dir ./work_dirs/<that name>), GPUS (processes; default:
# the number of visible GPUs, else 1 on the CPU), PORT (29500), DATASETS (space-separated subset of the
# names below), CONFIG_ROOT (./configs for scclip, ./configs/<method> otherwise), WORK_DIR
# (./work_dirs/<backbone> for scclip, ./work_dirs/<method>/<backbone> otherwise), PYTHON (python),
# ABLATION (1: run SC-CLIP with each component off, all on, and vanilla CLIP; prints one table).
# Run it from the repository root: the configs name their vocabularies and data relative to it.
set -uo pipefail

METHOD=${METHOD:-scclip}
BACKBONE=${BACKBONE:-ViT-B/16}
PYTHON=${PYTHON:-python}
PORT=${PORT:-29500}
HERE="$(dirname "$0")"
EVAL="$HERE/eval.py"

OPEN_CLIP_BACKBONE=0
case "$BACKBONE" in
    ViT-B/16) SUFFIX="" ; TAG=vitb16 ;;
    ViT-L/14) SUFFIX="_vitl14" ; TAG=vitl14 ;;
    *)
        if [ ! -f "$HERE/configs/backbones/$BACKBONE.py" ] || [ "${BACKBONE#cfg_}" != "$BACKBONE" ]; then
            backbones=$(cd "$HERE/configs/backbones" && for file in *.py; do
                            case "$file" in cfg_*) ;; *) printf ' %s' "${file%.py}" ;; esac; done)
            echo "error: BACKBONE=$BACKBONE is not one of ViT-B/16, ViT-L/14 or the backbones of configs/backbones:$backbones" >&2
            exit 2
        fi
        # configs/backbones/cfg_<dataset>[_vitl14].py read the backbone file named by SCCLIP_BACKBONE.
        case "$BACKBONE" in *_vitb*) SUFFIX="" ;; *) SUFFIX="_vitl14" ;; esac
        TAG=$BACKBONE
        OPEN_CLIP_BACKBONE=1
        export SCCLIP_BACKBONE="$BACKBONE" ;;
esac
if [ "$OPEN_CLIP_BACKBONE" = 1 ] && { [ "$METHOD" != scclip ] || [ "${ABLATION:-0}" = 1 ]; }; then
    echo "error: BACKBONE=$BACKBONE runs SC-CLIP's configs/backbones; for METHOD=$METHOD or ABLATION=1 give the" \
         "backbone as eval.py options instead: --cfg-options model.clip_arch=ARCH model.clip_path=TAG_OR_FILE" >&2
    exit 2
fi
# The benchmarks, in the paper's order, from scclip's one table of them (scclip/benchmarks.py).
if [ -z "${DATASETS:-}" ]; then
    DATASETS=$("$PYTHON" -m scclip benchmarks) || exit 2
else
    # shellcheck disable=SC2086  # DATASETS is a list of words
    "$PYTHON" -m scclip benchmarks --check $DATASETS || exit 2
fi
if [ -z "${GPUS:-}" ]; then
    GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count() or 1)") || exit 2
fi

if [ "${ABLATION:-0}" = 1 ]; then
    [ "$METHOD" = scclip ] || { echo "error: ABLATION=1 ablates SC-CLIP; leave METHOD unset (got METHOD=$METHOD)" >&2; exit 2; }
    # shellcheck disable=SC2086  # DATASETS is a list of words
    exec "$PYTHON" "$HERE/benchmarks/ablation.py" --backbone "$BACKBONE" --gpus "$GPUS" --port "$PORT" \
        --work-dir "${WORK_DIR:-./work_dirs/ablation/$TAG}" --datasets $DATASETS -- "$@"
fi

if [ "$OPEN_CLIP_BACKBONE" = 1 ]; then
    CONFIG_ROOT=${CONFIG_ROOT:-./configs/backbones}
    WORK_DIR=${WORK_DIR:-./work_dirs/$TAG}
elif [ "$METHOD" = scclip ]; then
    CONFIG_ROOT=${CONFIG_ROOT:-./configs}
    WORK_DIR=${WORK_DIR:-./work_dirs/$TAG}
else
    CONFIG_ROOT=${CONFIG_ROOT:-./configs/$METHOD}
    WORK_DIR=${WORK_DIR:-./work_dirs/$METHOD/$TAG}
fi
if [ ! -d "$CONFIG_ROOT" ] || [ "$METHOD" = backbones ]; then
    # configs/backbones holds SC-CLIP with other backbones (BACKBONE=...), not a method
    methods=$(cd "$HERE/configs" && for folder in */; do
                  [ -e "$folder/cfg_voc21.py" ] && [ "$folder" != backbones/ ] && printf ' %s' "${folder%/}"; done)
    echo "error: METHOD=$METHOD has no configs ($CONFIG_ROOT is not a method's folder); use one of: scclip$methods" >&2
    exit 2
fi
for dataset in $DATASETS; do
    config="$CONFIG_ROOT/cfg_${dataset}${SUFFIX}.py"
    if [ ! -f "$config" ]; then
        echo "error: $config does not exist: METHOD=$METHOD has no $BACKBONE config for $dataset" \
             "(its release publishes none, or DATASETS has a typo)" >&2
        exit 2
    fi
done

failed=()
for dataset in $DATASETS; do
    config="$CONFIG_ROOT/cfg_${dataset}${SUFFIX}.py"
    echo "=== $METHOD, $BACKBONE on $dataset: $config, $GPUS process(es)"
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
