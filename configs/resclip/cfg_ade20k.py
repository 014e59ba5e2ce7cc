# ResCLIP with ViT-B/16, its release's published settings: ADE20K val, 150 classes.
# ViT-L/14: this config with --backbone ViT-L/14, as the release runs it.
_base_ = ['../cfg_ade20k.py', './release.py']

model = dict(_base_.release_settings, temp_thd=0.25, rcs_weights=[2.0, 0.3], sfr_weights=[2.1, 0.7])
