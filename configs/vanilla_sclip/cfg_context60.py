# Plain CLIP with ViT-B/16, as the SCLIP release runs it (its non-CSA path):
# sclip/cfg_context60.py with CLIP's own last block.
_base_ = '../sclip/cfg_context60.py'

published_as = 'vanilla_sclip'  # plain CLIP under this release's protocol
model = dict(method='vanilla')
