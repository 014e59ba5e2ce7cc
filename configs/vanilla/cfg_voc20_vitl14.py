# Plain CLIP with ViT-L/14 and SC-CLIP's published ViT-L/14 settings: ../cfg_voc20_vitl14.py
# without its calibration indices and res_cls, which only SC-CLIP takes.
_base_ = '../cfg_voc20_vitl14.py'

model = dict(_delete_=True, method='vanilla',
             **{key: value for key, value in _base_.model.items() if not key.endswith('_idx') and key != 'res_cls'})
