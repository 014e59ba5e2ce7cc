# Plain CLIP with ViT-B/16 and SC-CLIP's published settings: Pascal VOC 2012 val, 21 classes (background included).
# Only the encoder differs from ../cfg_voc21.py, so the two compare like with like.
_base_ = '../cfg_voc21.py'

model = dict(method='vanilla')
