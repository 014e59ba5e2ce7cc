#!/usr/bin/env bash
# Evaluate a method on the eight benchmarks with torchrun, then print its results beside the published numbers.
#
#   bash dist_test.sh                                   # SC-CLIP with ViT-B/16 on every visible GPU
#   GPUS=4 BACKBONE=ViT-L/14 bash dist_test.sh          # ViT-L/14 on 4 GPUs
#   METHOD=clearclip bash dist_test.sh                  # a baseline, with its release's settings (configs/clearclip/)
#   ABLATION=1 DATASETS="voc21 context60" bash dist_test.sh   # SC-CLIP's ablation table (benchmarks/ablation.py)
#   bash dist_test.sh --cfg-options model.clip_path=/path/to/ViT-B-16.pt   # extra eval.py arguments
#   BACKBONE=metaclip_vitl14_fullcc bash dist_test.sh   # an open_clip backbone by name (python -m scclip backbones)
#   BACKBONE=ViT-B-16:laion2b_s34b_b88k bash dist_test.sh        # open_clip's model:pretrained pair
#   BACKBONE=weights.safetensors CLIP_ARCH=ViT-B-16 bash dist_test.sh   # an open_clip checkpoint file
#   DRY_RUN=1 BACKBONE=ViT-L/14 bash dist_test.sh       # print the commands instead of running them
#
# Settings (environment): METHOD (scclip, or a folder of configs/: vanilla, maskclip, sclip, clearclip,
# naclip, resclip, vanilla_sclip, vanilla_clearclip), BACKBONE (default ViT-B/16; anything eval.py --backbone takes:
# an OpenAI name, a name of `python -m scclip backbones`, an open_clip ARCH:TAG pair or a checkpoint file;
# it is passed as --backbone, and its depth picks the configs whose published settings it takes:
# cfg_<benchmark>.py for ViT-B-sized ones, cfg_<benchmark>_vitl14.py for deeper ones, see scclip/backbones.py),
# CLIP_ARCH (open_clip architecture of a BACKBONE file or tag: --clip-arch), GPUS (processes; default: the
# number of visible GPUs, else 1 on the CPU), PORT (29500), DATASETS (space-separated subset of the names
# below), CONFIG_ROOT (./configs for scclip, ./configs/<method> otherwise), WORK_DIR (./work_dirs/<backbone>
# for scclip, ./work_dirs/<method>/<backbone> otherwise; <backbone> is vitb16, vitl14 or the backbone's name),
# PYTHON (python), ABLATION (1: run SC-CLIP with each component off, all on, and vanilla CLIP; prints one
# table; OpenAI's ViT-B/16 or ViT-L/14), DRY_RUN (1: print each command instead of running it).
# Run it from the repository root: the configs name their vocabularies and data relative to it.
set -uo pipefail

METHOD=${METHOD:-scclip}
PYTHON=${PYTHON:-python}
PORT=${PORT:-29500}
HERE="$(dirname "$0")"
EVAL="$HERE/eval.py"

run() {  # a command, or with DRY_RUN=1 its words (shell-quoted) on one line
    if [ "${DRY_RUN:-0}" = 1 ]; then
        local line
        line=$(printf '%q ' "$@")
        echo "${line% }"
    else
        "$@"
    fi
}

BACKBONE_OPTIONS=()
if [ -z "${BACKBONE:-}" ]; then
    BACKBONE=ViT-B/16 ; CONFIG_ENDING=.py ; TAG=vitb16 ; SETTINGS=ViT-B/16
else
    # The benchmark configs' ending, the work-dir name and whose published settings the backbone takes,
    # from scclip's one table of backbones and its rule (scclip/backbones.py).
    resolve=(--resolve "$BACKBONE")
    BACKBONE_OPTIONS=(--backbone "$BACKBONE")
    if [ -n "${CLIP_ARCH:-}" ]; then
        resolve+=(--clip-arch "$CLIP_ARCH")
        BACKBONE_OPTIONS+=(--clip-arch "$CLIP_ARCH")
    fi
    resolved=$("$PYTHON" -m scclip backbones "${resolve[@]}") || exit 2
    read -r CONFIG_ENDING TAG SETTINGS <<<"$resolved"
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
    case "$BACKBONE" in
        ViT-B/16|ViT-L/14) ;;
        *) echo "error: ABLATION=1 runs OpenAI's ViT-B/16 or ViT-L/14 (benchmarks/ablation.py), not" \
                "BACKBONE=$BACKBONE: leave BACKBONE unset or give one of those" >&2
           exit 2 ;;
    esac
    # shellcheck disable=SC2086  # DATASETS is a list of words
    run "$PYTHON" "$HERE/benchmarks/ablation.py" --backbone "$BACKBONE" --gpus "$GPUS" --port "$PORT" \
        --work-dir "${WORK_DIR:-./work_dirs/ablation/$TAG}" --datasets $DATASETS -- "$@"
    exit
fi

if [ "$METHOD" = scclip ]; then
    CONFIG_ROOT=${CONFIG_ROOT:-./configs}
    WORK_DIR=${WORK_DIR:-./work_dirs/$TAG}
else
    CONFIG_ROOT=${CONFIG_ROOT:-./configs/$METHOD}
    WORK_DIR=${WORK_DIR:-./work_dirs/$METHOD/$TAG}
fi
# A release that runs one config per benchmark for every backbone (its release.py says so: ResCLIP).
if grep -qs '^settings_for_every_backbone = True' "$CONFIG_ROOT/release.py"; then
    CONFIG_ENDING=.py
fi
if [ ! -d "$CONFIG_ROOT" ]; then
    methods=$(cd "$HERE/configs" && for folder in */; do
                  [ -e "$folder/cfg_voc21.py" ] && printf ' %s' "${folder%/}"; done)
    echo "error: METHOD=$METHOD has no configs ($CONFIG_ROOT is not a method's folder); use one of: scclip$methods" >&2
    exit 2
fi
for dataset in $DATASETS; do
    config="$CONFIG_ROOT/cfg_${dataset}${CONFIG_ENDING}"
    if [ ! -f "$config" ]; then
        takes=""
        [ "$SETTINGS" = "$BACKBONE" ] || takes="BACKBONE=$BACKBONE takes the $SETTINGS settings; "
        echo "error: $config does not exist: METHOD=$METHOD has no $SETTINGS config for $dataset" \
             "(${takes}its release publishes none, or DATASETS has a typo)" >&2
        exit 2
    fi
done

failed=()
for dataset in $DATASETS; do
    config="$CONFIG_ROOT/cfg_${dataset}${CONFIG_ENDING}"
    echo "=== $METHOD, $BACKBONE on $dataset: $config, $GPUS process(es)"
    if ! run "$PYTHON" -m torch.distributed.run --nproc_per_node="$GPUS" --master_port="$PORT" \
            "$EVAL" --config "$config" "${BACKBONE_OPTIONS[@]}" --work-dir "$WORK_DIR" --launcher pytorch "$@"; then
        failed+=("$dataset")
    fi
done

echo
run "$PYTHON" "$EVAL" --summary "$WORK_DIR"
if [ ${#failed[@]} -gt 0 ]; then
    echo "failed: ${failed[*]} (see the messages above)" >&2
    exit 1
fi
