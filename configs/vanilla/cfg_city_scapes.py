# Plain CLIP with ViT-B/16 and SC-CLIP's published settings: Cityscapes val, 19 classes, resized to 560 px (short side).
# Only the encoder differs from ../cfg_city_scapes.py, so the two compare like with like.
_base_ = '../cfg_city_scapes.py'

model = dict(method='vanilla')
