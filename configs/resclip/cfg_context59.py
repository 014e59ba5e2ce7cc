# ResCLIP with ViT-B/16, its release's published settings: Pascal Context val, 59 classes (background ignored).
# ViT-L/14: this config with --backbone ViT-L/14, as the release runs it.
_base_ = ['../cfg_context59.py', './release.py']

model = dict(_base_.release_settings, temp_thd=0.25, rcs_weights=[2.0, 0.4], sfr_weights=[1.8, 0.7])
