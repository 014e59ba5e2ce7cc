# OpenCLIP ViT-L/14 trained on LAION-2B: open_clip's ViT-L-14 (GELU) with pretrained tag laion2b_s32b_b82k,
# downloaded on first use from https://huggingface.co/laion/CLIP-ViT-L-14-laion2B-s32B-b82K. 24 blocks: the
# published ViT-L/14 calibration. These weights were trained on images normalised with mean = std = 0.5
# (open_clip's pretrained config), not CLIP's statistics, so the pre-processor says so.
backbone = dict(
    clip_arch='ViT-L-14',
    clip_path='laion2b_s32b_b82k',
    data_preprocessor=dict(
        type='SCCLIPDataPreProcessor', mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5], bgr_to_rgb=True
    ),
)
