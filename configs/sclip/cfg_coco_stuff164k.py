# SCLIP with ViT-B/16, its release's published settings: COCO-Stuff 164k val2017, 171 classes.
_base_ = ['../cfg_coco_stuff164k.py', './release.py']

model = dict(_base_.release_settings)
# The release resizes COCO-Stuff to a short side of 448 (SC-CLIP: 336).
test_pipeline = [dict(step, scale=(2048, 448)) if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
