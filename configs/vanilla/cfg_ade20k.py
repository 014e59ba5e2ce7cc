# Plain CLIP with ViT-B/16 and SC-CLIP's published settings: ADE20K (SceneParsing) val, 150 classes.
# Only the encoder differs from ../cfg_ade20k.py, so the two compare like with like.
_base_ = '../cfg_ade20k.py'

model = dict(method='vanilla')
