# SC-CLIP with ViT-B/16, published settings: ADE20K (SceneParsing) val, 150 classes.
_base_ = './base_config.py'

benchmark = 'ade20k'
model = dict(name_path=benchmark)

test_dataloader = dict(
    dataset=dict(
        type='ADE20KDataset',
        data_root='./datasets/ade/ADEChallengeData2016',
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
    )
)
