# Plain CLIP with ViT-L/14, as the ClearCLIP release runs it:
# clearclip/cfg_voc21_vitl14.py with CLIP's own last block (attention, residual and MLP).
_base_ = '../clearclip/cfg_voc21_vitl14.py'

model = dict(method='vanilla', residual=True)
