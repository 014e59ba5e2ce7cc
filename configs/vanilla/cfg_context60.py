# Plain CLIP with ViT-B/16 and SC-CLIP's published settings: Pascal Context val, 60 classes (background included).
# Only the encoder differs from ../cfg_context60.py, so the two compare like with like.
_base_ = '../cfg_context60.py'

model = dict(method='vanilla')
