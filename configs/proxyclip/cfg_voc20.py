# ProxyCLIP (CLIP ViT-B/16 + DINO ViT-B/8), its release's settings: Pascal VOC 2012 val, 20 classes (background ignored).
# The release's own vocabulary (configs/proxyclip/): one-name lines where SC-CLIP lists synonyms.
_base_ = ['../cfg_voc20.py', './release.py']

model = dict(_base_.release_settings, name_path='./configs/proxyclip/cls_voc20.txt')
test_pipeline = [_base_.release_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
