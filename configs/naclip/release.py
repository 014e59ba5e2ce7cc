# What the NACLIP release's benchmark configs share (sinahmr/NACLIP@0cac3a651f75, configs/ and
# `bash test_all.sh reduced naclip 5 on`): the reduced last block, k·k attention with a Gaussian
# neighbourhood of σ 5, PAMR on (10 steps, dilations 8 and 16), 224-pixel windows with stride 112,
# logit scale 40, no area threshold. Its test resize and vocabularies are SC-CLIP's.
release_settings = dict(method='naclip', naclip_arch='reduced', attention='naclip', gaussian_std=5.0, slide_crop=224,
                        slide_stride=112, logit_scale=40, prob_thd=0.0, area_thd=None, pamr_steps=10, pamr_stride=(8, 16),
                        pad_to_patch=False)
