# Plain CLIP with ViT-B/16, as the ClearCLIP release runs it:
# clearclip/cfg_voc21.py with CLIP's own last block (attention, residual and MLP).
# Its author reports (ClearCLIP issue #2) that the paper's plain-CLIP VOC21 number used
# --cfg-options model.prob_thd=0.2 instead of the release's 0.5.
_base_ = '../clearclip/cfg_voc21.py'

published_as = 'vanilla_clearclip'  # plain CLIP under this release's protocol
model = dict(method='vanilla', residual=True)
