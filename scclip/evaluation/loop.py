"""mmengine's TestLoop, resumable: each image's areas are stored as soon as it is evaluated.

The loop evaluates only the images of the split that have no stored result (each torchrun rank a
part of them, appending to its own shard), then the metrics are computed from the stored areas of
all images, in dataset order, whatever number of processes or sessions produced them.
"""
from __future__ import annotations

import copy
from pathlib import Path

from mmengine.dist import barrier, get_dist_info
from mmengine.model import is_model_wrapper
from mmengine.registry import LOOPS
from mmengine.runner import TestLoop

from ..errors import DatasetError
from .data import for_model, label_size_problem, list_split
from .interrupts import StopRequest
from .metrics import image_areas, metrics_from_store, stored_results
from .store import ImageAreas, ShardWriter


def model_patch_size(model) -> int | None:
    """The patch size of the segmentor's image encoder, or of an exported model's runtime (scclip.evaluation.exported);
    None for a model that is not scclip's."""
    model = model.module if is_model_wrapper(model) else model
    sizes = (getattr(getattr(model, part, None), "patch_size", None) for part in ("encoder", "runtime"))
    return next((size for size in sizes if size is not None), None)


@LOOPS.register_module()
class ResumableTestLoop(TestLoop):
    """Evaluates the images of the split without a stored result and stores each image's areas.

    Args:
        runner, dataloader, evaluator, fp16: as mmengine's TestLoop (the evaluator only provides
            the dataset's metainfo; the metrics come from the stored areas).
        results_dir: the run's `results/` folder.
        run_key: the run's identity key, written into the shard header.
        ignore_index: label value that is not scored.
    """

    def __init__(self, runner, dataloader, evaluator, results_dir: str, run_key: str, ignore_index: int = 255,
                 fp16: bool = False) -> None:
        split = list_split(dataloader["dataset"])
        self.image_paths = split.image_paths
        self.results_dir = Path(results_dir)
        self.run_key = run_key
        # Every rank must see the same store to split the same pending images: none starts storing
        # before all have read it.
        barrier()
        stored = stored_results(self.results_dir, run_key, self.image_paths)
        barrier()
        dataloader = copy.deepcopy(dataloader)
        dataloader["dataset"]["indices"] = [index for index in range(len(self.image_paths)) if index not in stored]
        if "pipeline" in dataloader["dataset"]:
            dataloader["dataset"]["pipeline"] = for_model(dataloader["dataset"]["pipeline"],
                                                          model_patch_size(runner.model), len(split.class_names),
                                                          ignore_index)
        super().__init__(runner, dataloader, evaluator, fp16)
        self.index_of = {path: index for index, path in enumerate(self.image_paths)}
        self.num_images = len(self.image_paths)
        self.num_classes = len(self.dataloader.dataset.metainfo["classes"])
        self.ignore_index = ignore_index
        self.writer: ShardWriter | None = None

    def run(self) -> dict:
        """Evaluate the pending images, then return the metrics of all images from the store.

        Returns:
            {'aAcc', 'mIoU', 'mAcc'} (%) and 'per_class' ({class: {'IoU', 'Acc'}}), on every rank.
        """
        rank, _ = get_dist_info()
        self.writer = ShardWriter(self.results_dir, self.run_key, self.num_images, self.num_classes, rank)
        try:
            StopRequest.check()  # a signal while the model was being built
            self.runner.call_hook("before_test")
            self.runner.call_hook("before_test_epoch")
            self.runner.model.eval()
            for idx, data_batch in enumerate(self.dataloader):
                self.run_iter(idx, data_batch)
                StopRequest.check()
        finally:
            self.writer.close()
        barrier()
        class_names = self.dataloader.dataset.metainfo["classes"]
        result = metrics_from_store(self.results_dir, self.run_key, self.image_paths, class_names)
        metrics = dict(result["summary"], per_class=result["per_class"])
        self.runner.call_hook("after_test_epoch", metrics=metrics)
        self.runner.call_hook("after_test")
        return metrics

    def run_iter(self, idx: int, data_batch: dict) -> None:
        self.runner.call_hook("before_test_iter", batch_idx=idx, data_batch=data_batch)
        outputs = self.runner.model.test_step(data_batch)
        for sample in outputs:
            self.writer.append(self.areas_of(sample))
        self.runner.call_hook("after_test_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs)

    def areas_of(self, sample) -> ImageAreas:
        prediction = sample.pred_sem_seg.data
        label = sample.gt_sem_seg.data
        problem = label_size_problem(sample.seg_map_path, label.shape[-2:], sample.img_path, prediction.shape[-2:])
        if problem is not None:  # the checked loaders stop such a label map first; a loader of one's own may not
            raise DatasetError(problem)
        areas = image_areas(prediction, label, self.num_classes, self.ignore_index)
        return ImageAreas(self.index_of[sample.img_path], sample.img_path, areas)
