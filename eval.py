"""`python eval.py ...` is `scclip eval ...`: evaluation lives in the package (scclip/evaluation/command.py).

    python eval.py --config voc21 --data-root DIR     # a benchmark by its key, or a config file
    torchrun --nproc_per_node=N eval.py --config configs/cfg_voc21.py --launcher pytorch
"""
import sys

from scclip.evaluation.command import command_main

if __name__ == "__main__":
    sys.exit(command_main())
