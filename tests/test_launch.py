"""scclip/launch.py: the one place eval.py and predict.py choose a device and start a distributed job."""
import pytest

from scclip.errors import InputError
from scclip.launch import local_rank, process_device, start


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for variable in ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK", "RANK"):
        monkeypatch.delenv(variable, raising=False)


@pytest.mark.parametrize("variable", ["LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK"])
def test_each_launchers_local_rank_picks_the_processs_gpu(monkeypatch, variable):
    assert local_rank() == 0 and process_device("cuda", "pytorch") == "cuda:0"
    monkeypatch.setenv(variable, "3")
    assert local_rank() == 3
    assert process_device("cuda", "slurm") == "cuda:3"
    assert process_device("cuda", "none") == "cuda" and process_device("cpu", "mpi") == "cpu"


@pytest.mark.parametrize("launcher", ["slurm", "mpi"])
def test_slurm_and_mpi_need_cuda_in_one_line(launcher):
    with pytest.raises(InputError, match=f"^--launcher {launcher} needs CUDA; on the CPU use torchrun"):
        start(launcher, "cpu", "predict.py")


def test_pytorch_launcher_outside_torchrun_names_the_script():
    with pytest.raises(InputError, match=r"^--launcher pytorch needs torchrun: torchrun --nproc_per_node=N predict.py"):
        start("pytorch", "cpu", "predict.py")
    start("none", "cpu", "predict.py")  # one process: nothing to start
