# ProxyCLIP (CLIP ViT-B/16 + DINO ViT-B/8), its release's settings: Cityscapes val, 19 classes.
# 224-pixel windows with stride 112, images resized to a short side of 448.
_base_ = ['../cfg_city_scapes.py', './release.py']

model = dict(_base_.release_settings, slide_crop=224)
test_pipeline = [dict(_base_.release_resize, scale=(2048, 448)) if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
