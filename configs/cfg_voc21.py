# SC-CLIP with ViT-B/16, published settings: Pascal VOC 2012 val, 21 classes (background included).
_base_ = './base_config.py'

benchmark = 'voc21'
model = dict(name_path=benchmark, area_thd=0.1, logit_scale=50, prob_thd=0.15)

test_dataloader = dict(
    dataset=dict(
        type='PascalVOCDataset',
        data_root='./datasets/VOCdevkit/VOC2012',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
    )
)
