# Plain CLIP with ViT-L/14, as the ClearCLIP release runs it:
# clearclip/cfg_context59_vitl14.py with CLIP's own last block (attention, residual and MLP).
_base_ = '../clearclip/cfg_context59_vitl14.py'

published_as = 'vanilla_clearclip'  # plain CLIP under this release's protocol
model = dict(method='vanilla', residual=True)
