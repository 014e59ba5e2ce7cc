# ClearCLIP with ViT-B/16, its release's published settings: ADE20K (SceneParsing) val, 150 classes.
_base_ = ['../cfg_ade20k.py', './release.py']

model = dict(_base_.release_settings)
test_pipeline = [_base_.release_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
