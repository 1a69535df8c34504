"""Resume at scale (issue #15): skipping used batches at the sampler, another world size, CUDA RNG states of
more GPUs than are visible, ranks that disagree on the resume step, the process-group timeout, and no history
in checkpoints. Toy model and data: the behaviour of the loop, not of the network."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_train import Toy, toy_step  # the toy model and step of the training-loop tests
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from swinunetr_lib.train import checkpointing
from swinunetr_lib.train.loop import TrainConfig, fit


def cfg(**kw):
    base = dict(max_steps=8, warmup_steps=2, lr=1e-2, checkpoint_every=0, progress=False, deterministic=True)
    return TrainConfig.from_dict({**base, **kw})


class Noisy(Dataset):
    """Item i: a fixed (2, 3) tensor plus noise from the global torch RNG (as fine-tuning's augmentation draws
    from the global NumPy RNG); records the indices it loads."""

    def __init__(self, n=6):
        self.base = [torch.randn(2, 3, generator=torch.Generator().manual_seed(i)) for i in range(n)]
        self.loaded = []

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.loaded.append(i)
        return self.base[i] + 0.1 * torch.randn(2, 3)


class PerIndex(Noisy):
    """Randomness from (epoch, index) only, declared by ``set_epoch`` (as prepared volumes do)."""
    epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        self.loaded.append(i)
        g = torch.Generator().manual_seed(1000 * self.epoch + i)
        return self.base[i] + 0.1 * torch.randn(2, 3, generator=g)


def flat(batch):
    return batch.reshape(-1, 3)


def step(model, batch, device):
    return toy_step(model, flat(batch), device)


def run(data_fn, run_dir, stop_after=None, **kw):
    torch.manual_seed(0)
    model, data = Toy(), data_fn()
    res = fit(model, step, data, cfg(**kw), run_dir, device="cpu", stop_after=stop_after)
    return model, res, data


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.mark.parametrize("kind", ["in_process", "per_index_worker"])
def test_resume_skips_used_batches_at_the_sampler_without_loading_them(tmp_path, kind):
    """6 items, 3 batches of 2 per epoch; stopped after 4 steps (epoch 1, one batch used): the resumed run loads
    only the 4 batches it trains on and ends bitwise where the uninterrupted run ends."""
    def loader():
        if kind == "in_process":
            return DataLoader(Noisy(), batch_size=2, shuffle=True)  # order drawn from the global torch RNG
        return DataLoader(PerIndex(), batch_size=2, shuffle=True, num_workers=1)  # order drawn in iter()

    full, res_full, _ = run(loader, tmp_path / "a")
    _, half, _ = run(loader, tmp_path / "b", stop_after=4)
    resumed, res, data = run(loader, tmp_path / "b")
    assert half.step == 4 and res.step == 8
    if kind == "in_process":  # workers load in their own process: count there only for the in-process loader
        assert len(data.dataset.loaded) == 4 * 2  # steps 5..8; the used batch of epoch 1 was not loaded
    assert same_weights(full, resumed)
    assert [r["loss"] for r in res_full.history] == [r["loss"] for r in res.history]


def test_monai_random_transforms_are_replayed_and_stay_exact(tmp_path):
    """MONAI random transforms carry their RNG from item to item: skipping would change later crops, so the used
    batches are loaded and dropped (counted), and the resume is exact."""
    from monai.data import Dataset as MonaiDataset
    from monai.data.utils import set_rnd
    from monai.transforms import Lambdad, RandSpatialCropd

    from swinunetr_lib.train.batch_stream import skips_at_sampler

    class Counting(MonaiDataset):
        loaded = []

        def __getitem__(self, i):
            Counting.loaded.append(i)
            return super().__getitem__(i)

    vols = [{"x": torch.arange(64.0).reshape(1, 4, 4, 4) + i} for i in range(4)]
    crop = [RandSpatialCropd("x", roi_size=(1, 1, 3), random_size=False), Lambdad("x", lambda v: v.reshape(-1)[:3])]

    class Reseeded(DataLoader):  # as ssl_data.EpochDataLoader: the transforms' RNG re-seeded per epoch
        def set_epoch(self, epoch):
            set_rnd(self.dataset, 7 + epoch)

    def loader():
        return Reseeded(Counting(vols, crop), batch_size=2, shuffle=True,
                        collate_fn=lambda items: torch.stack([torch.as_tensor(it["x"]) for it in items]) / 64)

    assert not skips_at_sampler(loader()) and skips_at_sampler(DataLoader(Noisy(), batch_size=2))
    full, _, _ = run(loader, tmp_path / "a", max_steps=5)
    run(loader, tmp_path / "b", max_steps=5, stop_after=3)  # epoch 1, one batch used
    Counting.loaded.clear()
    resumed, _, _ = run(loader, tmp_path / "b", max_steps=5)
    assert len(Counting.loaded) == (1 + 2) * 2  # the used batch replayed, then steps 4 and 5
    assert same_weights(full, resumed)


def test_history_is_not_in_checkpoints_and_comes_back_from_metrics_csv(tmp_path):
    """A run that dies after step 3 with its last checkpoint at step 2: metrics.csv has rows 1-3, last.pt no
    history; the resumed run's history is rows 1-2 from the CSV plus its own, as an uninterrupted run's."""
    def data():
        return [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    calls = []

    def dies_at_4(model, batch, device):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("node lost")
        return toy_step(model, batch, device)

    torch.manual_seed(0)
    full = fit(Toy(), toy_step, data(), cfg(max_steps=6, checkpoint_every=2), tmp_path / "a", device="cpu")
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="node lost"):
        fit(Toy(), dies_at_4, data(), cfg(max_steps=6, checkpoint_every=2), tmp_path / "b", device="cpu")
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert state["step"] == 2 and "history" not in state and state["world_size"] == 1
    assert (tmp_path / "b" / "metrics.csv").read_text().count("\n") == 1 + 3
    torch.manual_seed(0)
    res = fit(Toy(), toy_step, data(), cfg(max_steps=6, checkpoint_every=2), tmp_path / "b", device="cpu")
    assert [r["step"] for r in res.history] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in res.history] == [r["loss"] for r in full.history]
    assert (tmp_path / "b" / "metrics.csv").read_text().count("\n") == 1 + 6


def test_cuda_rng_states_of_more_gpus_than_visible_load(tmp_path, monkeypatch):
    """An 8-GPU checkpoint of the earlier format (rank 0 saved the CUDA RNG state of all 8 visible GPUs) resumes
    where fewer are visible; new checkpoints hold the state of the saving rank's device only. CUDA simulated:
    the fake refuses device indices that are not visible, as set_rng_state_all of 8 states on 1 GPU would."""
    states = [torch.full((16,), i, dtype=torch.uint8) for i in range(8)]
    set_calls = []

    def set_state(state, device):
        index = torch.device(device).index
        if index >= 1:
            raise RuntimeError(f"CUDA error: invalid device ordinal {index}")
        set_calls.append((int(state[0]), index))

    monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: states[torch.device(device).index])
    base = checkpointing.rng_state(torch.device("cpu"))
    assert "cuda" not in base
    checkpointing.set_rng_state({**base, "cuda": states}, torch.device("cuda", 0))
    assert set_calls == [(0, 0)]
    saved = checkpointing.rng_state(torch.device("cuda", 0))
    assert torch.equal(saved["cuda"], states[0])  # one tensor, not a list
    checkpointing.set_rng_state(saved, torch.device("cuda", 0))
    assert set_calls[-1] == (0, 0)

    # the whole resume path on this CPU with such a checkpoint on disk
    data = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    torch.manual_seed(0)
    full = Toy()
    fit(full, toy_step, data, cfg(max_steps=4), tmp_path / "a", device="cpu")
    torch.manual_seed(0)
    fit(Toy(), toy_step, data, cfg(max_steps=4), tmp_path / "b", device="cpu", stop_after=2)
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["rng"]["cuda"] = states
    state["history"] = [{"step": 1, "loss": 0.0}]  # the earlier format also held the history
    torch.save(state, last)
    torch.manual_seed(0)
    resumed = Toy()
    res = fit(resumed, toy_step, data, cfg(max_steps=4), tmp_path / "b", device="cpu")
    assert res.step == 4 and same_weights(full, resumed)


def test_dist_timeout_reaches_the_process_group(tmp_path, monkeypatch):
    import datetime

    from swinunetr_lib.utils import distributed as ddp

    seen = {}

    def init(backend, timeout):
        seen.update(backend=backend, timeout=timeout)
        raise RuntimeError("stop here")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setattr(ddp.dist, "init_process_group", init)
    with pytest.raises(RuntimeError, match="stop here"):
        fit(Toy(), toy_step, [torch.randn(4, 3)], cfg(dist_timeout_min=90), tmp_path, device="cpu")
    assert seen == {"backend": "gloo", "timeout": datetime.timedelta(minutes=90)}
    with pytest.raises(ValueError, match="dist_timeout_min=0.0 must be a finite number > 0"):
        cfg(dist_timeout_min=0).check()


def test_the_data_position_at_another_world_size_is_the_same_fraction_of_the_epoch():
    from swinunetr_lib.train.batch_stream import consumed_at_world_size

    assert consumed_at_world_size(3, 2, 1, 4, 8) == 6        # 2 ranks x 3 of 4 batches -> 6 of 8 on one
    assert consumed_at_world_size(7, 1, 2, 8, 4) == 3        # floored: one batch of the epoch is seen twice
    assert consumed_at_world_size(3, 2, 1, 5, 5) == 3        # every rank reads the whole data: unchanged
    assert consumed_at_world_size(3, 8, 4, None, None) == 6  # no length: by the world sizes
    assert consumed_at_world_size(3, 2, 2, 4, 9) == 3        # same world size: as saved


# --- two processes (gloo) ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sampled_loader(world, rank):
    """8 items, batch 1, a DistributedSampler: one global order per epoch, dealt to the ranks in turn."""
    ds = PerIndex(8)
    return DataLoader(ds, batch_size=1, sampler=DistributedSampler(ds, num_replicas=world, rank=rank, seed=3))


def _two_rank_worker(rank, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    from swinunetr_lib.utils import distributed as ddp

    torch.set_num_threads(1)
    torch.manual_seed(0)
    loader = _sampled_loader(2, rank)
    fit(Toy(), step, loader, cfg(max_steps=6, dist_timeout_min=2), os.path.join(out_dir, "run"), device="cpu",
        stop_after=3)
    Path(out_dir, f"loaded{rank}.json").write_text(json.dumps(loader.dataset.loaded))
    ddp.shutdown_distributed()


def test_two_process_run_resumes_in_one_process(tmp_path, capsys):
    """2 ranks x 3 steps use positions 0-5 of epoch 0's global order (8 items); one process resumes at position 6:
    it loads the 2 unseen items, none of the 6 used ones, then epoch 1."""
    mp.spawn(_two_rank_worker, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    used = [i for r in range(2) for i in json.loads((tmp_path / f"loaded{r}.json").read_text())]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert state["world_size"] == 2 and state["epoch_batches"] == 4  # 8 items over 2 ranks, batch 1
    assert (state["step"], state["epoch"], state["consumed"]) == (3, 0, 3)
    assert len(used) == 6 == len(set(used))

    torch.manual_seed(0)
    model, loader = Toy(), _sampled_loader(1, 0)
    res = fit(model, step, loader, cfg(max_steps=6, dist_timeout_min=2), tmp_path / "run", device="cpu")
    assert "written by 2 rank(s), resumed by 1: model, optimizer, schedule and step 3 are exact; epoch 0 goes on " \
           "after 6 batch(es) per rank (was 3 of 4)" in capsys.readouterr().out
    loaded = loader.dataset.loaded
    assert sorted(used + loaded[:2]) == list(range(8))  # the rest of epoch 0, nothing loaded twice
    sampler = DistributedSampler(range(8), num_replicas=1, rank=0, seed=3)
    sampler.set_epoch(1)
    assert loaded[2] == next(iter(sampler))  # epoch 1 from its start
    assert res.step == 6 and [r["step"] for r in res.history] == [1, 2, 3, 4, 5, 6]
    assert all(torch.isfinite(p).all() for p in model.parameters())


DISAGREE_SCRIPT = """
import sys
import torch
from swinunetr_lib.train.loop import TrainConfig, fit
from swinunetr_lib.utils.cli import run_cli
from test_train import Toy, toy_step

torch.manual_seed(0)
data = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
cfg = TrainConfig(max_steps=4, warmup_steps=1, checkpoint_every=0, progress=False, dist_timeout_min=1.0)
sys.exit(run_cli("toy", lambda: fit(Toy(), toy_step, data, cfg, sys.argv[1], device="cpu") and 0))
"""


def test_ranks_that_disagree_on_the_resume_step_stop_with_a_message(tmp_path):
    """Rank 0 sees a last.pt at step 2, rank 1 (another run folder: no shared file system) sees none: both stop
    with one line naming the file, well within the timeout, instead of training from different steps."""
    data = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    torch.manual_seed(0)
    fit(Toy(), toy_step, data, cfg(max_steps=4, warmup_steps=1, deterministic=False), tmp_path / "r0",
        device="cpu", stop_after=2)
    script = tmp_path / "disagree.py"
    script.write_text(DISAGREE_SCRIPT)
    port = _free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "WORLD_SIZE": "2", "LOCAL_RANK": str(rank), "OMP_NUM_THREADS": "1",
               "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
        env.pop("SWINUNETR_TRACEBACK", None)
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / f"r{rank}")], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for rank, (p, (_, err)) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 2, err
        last = tmp_path / f"r{rank}" / "checkpoints" / "last.pt"
        assert err == (f"toy: error: {last}: the ranks disagree on where to resume (step 2 on rank 0; no file on "
                       "rank 1); every rank must see the same run folder (a shared file system, the same path) -- "
                       "or start over with resume=false\n")
    assert not (tmp_path / "r1" / "checkpoints").exists()
