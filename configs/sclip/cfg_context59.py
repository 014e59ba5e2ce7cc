# SCLIP with ViT-B/16, its release's published settings: Pascal Context val, 59 classes (background ignored).
_base_ = ['../cfg_context59.py', './release.py']

model = dict(_base_.release_settings)
