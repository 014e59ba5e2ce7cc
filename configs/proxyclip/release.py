# What the ProxyCLIP release's eight benchmark configs share (mc-lan/ProxyCLIP@e7b767fbc58e, configs/ and
# ProxyCLIPSegmentation's defaults; values: settings_proxyclip.json of the shared reference data): DINO ViT-B/8
# as the VFM, proxy attention with beta 1.2 and gamma 3.0, 336-pixel windows with stride 112 zero-padded to a
# multiple of 56, logit scale 40 everywhere, no area threshold and no PAMR, images resized to a short side
# of 336 (Cityscapes and ADE20K: 448). Its vocabularies are SC-CLIP's ('; ' between synonyms there, ', ' here).
release_settings = dict(method='proxyclip', vfm='dino_vitb8', proxy_beta=1.2, proxy_gamma=3.0, pad_multiple=56,
                        slide_crop=336, slide_stride=112, logit_scale=40, prob_thd=0.0, area_thd=None)
release_resize = dict(type='Resize', scale=(2048, 336), keep_ratio=True)
