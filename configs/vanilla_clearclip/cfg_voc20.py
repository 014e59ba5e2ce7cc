# Plain CLIP with ViT-B/16, as the ClearCLIP release runs it:
# clearclip/cfg_voc20.py with CLIP's own last block (attention, residual and MLP).
_base_ = '../clearclip/cfg_voc20.py'

model = dict(method='vanilla', residual=True)
