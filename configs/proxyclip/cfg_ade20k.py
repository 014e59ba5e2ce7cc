# ProxyCLIP (CLIP ViT-B/16 + DINO ViT-B/8), its release's settings: ADE20K (SceneParsing) val, 150 classes.
# Images resized to a short side of 448, with 336-pixel windows.
_base_ = ['../cfg_ade20k.py', './release.py']

model = dict(_base_.release_settings)
test_pipeline = [dict(_base_.release_resize, scale=(2048, 448)) if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
