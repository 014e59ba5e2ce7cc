# What the ResCLIP release's benchmark configs share (yvhangyang/ResCLIP@0e085f7f52f0, configs/ and
# `bash test_all.sh wo_resi resclip 5`): NACLIP's reduced last block with a Gaussian neighbourhood of σ 5,
# RCS and SFR both on, same-label pairs across another label decayed (delete_same_entity), 224-pixel
# windows with stride 112, logit scale 40, no final PAMR (SFR's first pass runs its own), no area
# threshold. Its test resize and vocabularies are SC-CLIP's. The release has no ViT-L/14 configs: it runs
# these with `--backbone ViT-L/14` (eval.py --backbone ViT-L/14), and so do we: no note about the settings.
settings_for_every_backbone = True
release_settings = dict(method='resclip', gaussian_std=5.0, delete_same_entity=True, rcs=True, sfr=True, slide_crop=224,
                        slide_stride=112, logit_scale=40, prob_thd=0.0, area_thd=None, pamr_steps=0)
