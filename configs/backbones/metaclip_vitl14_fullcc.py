# MetaCLIP ViT-L/14 trained on the 2.5B-pair full CommonCrawl curation: open_clip's ViT-L-14-quickgelu with
# pretrained tag metaclip_fullcc (QuickGELU), downloaded on first use from
# https://huggingface.co/timm/vit_large_patch14_clip_224.metaclip_2pt5b. 24 blocks: the published ViT-L/14 calibration.
backbone = dict(clip_arch='ViT-L-14-quickgelu', clip_path='metaclip_fullcc')
