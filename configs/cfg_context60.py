# SC-CLIP with ViT-B/16, published settings: Pascal Context val, 60 classes (background included).
_base_ = './base_config.py'

benchmark = 'context60'
model = dict(name_path=benchmark, prob_thd=0.15)

test_dataloader = dict(
    dataset=dict(
        type='PascalContext60Dataset',
        data_root='./datasets/VOCdevkit/VOC2010',
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClassContext'),
        ann_file='ImageSets/SegmentationContext/val.txt',
    )
)
