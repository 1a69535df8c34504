"""Two processes with the gloo backend on CPU: global-batch contrastive loss and a DDP run of fit (resume at
another world size, disagreeing ranks: test_resume_scale.py)."""
import json
import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from swinunetr_lib.pretrain.losses import ContrastiveLoss
from swinunetr_lib.pretrain.model import SSLModel
from swinunetr_lib.pretrain.run import SSLStep
from swinunetr_lib.train.loop import TrainConfig, fit
from swinunetr_lib.utils import distributed as ddp

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    device = ddp.init_distributed("cpu")
    result = {"world": ddp.world_size(), "device": str(device)}

    # contrastive loss on the global batch: each rank holds 3 of the 6 pairs
    g = torch.Generator().manual_seed(0)
    z1_all, z2_all = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    z1 = z1_all[3 * rank:3 * rank + 3].clone().requires_grad_()
    z2 = z2_all[3 * rank:3 * rank + 3].clone().requires_grad_()
    loss = ContrastiveLoss(0.5)(z1, z2)
    loss.backward()
    result["loss"] = loss.item()
    result["local_only"] = ContrastiveLoss(0.5, gather_distributed=False)(z1, z2).item()
    result["grad"] = z1.grad.tolist()

    # random crops under DDP: every rank draws its own crop positions (voxel values encode the position)
    from monai.data import Dataset
    from monai.transforms import RandSpatialCropd

    from swinunetr_lib.pretrain.dataloader import EpochDataLoader

    volumes = [{"image": torch.arange(16 ** 3, dtype=torch.float32).reshape(1, 16, 16, 16)} for _ in range(8)]
    loader = EpochDataLoader(Dataset(volumes, RandSpatialCropd(keys="image", roi_size=8, random_size=False)),
                             batch_size=2, distributed=True, seed=0)
    loader.set_epoch(0)
    result["crop_corners"] = [int(b["image"][i].min()) for b in loader for i in range(2)]

    # a DDP run of fit: rank-specific data, identical weights afterwards
    torch.manual_seed(0)
    model = SSLModel(feature_size=12, depths=(1, 1, 1, 1))
    data = [{"image": torch.rand(2, 1, 32, 32, 32, generator=torch.Generator().manual_seed(10 * rank + i))}
            for i in range(2)]
    cfg = TrainConfig(max_steps=2, warmup_steps=1, checkpoint_every=0, progress=False)
    res = fit(model, SSLStep(), data, cfg, os.path.join(out_dir, "run"), device="cpu")
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    all_sums = [torch.zeros_like(checksum) for _ in range(WORLD)]
    dist.all_gather(all_sums, checksum)
    result["checksums"] = [float(c) for c in all_sums]
    result["step"] = res.step
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    ddp.shutdown_distributed()
    assert not dist.is_initialized()


def test_two_process_gloo(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    assert all(r["world"] == WORLD and r["step"] == 2 for r in res)

    g = torch.Generator().manual_seed(0)
    z1_all, z2_all = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    z1_all.requires_grad_()
    global_loss = ContrastiveLoss(0.5)(z1_all, z2_all)  # single process: the whole batch
    global_loss.backward()
    for r in range(WORLD):
        assert abs(res[r]["loss"] - global_loss.item()) < 1e-5  # every rank sees all 12 embeddings
        assert abs(res[r]["local_only"] - global_loss.item()) > 1e-3
        # gradient reaching this rank's slice = world_size * dL/dz (DDP's averaging divides it back)
        expected = WORLD * z1_all.grad[3 * r:3 * r + 3]
        assert torch.allclose(torch.tensor(res[r]["grad"]), expected, atol=1e-5)
    assert res[0]["checksums"][0] == res[0]["checksums"][1]  # DDP kept the replicas identical
    assert len(res[0]["crop_corners"]) == 4 and res[0]["crop_corners"] != res[1]["crop_corners"]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == WORLD and state["step"] == 2 and "history" not in state  # metrics.csv is the record
    assert isinstance(state["rng"]["torch"], torch.Tensor) and "cuda" not in state["rng"]  # CPU run: no CUDA state
