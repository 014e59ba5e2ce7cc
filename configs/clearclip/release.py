# What the ClearCLIP release's eight benchmark configs share (mc-lan/ClearCLIP@ad68a404d55d, configs/):
# 448-pixel windows with stride 224, each zero-padded to a patch multiple, logit scale 50, no area
# threshold and no PAMR, images resized to a short side of 448 (values: settings_clearclip.json of the
# shared reference data). The configs of clearclip/, maskclip/ and vanilla_clearclip/ start from these;
# the latter two change the method and keep the last block's residual.
release_settings = dict(method='clearclip', residual=False, slide_crop=448, slide_stride=224, logit_scale=50,
                        prob_thd=0.0, area_thd=None, pamr_steps=0, pad_to_patch=True)
release_resize = dict(type='Resize', scale=(2048, 448), keep_ratio=True)
