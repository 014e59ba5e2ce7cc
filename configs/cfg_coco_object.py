# SC-CLIP with ViT-B/16, published settings: COCO-Object val2017, background + 80 things
# (label maps made by datasets/cvt_coco_object.py).
_base_ = './base_config.py'

benchmark = 'coco_object'
model = dict(name_path=benchmark, logit_scale=55, prob_thd=0.35)

test_dataloader = dict(
    dataset=dict(
        type='COCOObjectDataset',
        data_root='./datasets/coco_object',
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
    )
)
