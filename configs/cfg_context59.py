# SC-CLIP with ViT-B/16, published settings: Pascal Context val, 59 classes (background ignored).
_base_ = './base_config.py'

benchmark = 'context59'
model = dict(name_path=benchmark)

test_dataloader = dict(
    dataset=dict(
        type='PascalContext59Dataset',
        data_root='./datasets/VOCdevkit/VOC2010',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt',
    )
)
