"""`python -m bench report [--check]`: the tables of bench/RESULTS.md regenerated from the raw results committed
under bench/data/, so that anyone can recheck every number from the files it comes from.

A generated table sits between `<!-- report:STUDY/NAME -->` and `<!-- /report:STUDY/NAME -->` in RESULTS.md and
is rebuilt from `bench/data/STUDY/NAME.json` by the study's renderer (`RENDERERS`). `report` rewrites the blocks in
place; `report --check` changes nothing and exits 1 naming every block that differs from what its raw file gives.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.common import bootstrap, correlations, mean_interval, t_half
from zoo.io import atomic_write_text
from zoo.stats import Z95, wilson_interval

HERE = Path(__file__).parent
RESULTS, DATA = HERE / "RESULTS.md", HERE / "data"
VERSUS, VERSUS_PLOT = "versus/fashion-mnist", HERE / "zoos-vs-baselines.png"  # the zoos against the baselines
# The versus table's and plot's latency: one ORT thread, the setting other work on the machine disturbs least (the
# latency raw file has every thread count it measured; its own block shows them all)
VERSUS_THREADS = "1"
BLOCK = re.compile(r"(<!-- report:(?P<key>[a-z0-9-]+/[A-Za-z0-9._-]+) -->\n)(?P<body>.*?)(<!-- /report:(?P=key) -->)",
                   re.DOTALL)


def pack_bits(right: np.ndarray) -> str:
    """A per-image correctness vector as base64 of its packed bits (10,000 images: 1,668 characters)."""
    return base64.b64encode(np.packbits(np.asarray(right, dtype=bool)).tobytes()).decode()


def unpack_bits(text: str, n: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8), count=n).astype(bool)


def mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: of the b + c images the two models disagree on, is b vs c a fair coin?"""
    from math import comb

    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, k) for k in range(min(b, c) + 1)) / 2**n)


def paired_difference(right_big: np.ndarray, right_small: np.ndarray) -> tuple[float, float, float, float]:
    """(difference in pp, its 95% interval low and high, McNemar p) of two models' per-image correctness."""
    n = len(right_big)
    b = int((~right_big & right_small).sum())  # only the smaller one right
    c = int((right_big & ~right_small).sum())  # only the bigger one right
    diff = (c - b) / n
    se = max(b + c - (c - b) ** 2 / n, 0.0) ** 0.5 / n
    return 100 * diff, 100 * (diff - Z95 * se), 100 * (diff + Z95 * se), mcnemar_p(b, c)


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error over all the tests), in the order given."""
    order, adjusted, running = sorted(range(len(p_values)), key=p_values.__getitem__), [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the (cost, accuracy) points no other point beats on both, cheapest first."""
    keep = [i for i, (c, a) in enumerate(points)
            if not any(oc <= c and oa >= a and (oc, oa) != (c, a) for oc, oa in points)]
    return sorted(keep, key=lambda i: points[i][0])


def zoo_front(raw: dict) -> str:
    """A zoo's entries on the test images, the front drawn on validation accuracy where the raw file has it, and
    each front step tested against the step below on the same test images (alone and Holm-corrected)."""
    n_test, n_val = raw["test_images"], raw.get("val_images")
    entries = sorted(raw["entries"], key=lambda e: e["params"])
    test = [unpack_bits(e["test_right"], n_test) for e in entries]
    val = [unpack_bits(e["val_right"], n_val) for e in entries] if n_val else None
    chosen = [100 * float(v.mean()) for v in (val or test)]
    on_front = front([(e["params"], a) for e, a in zip(entries, chosen, strict=True)])
    steps = [(lo, hi, paired_difference(test[hi], test[lo])) for lo, hi in zip(on_front, on_front[1:], strict=False)]
    adjusted = dict(zip([hi for _, hi, _ in steps], holm([s[3] for _, _, s in steps]), strict=True))
    by = f"validation ({n_val:,} held-out training images)" if val else "test (no validation record)"
    lines = [f"| entry | params | MACs | {'validation top-1 | ' if val else ''}test top-1 (95% interval) | "
             f"on the front (by {by.split(' ')[0]}) | vs the front entry below, on test: Δ pp (95% interval), "
             "McNemar p, Holm p |", "|---|---|---|" + ("---|" if val else "") + "---|---|---|"]
    for i, e in enumerate(entries):
        top1 = 100 * float(test[i].mean())
        lo, hi = wilson_interval(top1, n_test)
        step = next((f"{d:+.2f} ({dlo:+.2f}, {dhi:+.2f}), p = {p:.2g}, Holm {adjusted[i]:.2g}"
                     for _, h, (d, dlo, dhi, p) in steps if h == i), "")
        lines.append(f"| {e['id']} | {e['params']:,} | {e['flops'] / 1e6:.2f}M | "
                     + (f"{chosen[i]:.2f} | " if val else "")
                     + f"{top1:.2f} ({lo:.2f}–{hi:.2f}) | {'yes' if i in on_front else ''} | {step} |")
    significant = sum(s[3] < 0.05 for _, _, s in steps)
    d, dlo, dhi, p = paired_difference(test[-1], test[0])
    best = max(range(len(entries)), key=lambda i: (chosen[i], -entries[i]["params"]))
    best_test = 100 * float(test[best].mean())
    blo, bhi = wilson_interval(best_test, n_test)
    lines += ["", f"Front chosen on {by}; accuracies reported on {n_test:,} test images. {len(on_front)} of "
              f"{len(entries)} entries on the front; {significant} of its {len(steps)} steps significant alone "
              f"(p < 0.05), {sum(adjusted[h] < 0.05 for _, h, _ in steps)} after Holm's correction. Largest minus "
              f"smallest: {d:+.2f} pp (95% interval {dlo:+.2f} to {dhi:+.2f}, McNemar p = {p:.2g}). The entry a budget "
              f"without limits gets: {entries[best]['id']}, test {best_test:.2f} ({blo:.2f}–{bhi:.2f})."]
    return "\n".join(lines) + "\n"


CONTRASTS = {"selection (preferred - random-set)": "random-set",
             "selection, params matched (preferred - random-matched)": "random-matched",
             "concentration (preferred - uniform)": "uniform",
             "Eq. 11 (balanced - plain sampler)": "preferred-plain"}


def contrasts(results: list[dict]) -> dict[str, dict[int, list[float]]]:
    """Per contrast whose conditions were run, per bucket index: preferred minus the other condition, one value per
    seed."""
    by = {(r["seed"], r["condition"]): r["rows"] for r in results}
    seeds, run = sorted({r["seed"] for r in results}), {r["condition"] for r in results}
    out = {}
    for name, other in CONTRASTS.items():
        if other in run:
            per_bucket: dict[int, list[float]] = {}
            for s in seeds:
                for k, (a, b) in enumerate(zip(by[s, "preferred"], by[s, other], strict=True)):
                    per_bucket.setdefault(k, []).append(a["top1"] - b["top1"])
            out[name] = per_bucket
    return out


def _excludes_zero(values: list[float]) -> int:
    """+1 / -1 when the 95% t-interval of the values lies above / below zero, else 0."""
    m, half = statistics.mean(values), t_half(values)
    return 1 if m - half > 0 else -1 if m + half < 0 else 0


def concentration(raw: dict) -> str:
    """bench_prenas: each condition's test top-1 per bucket (mean over seeds), the contrasts per bucket with 95%
    t-intervals over seeds, and each contrast's mean over buckets per seed (the replicates)."""
    results = raw["results"]
    seeds = sorted({r["seed"] for r in results})
    conditions = list(dict.fromkeys(r["condition"] for r in results))
    by = {(r["seed"], r["condition"]): r["rows"] for r in results}
    diffs = contrasts(results)
    picks = by[seeds[0], "preferred"]
    lines = [f"`{raw['space']}` on Fashion-MNIST, {raw['epochs']:g} epochs ({raw['steps']} steps of 128) per supernet, "
             f"seeds {', '.join(map(str, seeds))}; test top-1 ({raw['test_images']:,} images) with inherited weights.",
             "", "| bucket | picks' params (seed 0) | " + " | ".join(conditions) + " | " + " | ".join(diffs) + " |",
             "|---|---|" + "---|" * (len(conditions) + len(diffs))]
    for k, pick in enumerate(picks):
        means = [statistics.mean(by[s, c][k]["top1"] for s in seeds) for c in conditions]
        lines.append(f"| {k} | {pick['params'] / 1e3:.0f}K | " + " | ".join(f"{m:.2f}" for m in means) + " | "
                     + " | ".join(mean_interval(d[k]) for d in diffs.values()) + " |")
    if "random-matched" in conditions:
        ratios = [by[s, "random-matched"][k]["params"] / by[s, "preferred"][k]["params"]
                  for s in seeds for k in range(len(picks))]
        lines += ["", f"random-matched archs' params over their picks': {min(ratios):.3f}–{max(ratios):.3f} "
                  f"(mean {statistics.mean(ratios):.3f})."]
    lines += ["", "Mean over buckets, one value per seed (the replicates):", "",
              "| contrast | per seed | mean ± 95% t-interval over seeds | buckets whose interval excludes 0 (+ / −) |",
              "|---|---|---|---|"]
    for name, per_bucket in diffs.items():
        per_seed = [statistics.mean(per_bucket[k][i] for k in per_bucket) for i in range(len(seeds))]
        signs = [_excludes_zero(v) for v in per_bucket.values()]
        lines.append(f"| {name} | {', '.join(f'{v:+.2f}' for v in per_seed)} | **{mean_interval(per_seed)} pp** | "
                     f"{signs.count(1)} / {signs.count(-1)} of {len(signs)} |")
    return "\n".join(lines) + "\n"


def recipe_reference(condition: str) -> str | None:
    """What a condition is paired with: `all` with the same knobs (a part's effect where the recipe has them), and
    `all` itself for `all@KNOBS` (the knobs' effect); `all` has none."""
    parts, _, knobs = condition.partition("@")
    return None if condition == "all" else "all" if parts == "all" or not knobs else f"all@{knobs}"


def recipe(raw: dict) -> str:
    """bench_recipe: per condition the mean val top-1 over the scored archs, one value per seed, with its 95%
    t-interval over seeds, and its difference from its reference (`recipe_reference`) paired by seed."""
    by = {(r["condition"], r["seed"]): statistics.mean(row["val_top1"] for row in r["rows"]) for r in raw["results"]}
    conditions = list(dict.fromkeys(r["condition"] for r in raw["results"]))
    seeds = sorted({r["seed"] for r in raw["results"]})
    first = raw["results"][0]
    lines = [f"`{raw['space']}`, {raw['epochs']:g} epochs per supernet, seeds {', '.join(map(str, seeds))}; mean val "
             f"top-1 over {len(first['rows'])} archs ({first['metric']}).", "",
             "| condition | settings | per seed | mean ± 95% t-interval | reference | minus the reference, paired by "
             "seed |", "|---|---|---|---|---|---|"]
    for c in conditions:
        ref = recipe_reference(c)
        values = [by[c, s] for s in seeds if (c, s) in by]
        paired = [by[c, s] - by[ref, s] for s in seeds if (c, s) in by and (ref, s) in by]
        setting = next(r["settings"] for r in raw["results"] if r["condition"] == c)
        lines.append(f"| {c} | {', '.join(f'{k}={v}' for k, v in setting.items()) or '-'} | "
                     f"{', '.join(f'{v:.2f}' for v in values)} | {mean_interval(values)} | {ref or '-'} | "
                     f"{mean_interval(paired) if paired else '-'} |")
    return "\n".join(lines) + "\n"


def best_fitting(entries: list[dict], max_params: int) -> dict | None:
    """What a budget of `max_params` gets from the zoos: the highest validation top-1 (test where an entry has no
    validation record) among the entries that fit, ties to the cheaper; None when nothing fits."""
    fitting = [e for e in entries if e["params"] <= max_params]
    return max(fitting, key=lambda e: (e["chosen"], -e["params"]), default=None)


def zoo_points(zoo: dict) -> list[dict]:
    """A zoo-front raw file's entries with their zoo, costs, test correctness and the accuracy budgets choose by."""
    n_test, n_val = zoo["test_images"], zoo.get("val_images")
    points = []
    for e in zoo["entries"]:
        test = unpack_bits(e["test_right"], n_test)
        chosen = unpack_bits(e["val_right"], n_val) if n_val else test
        points.append({"zoo": zoo["zoo"], "id": e["id"], "params": int(e["params"]), "macs": int(e["flops"]),
                       "test": test, "chosen": 100 * float(chosen.mean())})
    return points


def latency_key(model: dict) -> tuple:
    """A latency raw file's name for a model: ("baseline", family, rung, seed) or ("zoo", zoo, entry id)."""
    if model["kind"] == "baseline":
        return "baseline", model["family"], model["rung"], model["seed"]
    return "zoo", model["zoo"], model["id"]


def medians(doc: dict, threads: str = VERSUS_THREADS) -> dict[tuple, float]:
    """The median batch-1 ms at `threads` of every model one latency raw file measured, by `latency_key`."""
    return {latency_key(m): m["latency"][threads]["median_ms"] for m in doc["models"] if threads in m["latency"]}


def latency_runs(raw: dict) -> list[tuple[dict[tuple, float], dict]]:
    """Each `latency/` input's medians with the input, in the order named: a later run times the baselines trained
    after the first beside every zoo entry again, so that a baseline is compared with zoo timings of its own run."""
    return [(medians(doc), doc) for key, doc in raw["inputs"].items() if key.startswith("latency/")]


def timed_with(runs: list[tuple[dict[tuple, float], dict]], key: tuple) -> dict[tuple, float]:
    """The medians of the first run that timed `key`, else the first run's (no run: empty): what a model is paired
    with comes from the same run whenever both were timed."""
    return next((ms for ms, _ in runs if key in ms), runs[0][0] if runs else {})


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def versus(raw: dict) -> str:
    """Every trained baseline against what the served zoos give a budget of its size (`best_fitting`, chosen on
    validation), paired on the same test images: Δ (entry − baseline) with its 95% interval, McNemar p alone and
    Holm-corrected over all the baselines, and the verdict counts; and both models' measured batch-1 latency where a
    `latency/` input has them ("-" where not). The raw file names its zoo-front, baselines and latency `inputs`."""
    zoos = [doc for key, doc in raw["inputs"].items() if key.startswith("zoo-front/")]
    runs = latency_runs(raw)
    entries = [p for zoo in zoos for p in zoo_points(zoo)]
    rows = []
    for doc in (doc for key, doc in raw["inputs"].items() if key.startswith("baselines/")):
        family = doc["family"]
        for m in sorted(doc["models"], key=lambda m: (m["params"], m["seed"])):
            right = unpack_bits(m["test_right"], m["test_images"])
            rows.append((family, m, right, best_fitting(entries, m["params"])))
    key_of = lambda family, m: latency_key({**m, "kind": "baseline", "family": family})
    timed = {key_of(family, m): timed_with(runs, key_of(family, m)) for family, m, _, _ in rows}  # its pair's run
    tested = [(row, paired_difference(row[3]["test"], row[2])) for row in rows if row[3] is not None]
    adjusted = holm([diff[3] for _, diff in tested])
    verdicts: dict[str, int] = {"better": 0, "no significant difference": 0, "worse": 0}
    by_model, speed = {}, {"faster": 0, "slower": 0, "as fast": 0}
    for ((family, m, _, entry), (d, lo, hi, p)), p_holm in zip(tested, adjusted, strict=True):
        verdict = "no significant difference" if p_holm >= 0.05 else "better" if d > 0 else "worse"
        verdicts[verdict] += 1
        ms = timed[key := key_of(family, m)]
        base_ms, entry_ms = ms.get(key), ms.get(("zoo", entry["zoo"], entry["id"]))
        if base_ms is not None and entry_ms is not None:
            speed["faster" if entry_ms < base_ms else "slower" if entry_ms > base_ms else "as fast"] += 1
        by_model[family, m["rung"], m["seed"]] = f"{entry['id']} ({entry['zoo']}) | {entry['params']:,} | " \
            f"{_ms(entry_ms)} | {100 * float(entry['test'].mean()):.2f} | {d:+.2f} ({lo:+.2f}, {hi:+.2f}) | " \
            f"{p:.2g} | {p_holm:.2g} | {verdict} |"
    lines = ["| baseline | rung, seed | params | MACs | median ms | test top-1 (95% interval) | the zoos' answer at ≤ "
             "its params (chosen on validation) | its params | its median ms | its test top-1 | Δ entry − baseline, "
             "pp (95%) | McNemar p | Holm p | zoo entry is |", "|---" * 14 + "|"]
    for family, m, right, _ in rows:
        top1 = 100 * float(right.mean())
        lo, hi = wilson_interval(top1, len(right))
        answer = by_model.get((family, m["rung"], m["seed"]), "nothing fits | | | | | | | |")
        lines.append(f"| {family} | {m['rung']}, {m['seed']} | {m['params']:,} | {m['macs'] / 1e6:.2f}M | "
                     f"{_ms(timed[key := key_of(family, m)].get(key))} | "
                     f"{top1:.2f} ({lo:.2f}–{hi:.2f}) | {answer}")
    lines += [""] + [f"{doc['family']}: lr {doc['tuning']['chosen_lr']:g} chosen on validation by a sweep at rung "
                     f"{doc['tuning']['rung']}, {doc['tuning']['epochs']} epochs (val top-1 by lr: "
                     + ", ".join(f"{lr}: {v:.2f}" for lr, v in doc["tuning"]["val_top1"].items()) + ")"
                     for key, doc in raw["inputs"].items() if key.startswith("baselines/") and doc.get("tuning")]
    lines += [""] + [f"Public reference (not trained here): {r['name']}, {r['top1']:.1f}%"
                     + (f" at {r['params']:,} params" if r.get("params") else "") + f"; {r['note']}"
                     for r in raw.get("references", [])]
    lines += ["", f"Zoos: {', '.join(z['zoo'] for z in zoos)}; {len(rows)} baseline models, {len(tested)} with a "
              f"zoo entry at ≤ their params. After Holm's correction over those {len(tested)} tests, the zoo entry "
              f"is significantly better at {verdicts['better']}, not significantly different at "
              f"{verdicts['no significant difference']}, significantly worse at {verdicts['worse']}."]
    if runs:
        names = [f"`{key}`" for key in raw["inputs"] if key.startswith("latency/")]
        rounds = "/".join(sorted({str(doc["protocol"]["rounds"]) for _, doc in runs}))
        lines += ["", f"Latency (median ms): ONNX Runtime on CPU, fp32, batch 1, {VERSUS_THREADS} intra-op thread, "
                  f"both sides measured in the same {rounds} interleaved rounds of one run ({', '.join(names)}"
                  + ("; a later run times the baselines trained since beside every zoo entry again" if len(runs) > 1
                     else "") + "; the latency tables have every thread count measured and what else ran). Of the "
                  f"{sum(speed.values())} baselines with a zoo entry and both timed, the zoo entry is faster at "
                  f"{speed['faster']} and slower at {speed['slower']}"
                  + (f", as fast (same median) at {speed['as fast']}." if speed["as fast"] else ".")]
    return "\n".join(lines) + "\n"


def fronts(raw: dict) -> str:
    """Two zoos' fronts paired at every budget: for each entry's params in either zoo, what each zoo answers a
    budget of that many params (`best_fitting`, chosen on validation), compared on the same test images (Δ second −
    first with its 95% interval, McNemar p alone and Holm-corrected over the distinct pairs). The raw file names the
    two zoo-front `inputs` (first: the reference) and says in `about` how they differ."""
    (first, a), (second, b) = raw["inputs"].items()
    points = {key: zoo_points(doc) for key, doc in ((first, a), (second, b))}
    budgets = sorted({p["params"] for entries in points.values() for p in entries})
    answers = [(budget, best_fitting(points[first], budget), best_fitting(points[second], budget))
               for budget in budgets]
    pairs = {(x["id"], y["id"]): paired_difference(y["test"], x["test"]) for _, x, y in answers if x and y}
    adjusted = dict(zip(pairs, holm([d[3] for d in pairs.values()]), strict=True))
    top1 = lambda e: f"{e['id']} | {e['params']:,} | {e['chosen']:.2f} | {100 * float(e['test'].mean()):.2f}" \
        if e else "nothing fits | | |"
    lines = [f"First: `{first}`; second: `{second}`. {raw['about']}", "",
             "| budget (params) | first's answer | params | validation top-1 | test top-1 | second's answer | params | "
             "validation top-1 | test top-1 | Δ second − first, pp (95%) | McNemar p | Holm p |", "|---" * 12 + "|"]
    for budget, x, y in answers:
        d, lo, hi, p_value = pairs[x["id"], y["id"]] if x and y else (None,) * 4
        compared = f"{d:+.2f} ({lo:+.2f}, {hi:+.2f}) | {p_value:.2g} | {adjusted[x['id'], y['id']]:.2g}" \
            if d is not None else "| |"
        lines.append(f"| {budget:,} | {top1(x)} | {top1(y)} | {compared} |")
    better = sum(1 for key, (d, *_) in pairs.items() if adjusted[key] < 0.05 and d > 0)
    worse = sum(1 for key, (d, *_) in pairs.items() if adjusted[key] < 0.05 and d < 0)
    lines += ["", f"{len(pairs)} distinct pairs of answers; after Holm's correction the second zoo's answer is "
              f"significantly better at {better}, significantly worse at {worse}, not significantly different at "
              f"{len(pairs) - better - worse}."]
    return "\n".join(lines) + "\n"


def compare_selectors(raw: dict) -> tuple[list[float], dict, dict, dict]:
    """A `selectors` raw file's comparison: the bucket edges, each input's pick per bucket, and each non-reference
    pick's paired test against the reference's in its bucket (Δ pp, 95% interval, McNemar p) with its Holm p over
    every selector and bucket of the file."""
    grid = raw["buckets"]
    edges = [grid["low"] * grid["ratio"] ** k for k in range(grid["count"] + 1)]
    bucket_of = lambda params: next((k for k in range(grid["count"]) if edges[k] <= params < edges[k + 1]), None)
    picks = {}
    for key, doc in raw["inputs"].items():
        by_bucket = {bucket_of(p["params"]): p for p in zoo_points(doc)}
        if None in by_bucket or len(by_bucket) != grid["count"] or len(doc["entries"]) != grid["count"]:
            raise ValueError(f"{key} holds {len(doc['entries'])} entries, not one in each of {grid['count']} buckets")
        picks[key] = by_bucket
    (_, ref), *others = picks.items()
    tests = {(key, k): paired_difference(own[k]["test"], ref[k]["test"]) for key, own in others for k in own}
    adjusted = dict(zip(tests, holm([t[3] for t in tests.values()]), strict=True))
    return edges, picks, tests, adjusted


def selector_verdict(picks: dict, tests: dict, adjusted: dict, key: str) -> tuple[float, list[float], int, int]:
    """One selector's zoo in a `compare_selectors` result: its mean test top-1 over the buckets, its Δ vs the
    reference per bucket (smallest first; none for the reference) and its buckets significantly better and worse
    after Holm."""
    own = picks[key]
    deltas = [tests[key, k][0] for k in sorted(own)] if key != next(iter(picks)) else []
    significant = [tests[key, k][0] for k in sorted(own) if deltas and adjusted[key, k] < 0.05]
    return (statistics.fmean(100 * float(e["test"].mean()) for e in own.values()), deltas,
            sum(d > 0 for d in significant), sum(d < 0 for d in significant))


def selectors(raw: dict) -> str:
    """Selectors compared at zoo level: each one's picks sliced from the same supernet and packaged as a zoo (one
    entry per params bucket), paired bucket by bucket with the first input's (the reference) on the same test images:
    Δ with its 95% interval, McNemar p alone and Holm-corrected over every selector and bucket. `selectors` gives
    each input's name, how it chose and its cost; `buckets` the grid (`low`, `ratio`, `count`) every pick falls in."""
    edges, picks, tests, adjusted = compare_selectors(raw)
    reference = next(iter(picks))
    name = lambda key: raw["selectors"][key]["name"]
    top1 = lambda e: 100 * float(e["test"].mean())
    lines = [f"Reference: {name(reference)}. {raw['about']}", "",
             "| selector | its cost on these 2 cores | mean test top-1 over the buckets | Δ vs reference per bucket, "
             "pp (smallest bucket first) | buckets significantly better / worse (Holm) |", "|---|---|---|---|---|"]
    for key in picks:
        mean, deltas, better, worse = selector_verdict(picks, tests, adjusted, key)
        lines.append(f"| {name(key)}: {raw['selectors'][key]['how']} | {raw['selectors'][key]['cost']} | {mean:.2f} | "
                     + (", ".join(f"{d:+.2f}" for d in deltas) + f" | {better} / {worse} |" if deltas else "- | - |"))
    lines += ["", "| params bucket | selector | pick | params | validation top-1 | test top-1 (95% interval) | "
              "Δ vs reference, pp (95%) | McNemar p | Holm p |", "|---" * 9 + "|"]
    for k in range(len(edges) - 1):
        for key, own in picks.items():
            e = own[k]
            lo, hi = wilson_interval(top1(e), len(e["test"]))
            compared = "| | |" if key == reference else \
                "{:+.2f} ({:+.2f}, {:+.2f}) | {:.2g} | ".format(*tests[key, k]) + f"{adjusted[key, k]:.2g} |"
            lines.append(f"| {edges[k]:,.0f}–{edges[k + 1]:,.0f} | {name(key)} | {e['id']} | {e['params']:,} | "
                         f"{e['chosen']:.2f} | {top1(e):.2f} ({lo:.2f}–{hi:.2f}) | {compared}")
    return "\n".join(lines) + "\n"


def selector_seeds(raw: dict) -> str:
    """The zoo-level selector comparison replicated: `inputs` are `selectors` raw files, one per seed (each with its
    own supernet and its own selector runs). Each selector's verdict seed by seed, with the mean over the seeds: mean
    test top-1 over the buckets, mean Δ vs that seed's reference, buckets significantly better / worse after Holm's
    correction within the seed."""
    runs: dict[str, list[tuple[float, float | None, int, int]]] = {}
    for doc in raw["inputs"].values():
        _, picks, tests, adjusted = compare_selectors(doc)
        for key in picks:
            mean, deltas, better, worse = selector_verdict(picks, tests, adjusted, key)
            runs.setdefault(doc["selectors"][key]["name"], []).append(
                (mean, statistics.fmean(deltas) if deltas else None, better, worse))
    if any(len(seeds) != len(raw["inputs"]) for seeds in runs.values()):
        raise ValueError(f"every selector needs a run in each of the {len(raw['inputs'])} seeds' files")
    by_seed = lambda values, spec: ", ".join(f"{v:{spec}}" for v in values) + \
        (f" (mean {statistics.fmean(values):{spec}})" if len(values) > 1 else "")
    lines = [f"{raw['about']} Seeds' files: {', '.join(f'`{k}`' for k in raw['inputs'])}.", "",
             "| selector | mean test top-1 over the buckets, by seed | mean Δ vs the seed's reference, pp, by seed | "
             "buckets significantly better / worse (Holm), by seed |", "|---|---|---|---|"]
    for name, seeds in runs.items():
        top1, delta, better, worse = zip(*seeds, strict=True)
        verdict = "reference | -" if None in delta else \
            f"{by_seed(delta, '+.2f')} | " + ", ".join(f"{b} / {w}" for b, w in zip(better, worse, strict=True))
        lines.append(f"| {name} | {by_seed(top1, '.2f')} | {verdict} |")
    return "\n".join(lines) + "\n"


def picks(raw: dict) -> str:
    """A selector's `preferred.json` as committed: each bucket's pick with its params, where they sit in the bucket
    (0: its lower edge, 1: its upper), its score and its layers; and the selector's settings."""
    from zoo.family import family_of

    family = family_of(raw)
    lines = ["| params bucket | pick | params | place in bucket | score | layers |", "|---|---|---|---|---|---|"]
    for b in raw["buckets"]:
        for e in b["entries"]:
            place = (e["params"] - b["low"]) / (b["high"] - b["low"])
            layers = family.arch_from_dict(e["arch"]).describe().replace("|", "\\|")  # a cell of its own
            lines.append(f"| {b['low']:,.0f}–{b['high']:,.0f} | {e['id']} | {e['params']:,} | {place:.2f} | "
                         f"{e['score']:.4g} | {layers} |")
    settings = ", ".join(f"{k} {v}" for k, v in raw["selector"].items() if k not in ("buckets", "bucket_by"))
    return "\n".join([*lines, "", f"`{raw['space']['name']}`; selector: {settings}."]) + "\n"


def edmips_seeds(raw: dict) -> str:
    """bench_edmips replicated: `inputs` are its raw files, each entry under several seeds. Per entry and bytes
    budget, each seed's frozen pick (file bytes, test top-1) and the mean top-1 over the seeds, beside the entry's
    uniform int8 weights: how much a pick depends on its search's seed."""
    by_entry: dict[str, list[dict]] = {}
    for doc in raw["inputs"].values():
        by_entry.setdefault(f"`{doc['zoo']}` / `{doc['entry']}`", []).append(doc)
    seeds = sorted({doc.get("seed", 0) for doc in raw["inputs"].values()})
    header = " | ".join(f"seed {s}: bytes, test top-1" for s in seeds)
    lines = [raw["about"], "", f"| entry | budget (bytes) | {header} | mean test top-1 | uniform int8 weights: bytes, "
             "test top-1 |", "|---|---|" + "---|" * (len(seeds) + 2)]
    for entry, docs in by_entry.items():
        if sorted(d.get("seed", 0) for d in docs) != seeds:
            raise ValueError(f"{entry} lacks a seed's file (seeds: {seeds})")
        docs.sort(key=lambda d: d.get("seed", 0))
        int8 = docs[0]["rows"]["int8-weights"]
        for name in sorted((n for n in docs[0]["rows"] if n.startswith("edmips@")), key=lambda n: int(n[7:])):
            picks, budget = [d["rows"][name] for d in docs], int(name[7:])
            lines.append(f"| {entry} | {budget:,} | " + " | ".join(
                f"{r['file_bytes']:,}, {r['test']['top1']:.2f}" for r in picks) +
                f" | {statistics.fmean(r['test']['top1'] for r in picks):.2f} | "
                f"{int8['file_bytes']:,}, {int8['test']['top1']:.2f} |")
    return "\n".join(lines) + "\n"


def latency(raw: dict) -> str:
    """bench_latency: every model's batch-1 median ms (p10–p90 over rounds) at each thread count measured, the
    baselines first, then each zoo's entries, smallest first."""
    protocol, threads = raw["protocol"], [str(t) for t in raw["protocol"]["threads"]]
    models = sorted(raw["models"], key=lambda m: (m["kind"], m.get("family") or m["zoo"], m["params"]))
    lines = [f"ONNX Runtime ({protocol['engine']}), batch {protocol['batch']}, {protocol['session']}; "
             f"{protocol['export']}. {protocol['warmup']} warm-up calls per session, then {protocol['rounds']} rounds "
             f"of {protocol['reps']} calls per session, every model and thread count in each round; "
             f"{protocol['statistic']}. Machine: {raw['machine']}; {raw['conditions']}"
             + (f"; 1-minute load average {load['before']:g} before the rounds, {load['after']:g} after."
                if (load := raw.get("load_average_1min")) else ".")
             + (f" Baseline weights: {raw['baseline_weights']}." if "baseline_weights" in raw else ""), "",
             "| model | kind | params | MACs | " + " | ".join(f"{t} thread{'s' * (t != '1')}: median ms (p10–p90)"
                                                         for t in threads) + " |",
             "|---|---|---|---|" + "---|" * len(threads)]
    for m in models:
        name = f"{m['rung']}, seed {m['seed']}" if m["kind"] == "baseline" else m["id"]
        times = [m["latency"].get(t) for t in threads]
        lines.append(f"| {name} | {m.get('family') or m['zoo']} ({m['kind']}) | {m['params']:,} | "
                     f"{m['macs'] / 1e6:.2f}M | " + " | ".join(
                         "-" if v is None else f"{v['median_ms']:.3f} ({v['p10_ms']:.3f}–{v['p90_ms']:.3f})"
                         for v in times) + " |")
    return "\n".join(lines) + "\n"


def rating(raw: dict) -> str:
    """bench_rating: each rating's tau/rho/R against the ground truth's test top-1, 95% bootstrap intervals over the
    archs (the replicates of one rating run), and its seconds for all of them."""
    archs = raw["archs"]
    truth = [a["test_top1"] for a in archs]
    gt = raw["ground_truth"]
    lines = [f"`{raw['space']}`: {len(archs)} archs trained from scratch ({gt['epochs']} epochs, lr {gt['lr']:g}, "
             f"{gt['schedule']}), test top-1 on {gt['test_images']:,} images: {min(truth):.2f}–{max(truth):.2f}%.", "",
             "| rating | Kendall τ [95%] | Spearman ρ [95%] | Pearson R [95%] | seconds for all |",
             "|---|---|---|---|---|"]
    for name, seconds in raw["seconds"].items():
        score = [a["scores"][name] for a in archs]
        c, ci = correlations(score, truth), bootstrap(score, truth)
        lines.append(f"| {name} | " + " | ".join(f"{c[k]:+.2f} [{ci[k][0]:+.2f}, {ci[k][1]:+.2f}]"
                                                 for k in ("tau", "rho", "R")) + f" | {seconds:g} |")
    if boss := raw.get("bossnas"):
        lines += ["", f"BossNAS ({boss['run']}, target {boss['target']}): each stage's centre is estimated from "
                  f"{boss['centre_paths']} sampled paths; Kendall τ between its ratings of that sample against the "
                  "centre and against a second, independently sampled one, by stage: "
                  + ", ".join(f"{t:+.2f}" for t in boss["centre_tau"]) + "."]
    return "\n".join(lines) + "\n"


def rating_seeds(raw: dict) -> str:
    """The rating table replicated: `inputs` are `rating` raw files of one ground truth, each from its own seed's
    supernet and searches. Each rating's Kendall tau (95% bootstrap interval over the archs) seed by seed, their mean
    (the seeds are the replicates of the searches, the archs those of one search's rating), and how well the seeds'
    scores agree with each other (Kendall tau, the mean over pairs of seeds)."""
    docs = list(raw["inputs"].values())
    truths = [[(a["id"], a["test_top1"]) for a in d["archs"]] for d in docs]
    if any(t != truths[0] for t in truths):
        raise ValueError("every seed's rating file must rate the same ground truth")
    truth = [t for _, t in truths[0]]
    names = list(dict.fromkeys(name for d in docs for name in d["seconds"]))
    if missing := [n for n in names if any(n not in d["seconds"] for d in docs)]:
        raise ValueError(f"every seed's file needs every rating; missing somewhere: {', '.join(missing)}")
    seeds = [d["supernet"]["run"]["seed"] for d in docs]
    lines = [f"{raw['about']} Seeds' files: {', '.join(f'`{k}`' for k in raw['inputs'])}.", "",
             "| rating | " + " | ".join(f"Kendall τ [95%], seed {s}" for s in seeds) +
             " | mean τ | seeds' scores agree, τ |", "|---|" + "---|" * (len(docs) + 2)]
    for name in names:
        scores = [[a["scores"][name] for a in d["archs"]] for d in docs]
        taus = [correlations(score, truth)["tau"] for score in scores]
        cells = [f"{tau:+.2f} [{lo:+.2f}, {hi:+.2f}]"
                 for tau, (lo, hi) in zip(taus, (bootstrap(score, truth)["tau"] for score in scores), strict=True)]
        agree = [correlations(a, b)["tau"] for k, a in enumerate(scores) for b in scores[k + 1:]]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {statistics.fmean(taus):+.2f} | "
                     + (f"{statistics.fmean(agree):+.2f} |" if agree else "- |"))
    return "\n".join(lines) + "\n"


def edmips(raw: dict) -> str:
    """bench_edmips: one entry's files, each with its bytes, test top-1 (Wilson 95%), held-out val top-1, batch-1
    latency and, for an EdMIPS pick, how many layers got each width."""
    lines = [f"`{raw['zoo']}` / `{raw['entry']}` ({raw['params']:,} params; EdMIPS {raw['steps']} steps per budget, "
             f"{raw['search_seconds_frozen']:g} s for its {sum(1 for n in raw['rows'] if n.startswith('edmips@'))} "
             "frozen searches)", "",
             "| file | bytes | test top-1 (95% interval) | val top-1 (2,500 held out) | batch-1 median ms | "
             "EdMIPS layers int4 / int8 / fp16 / fp32 |", "|---|---|---|---|---|---|"]
    for name, r in raw["rows"].items():
        lo, hi = r["test"]["interval"]
        bits = list(r["search"]["layers"].values()) if "search" in r else []
        widths = " / ".join(str(bits.count(b)) for b in (4, 8, 16, 32)) if bits else ""
        lines.append(f"| {name} | {r['file_bytes']:,} | {r['test']['top1']:.2f} ({lo:.2f}–{hi:.2f}) | "
                     f"{r['val_holdout']['top1']:.2f} | {r['latency_b1']['median_ms']:.3f} | {widths} |")
    return "\n".join(lines) + "\n"


def file_points(raw: dict) -> list[dict]:
    """Every served ONNX file of the raw file's zoos (each entry's fp32 file and its variants) with its measured
    bytes, read from the committed zoo.json files: the choices a bytes budget has."""
    points = []
    for root in raw["zoos"]:
        zoo = json.loads((HERE.parent / root / "zoo.json").read_text())
        for e in zoo["entries"]:
            files = {"fp32": e, **e.get("variants", {})}
            points += [{"zoo": zoo["name"], "id": e["id"], "params": e["params"], "file": name,
                        "bytes": f["file_bytes"], "val": f["val_top1"], "test": f["top1"]}
                       for name, f in files.items() if f.get("file_bytes") is not None]
    return points


def bytes_front(raw: dict) -> str:
    """The bytes front over the zoos' files (chosen on validation, test reported with Wilson intervals), what each
    of `budgets` gets, and each variant's validation top-1 against its entry's fp32 file."""
    n_val, n_test = raw["val_images"], raw["test_images"]
    points = file_points(raw)
    on_front = front([(p["bytes"], p["val"]) for p in points])

    def cells(p: dict) -> str:
        val_lo, val_hi = wilson_interval(p["val"], n_val)
        lo, hi = wilson_interval(p["test"], n_test)
        return (f"{p['zoo']} | {p['id']} | {p['params']:,} | {p['file']} | {p['bytes']:,} | "
                f"{p['val']:.2f} ({val_lo:.2f}–{val_hi:.2f}) | {p['test']:.2f} ({lo:.2f}–{hi:.2f}) |")

    lines = [f"{len(points)} files of {len({(p['zoo'], p['id']) for p in points})} entries; the front by bytes, "
             "chosen on validation:", "",
             "| zoo | entry | params | file | bytes | val top-1 (95%) | test top-1 (95%) |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {cells(points[i])}" for i in on_front]
    lines += ["", "| max_bytes | gets | params | file | bytes | val top-1 (95%) | test top-1 (95%) |",
              "|---|---|---|---|---|---|---|"]
    for budget in raw["budgets"]:
        fits = [p for p in points if p["bytes"] <= budget]
        best = max(fits, key=lambda p: (p["val"], -p["bytes"]), default=None)
        lines.append(f"| {budget:,} | " + (cells(best).split(" | ", 1)[1] if best else "nothing fits | | | | | |"))
    fp32 = {(p["zoo"], p["id"]): p for p in points if p["file"] == "fp32"}
    lines.append("")
    for name in sorted({p["file"] for p in points} - {"fp32"}):
        pairs = [(p, fp32[p["zoo"], p["id"]]) for p in points if p["file"] == name and (p["zoo"], p["id"]) in fp32]
        delta = [p["val"] - f["val"] for p, f in pairs]
        share = [p["bytes"] / f["bytes"] for p, f in pairs]
        lines.append(f"{name}: val top-1 minus its fp32 file's {min(delta):+.2f} to {max(delta):+.2f} pp over "
                     f"{len(pairs)} entries, at {min(share):.0%}–{max(share):.0%} of its bytes.")
    return "\n".join(lines) + "\n"


# -- studies whose tables their benchmark builds (it holds the family's measures; imported only when a block needs it)
def bossnas(raw: dict) -> str:
    """bench_bossnas: the BossNAS rating against paths trained from scratch (tau/rho/R with bootstrap intervals, the
    noise ceiling, size preference, input-scale share, run agreement, picks vs random paths)."""
    from bench.bench_bossnas import tables

    return tables(raw)


def selector_accuracy(raw: dict) -> str:
    """bench_selector_accuracy: each proxy's pick per bucket or isomer group against random archs, and mBR over the
    selector seeds."""
    from bench.bench_selector_accuracy import tables

    return tables(raw)


def coverage(raw: dict) -> str:
    """bench_coverage: HyTra paths' one-shot scores against their rarest module's share of the training steps."""
    from bench.bench_coverage import tables

    return tables(raw)


def act_widths(raw: dict) -> str:
    """bench_act_widths: one entry's files with int8 activations on spans of its layers: bytes, test top-1, latency."""
    from bench.bench_act_widths import tables

    return tables(raw)


def search(raw: dict) -> str:
    """bench_search: the search baselines' best archs against selection's entry per bucket, and their costs."""
    from bench.bench_search import tables

    return tables(raw)


RENDERERS: dict[str, Callable[[dict], str]] = {"zoo-front": zoo_front, "concentration": concentration,
                                               "recipe": recipe, "versus": versus, "rating": rating,
                                               "rating-seeds": rating_seeds, "edmips-seeds": edmips_seeds,
                                               "edmips": edmips, "latency": latency, "bossnas": bossnas,
                                               "selector-accuracy": selector_accuracy, "search": search,
                                               "bytes": bytes_front, "fronts": fronts, "selectors": selectors,
                                               "selector-seeds": selector_seeds,
                                               "picks": picks, "coverage": coverage, "act-widths": act_widths}


def plot_versus(raw: dict, path: Path) -> Path:
    """Test top-1 (Wilson 95% bars) against params, MACs and, where a `latency/` input has them, measured batch-1
    median ms (`VERSUS_THREADS` threads): each zoo's validation-chosen front by params (the entries a params budget
    gets; the same entries in every panel) as a line, each baseline ladder as a line, and the public references on
    the params panel (a marker where their params are known, else a dotted level)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from zoo.io import atomic_write_figure

    def bars(ax, xs, tops, n, **style):
        spans = [wilson_interval(t, n) for t in tops]
        ax.errorbar(xs, tops, yerr=[[t - lo for t, (lo, _) in zip(tops, spans, strict=True)],
                                    [hi - t for t, (_, hi) in zip(tops, spans, strict=True)]], capsize=2, **style)

    def line(ax, points, cost, n, **style):
        """The points that have the cost, ordered by it (a model without a latency is left out of that panel)."""
        points = sorted((p for p in points if p.get(cost) is not None), key=lambda p: p[cost])
        bars(ax, [p[cost] for p in points], [p["top1"] for p in points], n, **style)

    runs = latency_runs(raw)
    first = runs[0][0] if runs else {}  # the zoos' times: the first run's; a baseline's: its own run's
    panels = [("params", "parameters"), ("macs", "MACs per image")]
    if first:
        panels.append(("ms", f"ONNX Runtime batch-1 median ms, CPU, {VERSUS_THREADS} thread"))
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), sharey=True)
    for ax, (cost, label) in zip(axes, panels, strict=True):
        for key, doc in raw["inputs"].items():
            if key.startswith("zoo-front/"):
                points = zoo_points(doc)
                on_front = [{**points[i], "top1": 100 * float(points[i]["test"].mean()),
                             "ms": first.get(("zoo", doc["zoo"], points[i]["id"]))}
                            for i in front([(e["params"], e["chosen"]) for e in points])]
                line(ax, on_front, cost, doc["test_images"], marker="o", lw=2,
                     label=f"zoo {doc['zoo']} (front by validation)")
            elif key.startswith("baselines/"):
                keys = [("baseline", doc["family"], m["rung"], m["seed"]) for m in doc["models"]]
                models = [{**m, "top1": m["test_top1"], "ms": timed_with(runs, key).get(key)}
                          for m, key in zip(doc["models"], keys, strict=True) if m["seed"] == 0]
                line(ax, models, cost, models[0]["test_images"] if models else 1, marker="s", ls="--",
                     label=f"baseline {doc['family']} (trained here)")
        if cost == "params":
            for r in raw.get("references", []):
                if r.get("params"):
                    ax.scatter([r["params"]], [r["top1"]], marker="*", s=80, label=f"{r['name']} (reported)")
                else:
                    ax.axhline(r["top1"], ls=":", lw=0.8, color="grey")
                    ax.annotate(f"{r['name']} (reported)", (0.01, r["top1"]), xycoords=("axes fraction", "data"),
                                fontsize=7, color="grey", va="bottom")
        ax.set(xscale="log", xlabel=label, title=f"Fashion-MNIST test top-1 vs {label.split(',')[0]}")
        if cost == "ms":  # tenths of a ms: 0.1, 0.2, 0.5 read better than powers of ten
            ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
            ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test top-1 (%), 95% Wilson bars")
    axes[0].legend(fontsize=7, loc="lower right")
    try:
        return atomic_write_figure(path, fig)
    finally:
        plt.close(fig)


def read_raw(data: Path, key: str) -> dict:
    """A raw results file, with the raw files its `inputs` name (STUDY/NAME keys) read in: a study that compares
    others' results reads theirs rather than copying them."""
    raw = json.loads((data / f"{key}.json").read_text())
    if "inputs" in raw:
        raw["inputs"] = {k: read_raw(data, k) for k in raw["inputs"]}
    return raw


def render(text: str, data: Path = DATA) -> tuple[str, list[str]]:
    """RESULTS.md's text with every block rebuilt, and the keys of the blocks that changed."""
    changed: list[str] = []

    def rebuild(m: re.Match) -> str:
        study, name = m["key"].split("/")
        if study not in RENDERERS:
            raise SystemExit(f"RESULTS.md: block report:{m['key']} names no study (known: {', '.join(RENDERERS)})")
        raw_file = data / study / f"{name}.json"
        try:
            body = RENDERERS[study](read_raw(data, m["key"]))
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"report:{m['key']}: {raw_file} cannot be read as its study's raw results: {e}") from None
        if body != m["body"]:
            changed.append(m["key"])
        return m[1] + body + m[4]

    return BLOCK.sub(rebuild, text), changed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table differs from its data")
    ap.add_argument("--results", type=Path, default=RESULTS, help="the markdown file whose blocks are rebuilt")
    ap.add_argument("--data", type=Path, default=DATA, help="the raw results folder")
    ap.add_argument("--plot", action="store_true", help=f"also redraw {VERSUS_PLOT.name} from {VERSUS}.json")
    args = ap.parse_args(argv)
    if args.plot:
        print(f"drew {plot_versus(read_raw(args.data, VERSUS), VERSUS_PLOT)}")
    text = args.results.read_text()
    new, changed = render(text, args.data)
    blocks = len(BLOCK.findall(text))
    if args.check:
        for key in changed:
            print(f"{args.results}: block report:{key} differs from what {args.data}/{key}.json gives", file=sys.stderr)
        print(f"{blocks - len(changed)} of {blocks} generated blocks match their raw data")
        return 1 if changed else 0
    if changed:
        atomic_write_text(args.results, new)
    print(f"rebuilt {len(changed)} of {blocks} generated blocks" + (f": {', '.join(changed)}" if changed else ""))
    return 0

