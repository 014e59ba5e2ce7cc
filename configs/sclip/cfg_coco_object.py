# SCLIP with ViT-B/16, its release's published settings: COCO-Object val2017, background + 80 things.
_base_ = ['../cfg_coco_object.py', './release.py']

model = dict(_base_.release_settings, logit_scale=50, prob_thd=0.1)
