# MetaCLIP ViT-B/16 trained on the 2.5B-pair full CommonCrawl curation: open_clip's ViT-B-16-quickgelu with
# pretrained tag metaclip_fullcc (QuickGELU, as MetaCLIP was trained), downloaded on first use from
# https://huggingface.co/timm/vit_base_patch16_clip_224.metaclip_2pt5b. 12 blocks: the published ViT-B/16 calibration.
backbone = dict(clip_arch='ViT-B-16-quickgelu', clip_path='metaclip_fullcc')
