# SC-CLIP with ViT-B/16 on a labelled folder of your own (docs/your-data.md):
#   python eval.py --config configs/cfg_custom.py --data-root DIR
# DIR/images/ (sub-folders allowed), DIR/labels/ (a PNG per image: class index per pixel, 255 = not scored;
# 16-bit for more than 255 classes), DIR/classes.txt (one class per line, synonyms after ', '),
# optionally DIR/splits/NAME.txt (test_dataloader.dataset.split=NAME).
_base_ = './base_config.py'

benchmark = None  # not a published benchmark: the summary shows no published number beside it
# None: the folder's classes.txt (scclip.datasets.complete_folder_config); a file or a benchmark's name overrides it.
model = dict(name_path=None)

# The benchmarks' pipeline, reading labels with LoadWideAnnotations: it keeps 16-bit label values
# (mmseg's LoadAnnotations cuts them to 8 bits).
test_pipeline = [dict(type='LoadWideAnnotations') if step['type'] == 'LoadAnnotations' else step
                 for step in _base_.test_pipeline]

test_dataloader = dict(
    dataset=dict(
        type='FolderDataset',
        data_root=None,  # --data-root DIR
        split=None,  # NAME: only the images listed in DIR/splits/NAME.txt
        ignore_index=255,  # the label value that is not scored; 65535 (say) with more than 255 classes
        pipeline=test_pipeline,
    )
)
