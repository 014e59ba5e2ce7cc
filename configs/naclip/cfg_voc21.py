# NACLIP with ViT-B/16, its release's published settings: Pascal VOC 2012 val, 21 classes (background included).
# Whole image (no sliding window), PAMR included.
_base_ = ['../cfg_voc21.py', './release.py']

model = dict(_base_.release_settings, slide_crop=0, prob_thd=0.1)
