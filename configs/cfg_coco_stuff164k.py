# SC-CLIP with ViT-B/16, published settings: COCO-Stuff 164k val2017, 171 classes.
_base_ = './base_config.py'

benchmark = 'coco_stuff164k'
model = dict(name_path=benchmark)

test_dataloader = dict(
    dataset=dict(
        type='COCOStuffDataset',
        data_root='./datasets/coco_stuff164k',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
    )
)
