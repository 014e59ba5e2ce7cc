# MaskCLIP with ViT-B/16, as the ClearCLIP release runs it: clearclip/cfg_context60.py with the identity
# attention and the last block's residual and MLP kept (the published MaskCLIP row).
_base_ = '../clearclip/cfg_context60.py'

model = dict(method='maskclip', residual=True)
