# ResCLIP with ViT-B/16, its release's published settings: Cityscapes val, 19 classes, resized to 560 px (short side).
# ViT-L/14: this config with --backbone ViT-L/14, as the release runs it.
_base_ = ['../cfg_city_scapes.py', './release.py']

model = dict(_base_.release_settings, temp_thd=0.1, rcs_weights=[2.0, 0.2], sfr_weights=[2.1, 0.6])
