# SC-CLIP with ViT-B/16, published settings: Pascal VOC 2012 val, 20 classes (background ignored).
_base_ = './base_config.py'

benchmark = 'voc20'
model = dict(name_path=benchmark)

test_dataloader = dict(
    dataset=dict(
        type='PascalVOC20Dataset',
        data_root='./datasets/VOCdevkit/VOC2012',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
        ann_file='ImageSets/Segmentation/val.txt',
    )
)
