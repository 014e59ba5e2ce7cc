# MetaCLIP ViT-H/14 trained on the 2.5B-pair full CommonCrawl curation: open_clip's ViT-H-14-quickgelu with
# pretrained tag metaclip_fullcc, from https://huggingface.co/timm/vit_huge_patch14_clip_224.metaclip_2pt5b.
# Calibration indices None: chosen by depth (32 blocks) in the segmentor; ViT-L/14's thresholds.
backbone = dict(
    clip_arch='ViT-H-14-quickgelu',
    clip_path='metaclip_fullcc',
    pre_adjust_idx=None,
    post_adjust_idx=None,
    multi_start_idx=None,
    multi_end_idx=None,
)
