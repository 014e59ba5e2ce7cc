# Plain CLIP with ViT-B/16 and SC-CLIP's published settings: COCO-Stuff 164k val2017, 171 classes.
# Only the encoder differs from ../cfg_coco_stuff164k.py, so the two compare like with like.
_base_ = '../cfg_coco_stuff164k.py'

model = dict(method='vanilla')
