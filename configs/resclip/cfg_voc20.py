# ResCLIP with ViT-B/16, its release's published settings: Pascal VOC 2012 val, 20 classes (background ignored).
# ViT-L/14: this config with --backbone ViT-L/14, as the release runs it.
# Whole image (no sliding window).
_base_ = ['../cfg_voc20.py', './release.py']

model = dict(_base_.release_settings, slide_crop=0,
             temp_thd=0.1, rcs_weights=[2.0, 0.6], sfr_weights=[2.1, 0.6])
