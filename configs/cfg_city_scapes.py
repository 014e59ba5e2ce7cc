# SC-CLIP with ViT-B/16, published settings: Cityscapes val, 19 classes, resized to 560 px (short side).
_base_ = './base_config.py'

benchmark = 'city_scapes'
model = dict(name_path=benchmark)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 560), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

test_dataloader = dict(
    dataset=dict(
        type='CityscapesDataset',
        data_root='./datasets/cityscapes',
        data_prefix=dict(img_path='leftImg8bit/val', seg_map_path='gtFine/val'),
        pipeline=test_pipeline,
    )
)
