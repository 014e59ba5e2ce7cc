# ProxyCLIP (CLIP ViT-B/16 + DINO ViT-B/8), its release's settings: Pascal Context val, 60 classes (background included).
_base_ = ['../cfg_context60.py', './release.py']

model = dict(_base_.release_settings, prob_thd=0.15)
test_pipeline = [_base_.release_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
