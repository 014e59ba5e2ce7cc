# SCLIP with ViT-B/16, its release's published settings: Pascal Context val, 60 classes (background included).
_base_ = ['../cfg_context60.py', './release.py']

model = dict(_base_.release_settings, logit_scale=50, prob_thd=0.1)
