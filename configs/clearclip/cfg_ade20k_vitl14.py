# ClearCLIP with ViT-L/14: cfg_ade20k.py with the L/14 backbone (the release has no L/14-specific settings).
_base_ = './cfg_ade20k.py'

backbone = 'ViT-L/14'
model = dict(clip_path=backbone)
