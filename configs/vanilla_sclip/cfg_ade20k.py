# Plain CLIP with ViT-B/16, as the SCLIP release runs it (its non-CSA path):
# sclip/cfg_ade20k.py with CLIP's own last block.
_base_ = '../sclip/cfg_ade20k.py'

model = dict(method='vanilla')
