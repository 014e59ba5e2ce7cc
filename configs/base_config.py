# Shared settings of every SC-CLIP benchmark config: the model, the published test pipeline,
# batch size 1, mIoU. The dataset configs add their data and published hyper-parameters.
custom_imports = dict(imports=['scclip'], allow_failed_imports=False)
default_scope = 'mmseg'

# What a config is: its benchmark (a key of scclip/benchmarks.py; the dataset configs set it) and the
# backbone it is made for; the published numbers it is compared with follow from them and the method.
benchmark = None
backbone = 'ViT-B/16'
model = dict(type='SCCLIPForSegmentation', clip_path=backbone)

test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 336), keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
test_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,  # with the workers, keeps a GPU fed; harmless on the CPU
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(pipeline=test_pipeline),
)
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_cfg = dict(type='TestLoop')

# Nothing requires a gradient (training-free), which plain DistributedDataParallel refuses;
# this wrapper just places the model on each process's device.
model_wrapper_cfg = dict(type='MMSeparateDistributedDataParallel', broadcast_buffers=False)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),
)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
)
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, alpha=0.5)
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
