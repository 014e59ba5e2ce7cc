# OpenCLIP ViT-B/16 trained on LAION-2B: open_clip's ViT-B-16 (GELU) with pretrained tag laion2b_s34b_b88k,
# downloaded on first use from https://huggingface.co/laion/CLIP-ViT-B-16-laion2B-s34B-b88K. 12 blocks: the
# published ViT-B/16 calibration. Used by configs/backbones/cfg_<benchmark>.py (see README, "Other backbones").
backbone = dict(clip_arch='ViT-B-16', clip_path='laion2b_s34b_b88k')
