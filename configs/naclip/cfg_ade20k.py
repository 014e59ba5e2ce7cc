# NACLIP with ViT-B/16, its release's published settings: ADE20K (SceneParsing) val, 150 classes.
_base_ = ['../cfg_ade20k.py', './release.py']

model = dict(_base_.release_settings)
