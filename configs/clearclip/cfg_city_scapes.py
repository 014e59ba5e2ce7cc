# ClearCLIP with ViT-B/16, its release's published settings: Cityscapes val, 19 classes.
# The release resizes Cityscapes like the others (short side 448) and slides 224-pixel windows with stride 224.
_base_ = ['../cfg_city_scapes.py', './release.py']

model = dict(_base_.release_settings, slide_crop=224)
test_pipeline = [_base_.release_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
