# Plain CLIP with ViT-B/16 and SC-CLIP's published settings: Pascal VOC 2012 val, 20 classes (background ignored).
# Only the encoder differs from ../cfg_voc20.py, so the two compare like with like.
_base_ = '../cfg_voc20.py'

model = dict(method='vanilla')
