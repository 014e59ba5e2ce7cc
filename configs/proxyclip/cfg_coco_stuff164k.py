# ProxyCLIP (CLIP ViT-B/16 + DINO ViT-B/8), its release's settings: COCO-Stuff 164k val2017, 171 classes.
_base_ = ['../cfg_coco_stuff164k.py', './release.py']

model = dict(_base_.release_settings)
test_pipeline = [_base_.release_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
