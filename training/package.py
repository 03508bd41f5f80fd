"""Package a training run (supernet + preferred set + test and validation accuracy) into a zoo directory.

Weights are stored as fp16 when that moves no preferred arch's test top-1 by more than
`max_fp16_drift` points, else as fp32. That is why packaging evaluates every entry a second time: `evaluate` measured
the fp32 weights, this measures the fp16-rounded ones on the same test set, as users get them. A family whose paths
need BatchNorm statistics of their own (`Family.calibrate_bn`: HyTra) gets each entry's recalibrated on the run's
calibration images (`training.evaluate.calibration_batches`) with the weights as stored, rounded as stored, and kept
in the zoo's weight file (`zoo.store`); its fp16 check measures those statistics too.

Each entry's validation accuracy is measured too, with the weights and statistics as stored, on the images the run's
training held out (`training.evaluate.validation_split`): the zoo chooses on it and reports test. A run that held
none out (val_size 0; synthetic data without --val-size) gives a zoo that chooses on test and says so.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from training.data import load_data
from training.evaluate import (
    calibration_batches,
    evaluate_archs,
    load_supernet,
    path_stats,
    tensor_batches,
    validation_split,
)
from training.preferred import load_preferred
from training.train import TrainConfig
from zoo.family import get_family
from zoo.io import read_versioned_json
from zoo.store import ZooEntry, write_zoo


def _test_results(run: Path) -> tuple[dict, dict[str, dict]]:
    """eval_test.json (what `python -m training evaluate` writes) and its results by arch id."""
    path = run / "eval_test.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; run `python -m training evaluate --run {run}` first")
    evaluation = read_versioned_json(path, "prezoo.eval", 1)
    try:
        return evaluation, {r["id"]: r for r in evaluation["results"]}
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path} has no valid results: {type(e).__name__} {e}") from None


def _selector(evaluation: dict, results: dict[str, dict], cfg: TrainConfig) -> dict:
    """How the evaluated archs were chosen: the selector block of the preferred set `evaluate` measured (older
    evaluations name none: the run's own set), checked to hold exactly those archs."""
    preferred = evaluation.get("preferred") or cfg.preferred
    if not preferred:
        return {"sampler": cfg.sampler}
    _, entries = load_preferred(preferred)  # validates it
    if {e["id"] for e in entries} != set(results):
        raise ValueError(f"eval_test.json measured other archs than {preferred} holds: rerun `python -m training "
                         f"evaluate --preferred {preferred}`")
    return json.loads(Path(preferred).read_text())["selector"]


def package_run(run: str | Path, out: str | Path, name: str, max_fp16_drift: float = 0.1,
                progress: bool = True) -> dict:
    """Write the zoo; returns a summary (dtype chosen, fp16 drift per entry, and the validation images, or why the
    run has none)."""
    run = Path(run)
    cfg = TrainConfig.load(run / "config.json")
    evaluation, results = _test_results(run)
    supernet = load_supernet(run / "supernet.safetensors")
    space = supernet.space
    family = get_family(space.family)
    selector = _selector(evaluation, results, cfg)
    archs = [family.arch_from_dict(r["arch"]) for r in evaluation["results"]]

    test, info = load_data(cfg.data, "test", img_size=space.img_size, in_chans=space.in_chans)
    training = {k: v for k, v in asdict(cfg).items() if k not in ("out", "preferred", "progress", "workers")}
    try:
        val, validation = validation_split(training, space)
    except ValueError as e:  # no held-out images: the zoo chooses on test, and says so
        val, validation, no_validation = None, None, str(e)
    if progress:
        print(f"evaluating the {len(archs)} entries again, with the weights rounded to fp16: {run / 'eval_test.json'} "
              f"holds their fp32 top-1, and the zoo stores fp16 only if no entry's moves more than {max_fp16_drift} "
              f"points", flush=True)
    calibration = calibration_batches(cfg, space)
    fp32_state = {k: v.clone() for k, v in supernet.state_dict().items()}
    supernet.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in fp32_state.items()})
    fp16_stats = path_stats(supernet, archs, calibration, torch.float16)
    fp16_acc = evaluate_archs(supernet, archs, tensor_batches(test), progress=progress, stats=fp16_stats)
    drift = {a.id: abs(acc.top1 - results[a.id]["top1"]) for a, acc in zip(archs, fp16_acc, strict=True)}
    use_fp16 = max(drift.values()) <= max_fp16_drift
    if not use_fp16:  # the statistics of the fp32 weights, as `evaluate` measured them
        supernet.load_state_dict(fp32_state)
    stats = fp16_stats if use_fp16 else path_stats(supernet, archs, calibration)
    # the index shows what users get: the accuracy of the weights as stored
    measured = {a.id: (acc.top1, acc.top5, acc.loss) for a, acc in zip(archs, fp16_acc, strict=True)} if use_fp16 \
        else {i: (r["top1"], r["top5"], r["loss"]) for i, r in results.items()}
    val_acc = [None] * len(archs) if val is None else \
        evaluate_archs(supernet, archs, tensor_batches(val), progress=progress, stats=stats)
    entries = [ZooEntry(a, family.params(space, a), family.flops(space, a), *measured[a.id],
                        val_top1=None if v is None else v.top1, val_top5=None if v is None else v.top5)
               for a, v in zip(archs, val_acc, strict=True)]
    preprocessing = {"img_size": info.img_size, "in_chans": info.in_chans, "crop_pct": info.crop_pct,
                     "interpolation": info.interpolation, "mean": list(info.mean), "std": list(info.std)}
    write_zoo(out, name=name, space=space, state=fp32_state, entries=entries, classes=list(info.labels),
              preprocessing=preprocessing, weights_dtype=torch.float16 if use_fp16 else torch.float32,
              family=family.name, path_stats=stats,
              dataset=info.name, eval_protocol=evaluation["protocol"], eval_images=len(test),
              **({"validation": validation} if validation else {}), selector=selector, training=training,
              fp16_check={"max_top1_drift_pp": max(drift.values()), "threshold_pp": max_fp16_drift,
                          "stored_as": "float16" if use_fp16 else "float32"})
    return {"dtype": "float16" if use_fp16 else "float32", "drift": drift,
            "validation": f"{validation['images']} held-out images" if validation else f"none: {no_validation}"}
