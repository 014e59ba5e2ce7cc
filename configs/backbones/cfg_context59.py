# SC-CLIP with another ViT-B backbone on context59: the ViT-B/16 settings of ../cfg_context59.py and the backbone named by
# $SCCLIP_BACKBONE (a file of this folder, default openclip_vitb16_laion2b), e.g.
#   SCCLIP_BACKBONE=metaclip_vitb16_fullcc python eval.py --config configs/backbones/cfg_context59.py
_base_ = ['../cfg_context59.py', './{{$SCCLIP_BACKBONE:openclip_vitb16_laion2b}}.py']

model = dict(_base_.backbone)
