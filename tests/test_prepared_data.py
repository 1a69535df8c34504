"""Prepared (memory-mapped) volumes against the NIfTI path: the same crops for the same seed, per-item randomness
(set_epoch, persistent workers, skipping at the sampler), the RAM check of the cache, and a 2-process gloo run in
which each rank caches and reads only its own partition (issue #15)."""
from __future__ import annotations

import json
import os
import socket

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.data.prepare import PrepareConfig, prepare
from swinunetr_lib.data.prepared_volumes import PreparedVolumes, read_prepared_manifest
from swinunetr_lib.data.pretrain_volumes import load_image_list
from swinunetr_lib.pretrain import dataloader as ssl_data
from swinunetr_lib.pretrain.dataloader import CacheTooLargeError, EpochDataLoader, ssl_dataloader, ssl_dataset

INT16_ROUNDING = 0.5 / 2000 + 1e-6  # half an HU on the [-1000, 1000] -> [0, 1] scale


def _noisy_ct(path, shape=(80, 64, 20), seed=0) -> None:
    """Fractional HU (float32): noisy air around an elliptic body, LPS affine, 2 x 2 x 3 mm."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x / 0.7) ** 2 + (y / 0.6) ** 2 <= 1
    hu = np.where(body[..., None], 40.0 + 300 * rng.random(shape), -1000.0) + rng.normal(0, 30, shape)
    nib.save(nib.Nifti1Image(hu.astype(np.float32), np.diag([-2.0, -2.0, 3.0, 1.0])), path)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two volumes (a noisy float CT with Z < ROI, and the real example CT cropped) and their prepared copies."""
    root = tmp_path_factory.mktemp("cohort")
    _noisy_ct(root / "noisy.nii.gz")
    img = nib.load(fetch_example("example_ct_sm.nii.gz"))
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[20:100, 10:90], img.affine), root / "real.nii.gz")
    (root / "m.json").write_text(json.dumps({"training": [{"image": "noisy.nii.gz"}, {"image": "real.nii.gz"}]}))
    prepare(root / "m.json", PrepareConfig(out=str(root / "prep"), num_workers=1, progress=False))
    return root


def _prepared(cohort, **kw) -> PreparedVolumes:
    entries, _ = read_prepared_manifest(cohort / "prep")
    return PreparedVolumes(entries, **kw)


def test_prepared_volumes_give_the_nifti_paths_crops(cohort):
    nifti = ssl_dataset(load_image_list(cohort / "m.json"), roi_size=32, num_samples=3, seed=7, rank=1)
    prepared = _prepared(cohort, roi_size=32, num_samples=3, seed=7, rank=1)
    seen = []
    for epoch in (0, 1):
        nifti.set_epoch(epoch)
        prepared.set_epoch(epoch)
        for i in range(2):
            a, b = nifti[i], prepared[i]
            assert len(a) == len(b) == 3
            for x, y in zip(a, b, strict=True):
                assert x["image"].shape == y["image"].shape == (1, 32, 32, 32)
                assert float((x["image"] - y["image"]).abs().max()) <= INT16_ROUNDING
            seen.append(torch.cat([c["image"] for c in b]))
    assert float((seen[0] - seen[0].round()).abs().max()) > 0  # fractional HU: the rounding is really exercised
    assert not torch.equal(seen[0], seen[2])  # another epoch, other crops
    # Z (20 voxels) padded symmetrically to 32 with 0 (= -1000 HU)
    assert float(seen[0][..., :6].max()) == float(seen[0][..., 26:].max()) == 0.0 < float(seen[0][..., 6].max())
    other_rank = _prepared(cohort, roi_size=32, num_samples=3, seed=7, rank=0)
    assert not torch.equal(torch.cat([c["image"] for c in other_rank[0]]), seen[0])


def test_crops_depend_only_on_seed_epoch_index_rank(cohort):
    ds = _prepared(cohort, roi_size=32, num_samples=2, seed=1)
    ds.set_epoch(3)
    first = [torch.cat([c["image"] for c in ds[i]]) for i in (0, 1)]
    again = [torch.cat([c["image"] for c in ds[i]]) for i in (1, 0, 1)]  # other order, repeats: same crops
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0]) and torch.equal(again[2], first[1])
    assert ds.reads == 5


def test_persistent_workers_follow_set_epoch_and_resume_skips_at_the_sampler(cohort):
    def batches(loader, epoch, skip=0):
        loader.set_epoch(epoch, skip_batches=skip)
        return [b["image"].clone() for b in loader]

    inproc = EpochDataLoader(_prepared(cohort, roi_size=32), batch_size=1, seed=5)
    workers = EpochDataLoader(_prepared(cohort, roi_size=32), batch_size=1, seed=5, num_workers=1,
                              persistent_workers=True)
    for epoch in (0, 1):
        expected = batches(inproc, epoch)
        assert len(expected) == 2 and expected[0].shape == (2, 1, 32, 32, 32)
        got = batches(workers, epoch)
        assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert not torch.equal(batches(inproc, 0)[0], batches(inproc, 1)[0])
    # a resume at batch 1 of epoch 1 reads one volume, not two, and gets the same batch
    before = inproc.dataset.reads
    resumed = batches(inproc, 1, skip=1)
    assert inproc.dataset.reads - before == 1 and len(resumed) == 1
    assert torch.equal(resumed[0], batches(inproc, 1)[1])


def test_nifti_cache_that_does_not_fit_is_refused(cohort, monkeypatch):
    monkeypatch.setattr(ssl_data, "available_ram_bytes", lambda: 100_000)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(CacheTooLargeError) as err:
        ssl_dataloader(cohort / "m.json", roi_size=32)
    need = ssl_data.estimate_cache_bytes(load_image_list(cohort / "m.json"))
    assert need == 4 * (80 * 64 * 20 + 80 * 80 * 30)
    msg = str(err.value)
    assert msg.startswith(f"caching 2 volumes needs ~{need / 1e9:.1f} GB of RAM per rank x 2 ranks on this node "
                          "but 0.0 GB are available") and "swinunetr_lib.data prepare" in msg and "\n" not in msg
    # memory-mapped volumes need no cache
    assert len(ssl_dataloader(cohort / "prep", roi_size=32, prepared=True).dataset) == 2


WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, port: int, root: str) -> None:
    from swinunetr_lib.utils import distributed as ddp

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    ddp.init_distributed("cpu")
    out: dict = {}
    for kind in ("cache", "prepared"):
        path = os.path.join(root, "prep") if kind == "prepared" else os.path.join(root, "m.json")
        loader = ssl_dataloader(path, roi_size=16, batch_size=1, num_samples=1, seed=3, distributed=True,
                                prepared=kind == "prepared")
        ds = loader.dataset
        seen = []
        for epoch in (0, 1):
            loader.set_epoch(epoch)
            seen += [round(float(b["image"].max()) * 2000 - 1000) for b in loader]  # the volume's HU = its id
        mine = ds.entries if kind == "prepared" else ds.data
        out[kind] = {"partition": [os.path.basename(e["image"]).split("-")[0].split(".")[0] for e in mine],
                     "seen": seen, "reads": getattr(ds, "reads", None),
                     "cached": None if kind == "prepared" else sum(c is not None for c in ds._cache)}
    with open(os.path.join(root, f"rank{rank}.json"), "w") as f:
        json.dump(out, f)
    ddp.shutdown_distributed()


def test_two_ranks_cache_and_read_only_their_own_partition(tmp_path):
    for i in range(5):  # a 16^3 body of HU 100 * (i + 1) in air: every crop tells which volume it came from
        hu = np.full((24, 24, 24), -1000.0, np.float32)
        hu[4:20, 4:20, 4:20] = 100.0 * (i + 1)
        nib.save(nib.Nifti1Image(hu, np.eye(4)), tmp_path / f"v{i + 1}.nii.gz")
    (tmp_path / "m.json").write_text(json.dumps({"training": [{"image": f"v{i + 1}.nii.gz"} for i in range(5)]}))
    prepare(tmp_path / "m.json", PrepareConfig(out=str(tmp_path / "prep"), num_workers=1, progress=False))
    mp.spawn(_rank_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    res = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD)]
    for kind in ("cache", "prepared"):
        parts = [set(r[kind]["partition"]) for r in res]
        assert all(len(r[kind]["partition"]) == 3 for r in res)  # 5 volumes -> 3 + 3 (one repeated: equal steps)
        assert parts[0] | parts[1] == {f"v{i}" for i in range(1, 6)} and len(parts[0] & parts[1]) <= 1
        for r, part in zip(res, parts, strict=True):
            assert {f"v{hu // 100}" for hu in r[kind]["seen"]} <= part  # read only its own volumes
            assert len(r[kind]["seen"]) == 6  # 2 epochs x 3 batches
        if kind == "cache":
            assert all(r[kind]["cached"] == 3 for r in res)  # each rank cached only its 3
        else:
            assert all(r[kind]["reads"] == 6 for r in res)
