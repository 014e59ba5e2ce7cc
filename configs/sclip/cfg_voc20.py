# SCLIP with ViT-B/16, its release's published settings: Pascal VOC 2012 val, 20 classes (background ignored).
_base_ = ['../cfg_voc20.py', './release.py']

model = dict(_base_.release_settings)
