# MaskCLIP with ViT-L/14, as the ClearCLIP release runs it: clearclip/cfg_context59_vitl14.py with the identity
# attention and the last block's residual and MLP kept (the published MaskCLIP row).
_base_ = '../clearclip/cfg_context59_vitl14.py'

model = dict(method='maskclip', residual=True)
