# SC-CLIP with another ViT-L or ViT-H backbone on coco_object: the ViT-L/14 settings of ../cfg_coco_object_vitl14.py and the
# backbone named by $SCCLIP_BACKBONE (a file of this folder, default openclip_vitl14_laion2b), e.g.
#   SCCLIP_BACKBONE=metaclip_vitl14_fullcc python eval.py --config configs/backbones/cfg_coco_object_vitl14.py
_base_ = ['../cfg_coco_object_vitl14.py', './{{$SCCLIP_BACKBONE:openclip_vitl14_laion2b}}.py']

model = dict(_base_.backbone)
