"""Fine-tune every entry of a zoo standalone from its supernet weights, and store each tuned model in the zoo.

Why: a supernet shares its training among all its paths, so a path learns less than the same net trained alone; OFA
fine-tunes each subnet it deploys. Tuning the zoo's entries, which are what a budget serves, keeps the answer
instant; an arch that is no entry is still sliced from the supernet.

Each entry trains in a process of its own (`jobs` side by side, one thread each) on the training split the zoo's
supernet was trained on, with flips and `crop_padding`-pixel crops (`augment`); the zoo's validation split stays held
out and chooses nothing here (the last epoch's weights are kept). Each result is saved as WORK/<id>.safetensors and
WORK/<id>.json (settings, per-epoch validation, seconds): an interrupted tuning resumes at the entries not saved yet,
and refuses a WORK tuned from another zoo or with other settings. Then each tuned model is rounded to the zoo's weight
dtype, its validation and test accuracy measured as it will be served, and the zoo rewritten as one unit
(`Zoo.with_own_weights`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from training.config import TuneConfig
from training.data import load_data
from training.evaluate import accuracy_of, tensor_batches, zoo_split
from training.finetune import EVAL_BATCH, train_epochs
from training.workers import one_thread_pool
from zoo.io import atomic_write_bytes, atomic_write_text, read_versioned_json
from zoo.schema import held_out_split
from zoo.store import Zoo

KIND = "prezoo.tune"


def tune_zoo(zoo_dir: str | Path, work: str | Path, cfg: TuneConfig) -> Zoo:
    """Tune the zoo's entries (those WORK holds already are not trained again) and rewrite the zoo with them; the
    rewritten zoo. A zoo tuned already with these settings is returned as it is; with others, refused."""
    zoo, work = Zoo.load(zoo_dir), Path(work)
    held_out_split(zoo.doc.get("training"))  # the training split must be known before anything is written
    if zoo.tuned:
        if (zoo.doc.get("tuning") or {}).get("recipe") == cfg.recipe():
            return zoo
        raise ValueError(f"zoo {zoo.name} ({zoo.root}) is tuned already, with other settings: package it again "
                         f"from its run to tune it anew")
    claim_work(work, zoo, cfg)
    todo = [e.id for e in sorted(zoo.entries, key=lambda e: -e.flops) if not (work / f"{e.id}.json").is_file()]
    run_entries(zoo.root, todo, work, cfg)
    states = {e.id: load_file(work / f"{e.id}.safetensors") for e in zoo.entries}
    val, validation = zoo_split(zoo, "val")
    accuracy = measured(zoo, states, zoo.weights_dtype, tensor_batches(val, EVAL_BATCH), cfg.progress)
    return zoo.with_own_weights(states, accuracy, tuning_block(zoo, work, cfg, zoo.weights_dtype), validation)


def claim_work(work: Path, zoo: Zoo, cfg: TuneConfig) -> None:
    """Record in WORK/tune.json which zoo it tunes and how, or refuse a WORK that tuned another zoo or another way."""
    claim = {"schema_version": 1, "kind": KIND, "zoo": zoo.name, "weights_sha256": zoo.checksum,
             "entries": sorted(e.id for e in zoo.entries), "recipe": cfg.recipe()}
    path = work / "tune.json"
    if path.is_file():
        held = read_versioned_json(path, KIND, 1)
        if held != claim:
            differ = sorted(k for k in claim if held.get(k) != claim[k])
            raise ValueError(f"{work} holds a tuning of another zoo or with other settings ({', '.join(differ)} "
                             f"differ): delete it or give another --work")
        return
    work.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(claim, indent=1) + "\n")


def run_entries(zoo_dir: Path, ids: list[str], work: Path, cfg: TuneConfig) -> None:
    """Tune the entries, `cfg.jobs` at a time, each in a process of its own with one thread (here when jobs is 1)."""
    if cfg.jobs == 1 or len(ids) <= 1:
        for entry_id in ids:
            tune_entry(str(zoo_dir), entry_id, str(work), cfg)
        return
    with one_thread_pool(min(cfg.jobs, len(ids))) as pool:
        for future in [pool.submit(tune_entry, str(zoo_dir), i, str(work), cfg) for i in ids]:
            future.result()  # the first failure stops the tuning; what finished is kept


def tune_entry(zoo_dir: str, entry_id: str, work: str, cfg: TuneConfig) -> None:
    """Fine-tune one entry from its weights as the zoo serves them and save it (weights, then its record)."""
    torch.set_num_threads(1)
    zoo = Zoo.load(zoo_dir)
    torch.manual_seed(cfg.seed)
    model = zoo.subnet(entry_id)
    val_batches = tensor_batches(zoo_split(zoo, "val")[0], EVAL_BATCH)
    started = time.monotonic()
    history = train_epochs(model, train_split(zoo, cfg), val_batches, cfg, None, torch.device("cpu"),
                           desc=entry_id)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(Path(work) / f"{entry_id}.safetensors", save(state))
    record = {"id": entry_id, "seconds": round(time.monotonic() - started, 1), "history": history}
    atomic_write_text(Path(work) / f"{entry_id}.json", json.dumps(record, indent=1) + "\n")


def train_split(zoo: Zoo, cfg: TuneConfig):
    """The images the zoo's supernet was trained on (its validation split held out), augmented."""
    held = held_out_split(zoo.doc.get("training"))
    return load_data(held.source, "train", img_size=zoo.space.img_size, in_chans=zoo.space.in_chans,
                     val_size=held.val_size, seed=held.seed, augment=cfg.augment,
                     random_crop_padding=cfg.crop_padding)[0]


def measured(zoo: Zoo, states: dict[str, dict[str, torch.Tensor]], dtype: torch.dtype, val: list,
             progress: bool) -> dict[str, tuple[float, float, float, float, float]]:
    """(test top-1, top-5, loss, validation top-1, top-5) of each tuned model with its weights as the zoo will
    store them (rounded to `dtype`)."""
    test = tensor_batches(zoo_split(zoo, "test")[0], EVAL_BATCH)
    out = {}
    for entry_id, state in states.items():
        model = zoo.supernet.extract(zoo.entry(entry_id).arch)
        model.load_state_dict({k: v.to(dtype).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()})
        t, v = accuracy_of(model.eval(), test), accuracy_of(model, val)
        out[entry_id] = (t.top1, t.top5, t.loss, v.top1, v.top5)
        if progress:
            print(f"{entry_id}: validation top-1 {zoo.entry(entry_id).val_top1} -> {v.top1:.2f}, "
                  f"test {zoo.entry(entry_id).top1} -> {t.top1:.2f}", flush=True)
    return out


def tuning_block(zoo: Zoo, work: Path, cfg: TuneConfig, dtype: torch.dtype) -> dict:
    """The index's `tuning` block: the recipe, and each entry's seconds, per-epoch validation and starting accuracy."""
    records = {e.id: json.loads((work / f"{e.id}.json").read_text()) for e in zoo.entries}
    return {"method": "each entry fine-tuned standalone from its supernet weights (python -m training tune); the last "
                      "epoch's weights kept", "recipe": cfg.recipe(),
            "optimizer": "AdamW, linear warm-up then cosine to min_lr, label smoothing; flips and random crops",
            "data": "the training split the supernet was trained on; the validation split held out",
            "accuracy": f"the tuned weights as stored ({dtype}), on the zoo's test and validation splits",
            "entries": {i: {"seconds": r["seconds"], "untuned_val_top1": zoo.entry(i).val_top1,
                            "untuned_top1": zoo.entry(i).top1,
                            "val_top1_by_epoch": [round(h["val_top1"], 2) for h in r["history"]]}
                        for i, r in records.items()}}
