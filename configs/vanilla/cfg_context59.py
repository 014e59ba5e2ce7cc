# Plain CLIP with ViT-B/16 and SC-CLIP's published settings: Pascal Context val, 59 classes (background ignored).
# Only the encoder differs from ../cfg_context59.py, so the two compare like with like.
_base_ = '../cfg_context59.py'

model = dict(method='vanilla')
