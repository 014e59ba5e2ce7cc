"""Label every image of a folder with SC-CLIP (pseudo-labels), resumably, on one process or many.

    python predict.py --image photos/ --vocab ade20k --backbone ViT-B/16 --out labels/
    python predict.py --image photos/ --classes "sky,tree,road" --out labels/ --recursive --scores
    torchrun --nproc_per_node=8 predict.py --image photos/ --vocab ade20k --out labels/ --launcher pytorch
    python predict.py --image photos/ --vocab ade20k --out labels/ --runtime onnx --model exported/

The work is done by scclip/predict.py (what OUT holds, how runs continue and share the work).
"""
import sys

from scclip.predict import main

if __name__ == "__main__":
    sys.exit(main())
