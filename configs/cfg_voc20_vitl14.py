# SC-CLIP with ViT-L/14, published settings: cfg_voc20.py with the L/14 backbone (its calibration
# settings, pre/post_adjust_idx 16/6, multi 8–19, res_cls 0.1, follow from its 24 blocks).
_base_ = './cfg_voc20.py'

backbone = 'ViT-L/14'
model = dict(clip_path=backbone)
