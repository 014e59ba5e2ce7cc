# NACLIP with ViT-B/16, its release's published settings: COCO-Stuff 164k val2017, 171 classes.
_base_ = ['../cfg_coco_stuff164k.py', './release.py']

model = dict(_base_.release_settings)
