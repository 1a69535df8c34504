"""The training loop: learning on the real example CT, exact resume, non-finite loss, validation/best."""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from swinunetr_lib.data.example_data import fetch_example
from swinunetr_lib.pretrain.dataloader import EpochDataLoader, ssl_dataset
from swinunetr_lib.pretrain.model import SSLModel
from swinunetr_lib.pretrain.run import SSLStep
from swinunetr_lib.train.loop import NonFiniteLossError, TrainConfig, fit, warmup_cosine

ROI = 32  # the SSL model (unlike SwinUNETR's decoder) trains at 32^3; keeps these CPU tests short


@pytest.fixture(scope="module")
def ct_dataset():
    files = [{"image": str(fetch_example("example_ct.nii.gz"))}, {"image": str(fetch_example("example_ct_sm.nii.gz"))}]
    return ssl_dataset(files, roi_size=ROI, num_samples=2)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return SSLModel(feature_size=12, depths=(1, 1, 1, 1))


def cfg(**kw):
    base = dict(max_steps=6, warmup_steps=2, lr=1e-3, checkpoint_every=0, progress=False)
    return TrainConfig.from_dict({**base, **kw})


def test_warmup_cosine_schedule():
    f = warmup_cosine(4, 14)
    assert [round(f(s), 3) for s in range(4)] == [0.2, 0.4, 0.6, 0.8]
    assert f(4) == pytest.approx(1.0) and f(9) == pytest.approx(0.5) and f(14) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.slow
def test_total_loss_falls_on_real_ct(ct_dataset, tmp_path):
    loader = EpochDataLoader(ct_dataset, batch_size=1, seed=0)
    res = fit(tiny_model(), SSLStep(), loader, cfg(max_steps=30, warmup_steps=3), tmp_path, device="cpu")
    losses = [r["loss"] for r in res.history]
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert {"rotation", "contrastive", "reconstruction", "lr", "grad_norm"} <= set(res.metrics)
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 31 and (tmp_path / "tb").is_dir()


@pytest.mark.slow
def test_resume_is_bitwise_exact(ct_dataset, tmp_path):
    """6 steps in one go == 3 steps, stop, resume for 3 (2 volumes per epoch: crosses epoch boundaries).

    ``deterministic=True``: with 2+ threads, CPU index_put_ (the relative position bias backward) adds atomically."""
    def run(run_dir, stop_after=None):
        model = tiny_model()
        loader = EpochDataLoader(ct_dataset, batch_size=1, seed=0)
        res = fit(model, SSLStep(), loader, cfg(deterministic=True), run_dir, device="cpu", stop_after=stop_after)
        return model, res

    full, res_full = run(tmp_path / "a")
    _, res_half = run(tmp_path / "b", stop_after=3)
    assert res_half.step == 3
    resumed, res_resumed = run(tmp_path / "b")
    assert res_resumed.step == 6
    a, b = full.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in res_full.history] == [r["loss"] for r in res_resumed.history]
    opt_a = torch.load(res_full.last_checkpoint, weights_only=False)["optimizer"]["state"]
    opt_b = torch.load(res_resumed.last_checkpoint, weights_only=False)["optimizer"]["state"]
    assert all(torch.equal(opt_a[i]["exp_avg_sq"], opt_b[i]["exp_avg_sq"]) for i in opt_a)


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1)

    def forward(self, x):
        return self.lin(x)


def toy_step(model, batch, device):
    x = batch.to(device)
    return {"loss": ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    calls = []

    def exploding(model, batch, device):
        calls.append(1)
        out = toy_step(model, batch, device)
        if len(calls) == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    torch.manual_seed(0)
    data = [torch.randn(4, 3) for _ in range(3)]
    with pytest.raises(NonFiniteLossError, match=r"step 3 .*loss=nan.*last good checkpoint"):
        fit(Toy(), exploding, data, cfg(max_steps=10, checkpoint_every=2), tmp_path, device="cpu")
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())


def test_validation_best_checkpoint_and_bad_config(tmp_path):
    torch.manual_seed(0)
    data = [torch.randn(4, 3) for _ in range(3)]
    scores = iter([0.1, 0.5, 0.3])
    res = fit(Toy(), toy_step, data, cfg(max_steps=6, val_interval=2, best_metric="dice"), tmp_path,
              device="cpu", val_fn=lambda m, step: {"dice": next(scores)})
    assert res.best_value == 0.5 and res.best_checkpoint is not None
    assert torch.load(res.best_checkpoint, weights_only=False)["step"] == 4
    assert [r["val_dice"] for r in res.history if "val_dice" in r] == [0.1, 0.5, 0.3]
    with pytest.raises(ValueError, match="use_checkpoint"):
        fit(Toy(), toy_step, data, cfg(grad_checkpoint=True), tmp_path / "gc", device="cpu")
    with pytest.raises(ValueError, match="no batch"):
        fit(Toy(), toy_step, [], cfg(), tmp_path / "empty", device="cpu")


def test_grad_checkpointing_gives_the_same_step(ct_dataset, tmp_path):
    batch = {"image": torch.rand(2, 1, ROI, ROI, ROI)}
    res = [fit(tiny_model(), SSLStep(), [batch], cfg(max_steps=1, grad_checkpoint=gc), tmp_path / str(gc),
               device="cpu") for gc in (False, True)]
    assert res[0].metrics["loss"] == pytest.approx(res[1].metrics["loss"], rel=1e-6)
    assert res[0].metrics["grad_norm"] == pytest.approx(res[1].metrics["grad_norm"], rel=1e-4)


def test_pretrain_cli_names_an_unreadable_scan_and_leaves_no_run_files(tmp_path, capsys):
    import json

    from swinunetr_lib.pretrain.run import main

    src = fetch_example("example_ct_sm.nii.gz")
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(src.read_bytes()[: len(src.read_bytes()) // 2])  # a download cut short
    manifest = tmp_path / "pretrain.json"
    (tmp_path / "good.nii.gz").write_bytes(src.read_bytes())  # manifest paths are relative to its folder
    manifest.write_text(json.dumps({"training": [{"image": "good.nii.gz"}, {"image": "truncated.nii.gz"}]}))
    run_dir = tmp_path / "run"
    args = ["--data-manifest", str(manifest), "--run-dir", str(run_dir), "--roi-size", "64", "--feature-size", "12",
            "--max-steps", "1", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{truncated}: cannot read image" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not run_dir.exists() or not any(run_dir.rglob("*"))
    assert main(args[:-4] + ["--roi-size", "-64"]) == 2
    assert "roi_size=-64 must be a positive multiple of 32" in capsys.readouterr().err


def test_resume_from_a_corrupt_checkpoint_says_what_to_do(ct_dataset, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="last.pt: cannot resume from this checkpoint.*resume=false"):
        fit(tiny_model(), SSLStep(), ct_dataset, cfg(max_steps=1, resume=True), tmp_path)


def test_cudnn_autotuning_only_inside_fit_on_cuda(tmp_path, monkeypatch):
    seen = []

    def recording(model, batch, device):
        seen.append(torch.backends.cudnn.benchmark)
        return toy_step(model, batch, device)

    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    fit(Toy(), recording, [torch.randn(4, 3)], cfg(max_steps=1), tmp_path, device="cpu")
    assert seen == [False] and torch.backends.cudnn.benchmark is True  # off on CPU, the caller's value restored


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run by ci/gpu_bench.sh)")
def test_cuda_resume_matches_an_uninterrupted_run(tmp_path):
    """On a GPU: 4 steps == 2 steps, stop, resume for 2 (RNG states come back as CPU tensors)."""
    data = [torch.randn(8, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]

    def run(run_dir, stop_after=None):
        torch.manual_seed(0)
        model = Toy()
        res = fit(model, toy_step, data, cfg(max_steps=4, precision="fp32", deterministic=True), run_dir,
                  device="cuda", stop_after=stop_after)
        return model, res

    full, _ = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=2)
    resumed, res = run(tmp_path / "b")
    assert res.step == 4 and all(p.is_cuda for p in resumed.parameters())
    assert all(torch.allclose(a, b)
               for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True))


# --- untrusted checkpoints, shared run folders, changed settings, signals (issue #12) ---------------------------

def test_a_booby_trapped_last_pt_is_refused_without_running_it(tmp_path, booby_trap):
    marker = booby_trap(tmp_path / "checkpoints" / "last.pt", lambda trap: {"model": {}, "step": 1, "rng": trap})
    with pytest.raises(ValueError,
                       match=r"last.pt: cannot resume from this checkpoint \(refused to load: .*posix.system"):
        fit(Toy(), toy_step, [torch.randn(4, 3)], cfg(max_steps=1), tmp_path, device="cpu")
    assert not marker.exists()


def test_a_live_lock_refuses_a_second_run_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom swinunetr_lib.utils.run_lock import run_dir_lock\n"
         "with run_dir_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(120)\n", str(run_dir)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        data = [torch.randn(4, 3)]
        with pytest.raises(RuntimeError, match=rf"run: in use by another run \(pid {holder.pid} holds .*\.lock\)"):
            fit(Toy(), toy_step, data, cfg(max_steps=1), run_dir, device="cpu")
        assert not (run_dir / "checkpoints").exists()  # the refused run wrote nothing
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock: its lock file stays behind
        holder.wait()
    assert (run_dir / ".lock").read_text().strip() == str(holder.pid)
    res = fit(Toy(), toy_step, data, cfg(max_steps=1), run_dir, device="cpu")
    assert res.step == 1 and f"took over the stale lock of pid {holder.pid}" in capsys.readouterr().out
    assert not (run_dir / ".lock").exists()  # released at the end


def test_resume_with_a_changed_lr_uses_the_new_lr_and_refuses_a_changed_seed(tmp_path, capsys):
    torch.manual_seed(0)
    data = [torch.randn(4, 3) for _ in range(3)]
    fit(Toy(), toy_step, data, cfg(max_steps=6, warmup_steps=2, lr=1e-3), tmp_path, device="cpu", stop_after=3,
        run_settings={"roi_size": 32})
    with pytest.raises(ValueError,
                       match=r"cannot resume with other settings .*: seed was 0, now 1; roi_size was 32, now 64"):
        fit(Toy(), toy_step, data, cfg(max_steps=6, warmup_steps=2, lr=1e-3, seed=1), tmp_path, device="cpu",
            run_settings={"roi_size": 64})
    capsys.readouterr()
    res = fit(Toy(), toy_step, data, cfg(max_steps=8, warmup_steps=2, lr=5e-4), tmp_path, device="cpu",
              run_settings={"roi_size": 32})
    out = capsys.readouterr().out
    assert "resuming at step 3 with changed settings: max_steps 6 -> 8, lr 0.001 -> 0.0005" in out
    lrs = {int(r["step"]): r["lr"] for r in res.history if "lr" in r}
    factor = warmup_cosine(2, 8)
    assert lrs[1] == pytest.approx(1e-3 * warmup_cosine(2, 6)(0))  # before the resume: the old schedule
    assert [lrs[s] for s in range(4, 9)] == pytest.approx([5e-4 * factor(s - 1) for s in range(4, 9)])
    assert res.step == 8


def test_bad_settings_fail_before_anything_runs(tmp_path):
    with pytest.raises(ValueError, match="log_every=0 must be >= 1"):
        fit(Toy(), toy_step, [torch.randn(4, 3)], cfg(log_every=0), tmp_path, device="cpu")
    with pytest.raises(ValueError, match="lr=-1.0 must be a finite number > 0"):
        fit(Toy(), toy_step, [torch.randn(4, 3)], cfg(lr=-1.0), tmp_path, device="cpu")
    assert not any(tmp_path.iterdir())


def test_stale_temp_files_are_removed_and_checkpoints_get_the_umask(tmp_path):
    import os

    stale = tmp_path / "checkpoints" / ".last.pt.k2x_9abc.tmp.pt"  # what a kill during torch.save leaves
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    keep = tmp_path / "checkpoints" / "notes.tmp.txt"
    keep.write_text("not ours")
    old = os.umask(0o027)
    try:
        res = fit(Toy(), toy_step, [torch.randn(4, 3)], cfg(max_steps=1), tmp_path, device="cpu")
    finally:
        os.umask(old)
    assert not stale.exists() and keep.exists()
    assert (res.last_checkpoint.stat().st_mode & 0o777) == 0o640  # 0666 less the umask, not mkstemp's 0600
    assert (tmp_path / "metrics.csv").stat().st_mode & 0o777 == 0o640


SIGNAL_SCRIPT = """
import os, signal, sys
import torch
from torch import nn
from swinunetr_lib.train.loop import TrainConfig, fit
from swinunetr_lib.utils.cli import run_cli

run_dir, kill_at = sys.argv[1], int(sys.argv[2])
calls = []

def step(model, batch, device):
    calls.append(1)
    if len(calls) == kill_at:  # a SIGTERM arrives in the middle of this step
        os.kill(os.getpid(), signal.SIGTERM)
    x = batch.to(device)
    return {"loss": ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()}

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
data = [torch.randn(4, 3, generator=torch.Generator().manual_seed(i)) for i in range(3)]
cfg = TrainConfig(max_steps=8, warmup_steps=2, lr=1e-2, checkpoint_every=0, progress=False, deterministic=True)
sys.exit(run_cli("toy", lambda: fit(model, step, data, cfg, run_dir, device="cpu") and 0))
"""


def test_sigterm_mid_run_writes_a_checkpoint_and_the_resumed_run_matches(tmp_path):
    import os
    import subprocess
    import sys

    import swinunetr_lib

    script = tmp_path / "toy_fit.py"
    script.write_text(SIGNAL_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "SWINUNETR_TRACEBACK"}
    env["PYTHONPATH"] = str(Path(swinunetr_lib.__file__).parents[1])  # the library under test

    def run(run_dir, kill_at):
        return subprocess.run([sys.executable, str(script), str(run_dir), str(kill_at)], capture_output=True,
                              text=True, env=env, timeout=300)

    straight = run(tmp_path / "a", 0)
    assert straight.returncode == 0, straight.stderr
    stopped = run(tmp_path / "b", 3)
    assert stopped.returncode == 128 + 15, stopped.stderr
    assert stopped.stderr == (f"toy: stopped by SIGTERM after step 3 of 8; checkpoint {tmp_path / 'b'}/checkpoints/"
                              "last.pt; run the same command again to resume\n")
    assert torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)["step"] == 3
    resumed = run(tmp_path / "b", 0)
    assert resumed.returncode == 0, resumed.stderr
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_a_last_pt_of_the_earlier_format_still_resumes_exactly(tmp_path):
    """Earlier versions stored np.random.get_state()'s tuple (an ndarray): exactly those NumPy types are allowed."""
    import numpy as np

    torch.manual_seed(0)
    data = [torch.randn(4, 3) for _ in range(3)]

    def run(run_dir, stop_after=None):
        torch.manual_seed(0)
        model = Toy()
        fit(model, toy_step, data, cfg(max_steps=6, warmup_steps=2), run_dir, device="cpu", stop_after=stop_after)
        return model

    full = run(tmp_path / "a")
    run(tmp_path / "b", stop_after=3)
    last = tmp_path / "b" / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    n = state["rng"]["numpy"]
    state["rng"]["numpy"] = (n["bit_generator"], n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                             n["gauss"])
    torch.save(state, last)  # as the earlier versions wrote it
    resumed = run(tmp_path / "b")
    assert all(torch.equal(a, b)
               for a, b in zip(full.state_dict().values(), resumed.state_dict().values(), strict=True))
