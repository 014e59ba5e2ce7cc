# What the SCLIP release's benchmark configs share (wangf3014/SCLIP@b56bd3014b9e, configs/): the
# segmentor's defaults, 224-pixel windows with stride 112, logit scale 40, no thresholds, no PAMR.
# Its datasets, vocabularies and test resize are SC-CLIP's except COCO-Stuff (short side 448).
release_settings = dict(method='sclip', slide_crop=224, slide_stride=112, logit_scale=40, prob_thd=0.0, area_thd=None,
                        pamr_steps=0, pad_to_patch=False)
