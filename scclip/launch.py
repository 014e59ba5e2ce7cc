"""Where a job runs: the device, and the processes of a distributed job (torchrun, SLURM, MPI).

eval.py and predict.py both take `--device cpu|cuda` and `--launcher none|pytorch|slurm|mpi` and call
`choose_device`, then `start`; the process group is started before anything is written, so that
the processes agree on who holds the output folder's lock. A CPU job gets gloo and no CUDA call; a
GPU job gets NCCL and each process its local GPU. torch is imported where used: the commands parse
their arguments first.
"""
from __future__ import annotations

import atexit
import os
from collections.abc import Mapping
from typing import Any

from .errors import InputError

# Each launcher's variable for the process's index on its machine (torchrun, SLURM, Open MPI).
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")


def choose_device(requested: str | None, hide_gpus: bool = False) -> str:
    """'cuda' or 'cpu': `requested`, else CUDA when a GPU is visible.

    Args:
        requested: 'cpu', 'cuda' or None (the command line's `--device`).
        hide_gpus: a CPU job on a GPU machine hides the GPUs from this process (`CUDA_VISIBLE_DEVICES`),
            so that nothing else it runs (mmengine's Runner) places anything on them.
    """
    import torch

    if requested == "cpu":
        if hide_gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if requested == "cuda":
        raise InputError("--device cuda was given but no CUDA GPU is visible; use --device cpu")
    return "cpu"


def local_rank() -> int:
    """This process's index on its machine, from whichever launcher started it (0 alone)."""
    for variable in LOCAL_RANK_VARIABLES:
        if variable in os.environ:
            return int(os.environ[variable])
    return 0


def process_device(device: str, launcher: str) -> str:
    """This process's device: 'cpu', 'cuda', or under a launcher its own GPU ('cuda:<local rank>')."""
    return f"cuda:{local_rank()}" if device == "cuda" and launcher != "none" else device


def start(launcher: str, device: str, script: str, dist_cfg: Mapping[str, Any] | None = None) -> None:
    """Start the process group of a distributed job (nothing for 'none' or when it is started already).

    Args:
        launcher: one of scclip.options.LAUNCHERS (`--launcher`).
        device: 'cpu' or 'cuda' (`choose_device`).
        script: the command, for the advice on how to start it (`eval.py`, `predict.py`).
        dist_cfg: mmengine's `env_cfg.dist_cfg` (the backend; default NCCL on GPUs, gloo on the CPU).
    """
    import torch
    import torch.distributed as dist

    if launcher == "none" or dist.is_initialized():
        return
    atexit.register(_stop)
    options = {"backend": "nccl" if device == "cuda" else "gloo", **(dist_cfg or {})}
    if launcher != "pytorch":
        if device == "cpu":
            raise InputError(f"--launcher {launcher} needs CUDA; on the CPU use torchrun with --launcher pytorch")
        from mmengine.dist import init_dist

        init_dist(launcher, **options)  # reads SLURM's or Open MPI's variables, sets the local GPU
        return
    if "RANK" not in os.environ:
        raise InputError(f"--launcher pytorch needs torchrun: torchrun --nproc_per_node=N {script} ... "
                         "--launcher pytorch")
    if device == "cuda":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=options["backend"])


def _stop() -> None:
    """Close this process's group before the interpreter exits: a gloo group left to the C++ destructors at
    exit aborted a rank once in a while ('terminate called without an active exception', SIGABRT)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
