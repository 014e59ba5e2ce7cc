# ResCLIP with ViT-B/16, its release's published settings: Pascal Context val, 60 classes (background included).
# ViT-L/14: this config with --backbone ViT-L/14, as the release runs it.
_base_ = ['../cfg_context60.py', './release.py']

model = dict(_base_.release_settings, prob_thd=0.1,
             temp_thd=0.3, rcs_weights=[2.0, 0.3], sfr_weights=[1.8, 0.7])
