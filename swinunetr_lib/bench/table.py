"""The printed table of a benchmark result (``ssl``, ``finetune``, ``infer``): setup, one row per variant (its time,
ratio, peak memory, loss or Dice, or why it has no time: an error or the time budget), the split of ``ours``, the
goal. The data benchmark has its own table (:func:`swinunetr_lib.bench.data.format_data_table`)."""
from __future__ import annotations

from typing import Any

from .common import OPTION_ORDER


def _variant_row(name: str, run: dict[str, Any], unit: str) -> tuple[str, str]:
    o = run["options"]
    opts = " ".join([str(o["precision"])] + [k for k in OPTION_ORDER[2:] if o.get(k)]
                    + (["monai_flash_attention"] if o.get("monai_flash_attention") else [])
                    + ([f"sw_batch {o['sw_batch_size']}"] if "sw_batch_size" in o else []))
    label = f"{name} [{opts}]"
    if "error" in run or "skipped" in run:
        return label, f"no time: {run.get('error') or run['skipped']}"
    t = run.get("seconds_per_volume", run.get("step_s", 0.0))
    shown = f"{t:.3f} s/volume" if unit == "s/volume" else f"{t * 1e3:.1f} ms/step"
    median = run.get("median_s")
    if median is not None:
        shown += f" (median {median:.3f} s)" if unit == "s/volume" else f" (median {median * 1e3:.1f} ms)"
    extra = (f"Dice vs fp32 {run['dice_vs_fp32']:.4f}" if "dice_vs_fp32" in run
             else f"loss {run.get('final_loss', float('nan')):.4f}")
    ratio = f" = {run['speedup_vs_monai_eager']:.2f}x" if "speedup_vs_monai_eager" in run else ""
    first = f", first step {run['first_step_s']:.1f} s" if "first_step_s" in run else ""
    return label, f"{shown}{ratio}, peak {run['peak_memory_gib']:.2f} GiB, {extra}{first}"


def format_table(r: dict[str, Any]) -> str:
    """The result of any benchmark as aligned text: setup, one row per variant, the split, the goal."""
    c = r["config"]
    size = {"ssl": f"{c['roi_size']}^3 / {c['feature_size']} / {c.get('batch_size')} sub-volumes (x 2 views)",
            "finetune": f"{c['roi_size']}^3 / {c['feature_size']} / {c.get('batch_size')} crops, "
                        f"{c.get('out_channels')} classes",
            "infer": f"volume {c.get('volume_size')} / ROI {c['roi_size']}^3 / {c['feature_size']} / "
                     f"overlap {c.get('overlap')}, {r.get('windows')} windows"}[r["benchmark"]]
    unit = "s/volume" if r["benchmark"] == "infer" else "ms/step"
    rows = [("benchmark", r["benchmark"]), ("device", r["device"]), ("torch / monai", f"{r['torch']} / {r['monai']}"),
            ("size (ROI / feature / batch)", size),
            ("TF32 (matmul / cuDNN), SDPA kernel", f"{r.get('tf32_matmul')} / {r.get('tf32_cudnn')}, "
                                                  f"{r.get('sdpa_kernel')}")]
    rows += [_variant_row(name, run, unit) for name, run in r["runs"].items()]
    if "ours_vs_monai_eager_loss" in r:
        rows.append(("ours' final loss vs monai_eager's", f"{r['ours_vs_monai_eager_loss']:+.2%}"))
    if r.get("headline"):
        key = r["goal"]["metric"]
        rows.append(("ours: split", ", ".join(f"{k} {v * 1e3:.1f} ms ({100 * r['split_share'][k]:.1f} %)"
                                              for k, v in r["split_s"].items())))
        for k, label in (("reference_over_ours", "augmentation: reference loop / batched"),
                         ("loader_augment_s", "loader augmentation (CPU, 1 process, per batch)"),
                         ("dice_vs_fp32", "ours: Dice vs fp32 (mean / min class / voxels)")):
            if k in r and k == "reference_over_ours":
                rows.append((label, f"{r['reference_augment_s'] * 1e3:.2f} / {r['augment_alone_s'] * 1e3:.2f} ms"
                                    f" = {r[k]:.2f}x"))
            elif k in r and k == "loader_augment_s":
                rows.append((label, f"{r[k] * 1e3:.1f} ms: {r['loader_workers_needed']} worker(s) keep up"))
            elif r.get(k) is not None:
                rows.append((label, f"{r[k]:.4f} / {r['dice_min_class']:.4f} / {r['voxel_agreement']:.4f}"))
        if "fit_s" in r:
            fit = (f"{c['fit_steps']} steps in {r['fit_s']:.1f} s, loss {r.get('fit_first_loss', float('nan')):.3f}"
                   f" -> {r['fit_loss']:.3f}" if r.get("fit_loss") is not None
                   else c.get("checkpoint") or "none (random weights)")
            rows.append(("weights fitted to the volume", f"{fit}; trained: {r.get('fit_trained')}; ours' Dice vs "
                                                         f"its bands {r.get('dice_vs_truth')}"))
        goal = r["goal"]
        dice = f", dice_vs_fp32 {goal['dice_target']}" if "dice_target" in goal else ""
        verdict = ({True: "met", False: "NOT met"}[goal["met"]] if goal["met"] is not None
                   else goal.get("why_not_counted", "not at the paper's size"))
        rows.append((f"goal: {key} {goal['target']}{dice}", f"{r[key]:.3f} -> {verdict}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
