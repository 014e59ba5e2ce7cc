# Plain CLIP with ViT-B/16 and SC-CLIP's published settings: COCO-Object val2017, background + 80 things.
# Only the encoder differs from ../cfg_coco_object.py, so the two compare like with like.
_base_ = '../cfg_coco_object.py'

model = dict(method='vanilla')
