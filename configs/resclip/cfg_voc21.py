# ResCLIP with ViT-B/16, its release's published settings: Pascal VOC 2012 val, 21 classes (background included).
# ViT-L/14: this config with --backbone ViT-L/14, as the release runs it.
# Whole image (no sliding window).
_base_ = ['../cfg_voc21.py', './release.py']

model = dict(_base_.release_settings, slide_crop=0, prob_thd=0.1,
             temp_thd=0.5, rcs_weights=[2.0, 0.3], sfr_weights=[2.2, 0.7])
