# SC-CLIP with ViT-L/14, published settings: cfg_context59.py with the L/14 backbone and settings.
_base_ = './cfg_context59.py'

model = dict(
    clip_path='ViT-L/14',
    pre_adjust_idx=16,
    post_adjust_idx=6,
    multi_start_idx=8,
    multi_end_idx=19,
    res_cls=0.1,
)
