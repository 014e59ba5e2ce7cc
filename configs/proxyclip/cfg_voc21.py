# ProxyCLIP (CLIP ViT-B/16 + DINO ViT-B/8), its release's settings: Pascal VOC 2012 val, 21 classes (background included).
# The release's own vocabulary (configs/proxyclip/): one-name lines where SC-CLIP lists synonyms.
_base_ = ['../cfg_voc21.py', './release.py']

model = dict(_base_.release_settings, prob_thd=0.2, name_path='./configs/proxyclip/cls_voc21.txt')
test_pipeline = [_base_.release_resize if step.type == 'Resize' else step for step in _base_.test_pipeline]
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
