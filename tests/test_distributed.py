"""One run on several processes (DDP, as torchrun starts it) trains like the run on one."""

import copy
import os
import socket
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
import yaml
from test_train import CONFIG, STN, data  # noqa: F401  (the fixture)
from torch.utils.data import WeightedRandomSampler

from cxrstn.distributed import ShardedSampler, World, local_batch_size
from cxrstn.images import ImageStore
from cxrstn.train import train_run

ROOT = Path(__file__).resolve().parents[1]


def test_sharded_batches_add_up_to_the_single_process_batches():
    def base():
        weights = torch.linspace(0.1, 1.0, 22)
        return WeightedRandomSampler(weights, 22, generator=torch.Generator().manual_seed(3))

    drawn = list(base())
    world_size, batch = 2, 4
    shards = [list(ShardedSampler(base(), World(world_size, rank))) for rank in range(2)]
    assert [len(s) for s in shards] == [11, 11]
    local = local_batch_size(batch, World(world_size))
    for k in range(len(drawn) // batch):
        together = shards[0][k * local : (k + 1) * local] + shards[1][k * local : (k + 1) * local]
        assert sorted(together) == sorted(drawn[k * batch : (k + 1) * batch])
    three = [list(ShardedSampler(base(), World(3, rank))) for rank in range(3)]
    assert [len(s) for s in three] == [7, 7, 7]  # 22 cut to 21: every process steps as often


def test_the_batch_must_split_evenly():
    assert local_batch_size(8, World(4)) == 2
    with pytest.raises(ValueError, match="batch_size 8 does not split evenly over 3 processes"):
        local_batch_size(8, World(3))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank, world_size, port, config, store_dir, frame, out):
    """One process of the world, as torchrun would start it (environment variables)."""
    os.environ |= {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": str(world_size),
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
    }
    world = World.from_env()
    result = train_run(
        config, ImageStore(store_dir), frame, out / "last.pt", out / f"live{rank}", world=world
    )
    torch.save(
        {"returned": result is not None, "state": copy.deepcopy(result.model.state_dict())}
        if result is not None
        else {"returned": False},
        out / f"rank{rank}.pt",
    )


@pytest.mark.slow
def test_two_processes_train_like_one(data, tmp_path):  # noqa: F811
    store, frame = data
    config = copy.deepcopy(CONFIG)
    # Without dropout or augmentation the only randomness is the sampler's draw, which the
    # processes share: the averaged gradient of two half batches is the whole batch's.
    config["classifier"] |= {"dropout": 0.0, "rotation": 0, "shear": 0, "epochs": 2}
    one = train_run(config, store, frame, tmp_path / "one" / "last.pt", tmp_path / "one" / "live")

    out = tmp_path / "two"
    out.mkdir()
    args = (2, _free_port(), config, store.directory, frame, out)
    mp.spawn(_rank, args=args, nprocs=2, join=True)
    main, other = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert main["returned"] and not other["returned"]  # only the main process gets the result
    assert (out / "live0").is_dir() and not (out / "live1").exists()  # and logs
    for name, value in one.model.state_dict().items():
        np.testing.assert_allclose(main["state"][name], value, atol=2e-5, err_msg=name)


@pytest.mark.slow
def test_torchrun_starts_the_train_stage_on_two_processes(data, tmp_path):  # noqa: F811
    store, frame = data
    params = {
        "data": {"lung_boxes": None},
        "crop": {"low_conf": "drop"},
        "resize": {"size": store.size},
        "split": {"folds": 5},
        "classifier": CONFIG["classifier"] | {"epochs": 1},
        "stn": STN,
        "train": CONFIG["train"],
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    command = ["torchrun", "--standalone", "--nproc_per_node=2"]
    command += [str(ROOT / "stages" / "train.py"), "--setting", "stn", "--fold", "1"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "reports" / "runs" / "stn" / "fold1"
    predictions = pd.read_csv(run_dir / "predictions.csv")
    assert len(predictions) == 16 and predictions["score"].between(0, 1).all()
    assert done.stdout.count("stn fold 1: best_epoch") == 1  # written by the main process only
    assert (tmp_path / "models" / "stn" / "fold1" / "model.pt").is_file()
    assert not (tmp_path / "checkpoints").exists()
