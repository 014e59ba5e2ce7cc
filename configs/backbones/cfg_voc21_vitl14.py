# SC-CLIP with another ViT-L or ViT-H backbone on voc21: the ViT-L/14 settings of ../cfg_voc21_vitl14.py and the
# backbone named by $SCCLIP_BACKBONE (a file of this folder, default openclip_vitl14_laion2b), e.g.
#   SCCLIP_BACKBONE=metaclip_vitl14_fullcc python eval.py --config configs/backbones/cfg_voc21_vitl14.py
_base_ = ['../cfg_voc21_vitl14.py', './{{$SCCLIP_BACKBONE:openclip_vitl14_laion2b}}.py']

model = dict(_base_.backbone)
