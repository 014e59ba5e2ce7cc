# SCLIP with ViT-B/16, its release's published settings: Cityscapes val, 19 classes, resized to 560 px (short side).
_base_ = ['../cfg_city_scapes.py', './release.py']

model = dict(_base_.release_settings)
