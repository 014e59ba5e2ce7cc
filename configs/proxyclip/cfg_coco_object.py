# ProxyCLIP (CLIP ViT-B/16 + DINO ViT-B/8), its release's settings: COCO-Object val2017, background + 80 things
# The release's own vocabulary (configs/proxyclip/): one-name lines where SC-CLIP lists synonyms.
_base_ = ['../cfg_coco_object.py', './release.py']

model = dict(_base_.release_settings, prob_thd=0.25, name_path='./configs/proxyclip/cls_coco_object.txt')
test_pipeline = [_base_.release_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
