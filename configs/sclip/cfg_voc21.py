# SCLIP with ViT-B/16, its release's published settings: Pascal VOC 2012 val, 21 classes (background included).
_base_ = ['../cfg_voc21.py', './release.py']

model = dict(_base_.release_settings, logit_scale=65, prob_thd=0.1, area_thd=0.1)
