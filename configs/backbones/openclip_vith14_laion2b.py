# OpenCLIP ViT-H/14 trained on LAION-2B: open_clip's ViT-H-14 (GELU; 32 blocks, 16 heads of width 80) with
# pretrained tag laion2b_s32b_b79k, from https://huggingface.co/laion/CLIP-ViT-H-14-laion2B-s32B-b79K.
# Calibration indices None: the segmentor picks them by depth (32 blocks: ViT-B/16's scaled, logged);
# the thresholds are the ViT-L/14 ones (use it with the cfg_<benchmark>_vitl14.py files).
backbone = dict(
    clip_arch='ViT-H-14',
    clip_path='laion2b_s32b_b79k',
    pre_adjust_idx=None,
    post_adjust_idx=None,
    multi_start_idx=None,
    multi_end_idx=None,
)
