"""`python -m bench report`: RESULTS.md's generated tables equal what the committed raw results give, and an edited
number is caught."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.report import BLOCK, RESULTS, front, holm, pack_bits, unpack_bits

ROOT = Path(__file__).resolve().parents[1]


def report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", "report", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def test_committed_tables_match_their_raw_data():
    assert len(BLOCK.findall(RESULTS.read_text())) >= 2  # the two zoos' fronts at least
    done = report("--check")
    assert done.returncode == 0, done.stderr


def test_an_edited_number_fails_the_check_and_report_restores_it(tmp_path):
    results, data = tmp_path / "RESULTS.md", tmp_path / "data"
    shutil.copytree(ROOT / "bench" / "data", data)
    text = RESULTS.read_text()
    block = BLOCK.search(text)
    row = next(line for line in block["body"].splitlines() if re.search(r"\| \d+\.\d\d \(", line))
    top1 = re.search(r"\| (\d+\.\d\d) \(", row)[1]  # the first test top-1 with its interval
    edited = row.replace(f"| {top1} (", f"| {float(top1) + 0.01:.2f} (", 1)
    assert edited != row
    results.write_text(text.replace(row, edited, 1))
    args = ("--results", str(results), "--data", str(data))
    failed = report("--check", *args)
    assert failed.returncode == 1 and f"report:{block['key']} differs" in failed.stderr
    assert report(*args).returncode == 0 and results.read_text() == text


def test_edited_raw_data_changes_the_table(tmp_path):
    """The table is computed from the bits, not copied: flip one image of one entry and its top-1 moves 0.01 pp."""
    import json

    results, data = tmp_path / "RESULTS.md", tmp_path / "data"
    shutil.copytree(ROOT / "bench" / "data", data)
    shutil.copy(RESULTS, results)
    key = next(m["key"] for m in BLOCK.finditer(RESULTS.read_text()) if m["key"].startswith("zoo-front/"))
    raw_file = data / f"{key}.json"
    raw = json.loads(raw_file.read_text())
    entry = raw["entries"][0]
    right = unpack_bits(entry["test_right"], raw["test_images"])
    right[0] = not right[0]
    entry["test_right"] = pack_bits(right)
    raw_file.write_text(json.dumps(raw))
    assert report("--check", "--results", str(results), "--data", str(data)).returncode == 1


def test_bits_round_trip_and_holm_by_hand():
    right = np.random.default_rng(0).random(10_001) < 0.9
    assert (unpack_bits(pack_bits(right), len(right)) == right).all()
    # Holm: sorted p · (m − rank), made monotone: 0.01·4, 0.02·3 = 0.06, max(0.03·2, 0.06), 0.5·1
    assert holm([0.5, 0.01, 0.03, 0.02]) == pytest.approx([0.5, 0.04, 0.06, 0.06])
    assert front([(3, 80.0), (1, 70.0), (2, 60.0), (4, 80.0)]) == [1, 0]


def test_the_recipe_table_pairs_each_condition_with_all_at_its_knobs_by_seed():
    from bench.bench_recipe import PARTS, settings
    from bench.report import recipe

    assert settings("base") == {} and settings("+ema") == PARTS["ema"]
    assert settings("-distill") == {**PARTS["crop"], **PARTS["erasing"], **PARTS["ema"]}
    with pytest.raises(ValueError, match="give base, all, -PART or \\+PART"):
        settings("-dropout")
    assert settings("all@paths2") == {**settings("all"), "sandwich": 2}
    assert settings("-ema@lr1e-2@paths2") == {**settings("-ema"), "lr": 1e-2, "sandwich": 2}
    with pytest.raises(ValueError, match="no knob 'lr1'"):
        settings("all@lr1")
    means = {("all", 0): 80.0, ("all", 1): 82.0, ("all", 2): 81.0, ("base", 0): 78.0, ("base", 1): 80.5,
             ("base", 2): 79.0, ("all@lr1e-2", 0): 84.0, ("all@lr1e-2", 1): 85.0, ("-ema@lr1e-2", 0): 85.0,
             ("-ema@lr1e-2", 1): 85.5}
    results = [{"condition": c, "seed": s, "settings": settings(c), "metric": "val top-1",
                "rows": [{"val_top1": m - 1}, {"val_top1": m + 1}]} for (c, s), m in means.items()]
    table = recipe({"space": "mbconv-tiny", "epochs": 2, "results": results})
    row = lambda c: next(line for line in table.splitlines() if line.startswith(f"| {c} |"))
    # base - all per seed: -2.0, -1.5, -2.0: mean -1.833, sd 0.289, t(2) 4.3027 -> half-width 0.717
    assert "78.00, 80.50, 79.00" in row("base") and row("base").endswith("| all | -1.833 ± 0.717 |")
    assert row("all").endswith("| - | - |")
    # a part removed at a knob is paired with `all` at that knob: +1.0, +0.5 -> 0.750 ± 12.706·0.354/√2 = 3.177
    assert row("-ema@lr1e-2").endswith("| all@lr1e-2 | 0.750 ± 3.177 |")
    assert row("all@lr1e-2").endswith("| all | 3.500 ± 6.353 |")  # the knob's own effect: +4.0, +3.0


def test_versus_answers_each_baseline_with_the_entry_a_budget_of_its_size_gets():
    """Two zoo entries and two baselines, worked out by hand: the 20K baseline gets the 15K entry (the 25K one does
    not fit), chosen on validation although the other has the better test top-1; the 5K one gets nothing."""
    from bench.report import versus

    n = 200
    base = np.zeros(n, dtype=bool)
    base[:150] = True  # 75.0%
    entry = base.copy()
    entry[150:190] = True  # right on 40 more: 95.0%, b = 0, c = 40
    big = np.ones(n, dtype=bool)
    zoo = {"zoo": "z", "test_images": n, "val_images": n, "entries": [
        {"id": "small", "params": 15_000, "flops": 2_000_000, "test_right": pack_bits(entry),
         "val_right": pack_bits(big)},
        {"id": "large", "params": 25_000, "flops": 3_000_000, "test_right": pack_bits(big),
         "val_right": pack_bits(base)}]}
    models = [{"rung": r, "seed": 0, "params": p, "macs": 1e6, "test_images": n, "test_right": pack_bits(base)}
              for r, p in (("tiny", 5_000), ("mid", 20_000))]
    table = versus({"inputs": {"zoo-front/z": zoo, "baselines/cnn": {"family": "cnn", "models": models}}})
    tiny, mid = (line for line in table.splitlines() if line.startswith("| cnn |"))
    assert "nothing fits" in tiny
    # Δ = 40/200 = +20 pp; McNemar exact p = 2 · 0.5^40; se = sqrt(40 - 40²/200)/200 = 0.02828 -> ±5.54 pp
    assert "| small (z) | 15,000 | - | 95.00 | +20.00 (+14.46, +25.54) | 1.8e-12 | 1.8e-12 | better |" in mid
    assert "2 baseline models, 1 with a zoo entry" in table and "significantly better at 1," in table
    assert "Latency" not in table  # no latency input: the columns show "-" and no note is made


def test_fronts_pairs_what_each_zoo_answers_at_every_entrys_budget():
    """First zoo: 10K (val 80) and 30K (val 90); second: 20K (val 85). Budgets 10K, 20K, 30K get (10K, nothing),
    (10K, 20K) and (30K, 20K): two pairs, worked out by hand."""
    from bench.report import fronts

    n = 200
    bits = lambda k: pack_bits(np.arange(n) < k)  # right on the first k images

    def zoo(name, entries):
        return {"zoo": name, "test_images": n, "val_images": n, "entries": [
            {"id": i, "params": p, "flops": 1, "test_right": bits(t), "val_right": bits(v)} for i, p, v, t in entries]}

    first = zoo("z", [("a10", 10_000, 160, 150), ("a30", 30_000, 180, 190)])
    second = zoo("z", [("b20", 20_000, 170, 170)])
    table = fronts({"inputs": {"zoo-front/old": first, "zoo-front/new": second}, "about": "Same zoo, new recipe."})
    assert table.startswith("First: `zoo-front/old`; second: `zoo-front/new`. Same zoo, new recipe.")
    rows = [line for line in table.splitlines() if line.startswith("| 10,000") or line.startswith("| 20,000")
            or line.startswith("| 30,000")]
    assert rows[0] == "| 10,000 | a10 | 10,000 | 80.00 | 75.00 | nothing fits | | | | | | |"  # 12 cells
    # 20K: b20 right on 20 images a10 misses, never the reverse: +10 pp, se sqrt(20 - 400/200)/200, p = 2^-19
    assert rows[1].startswith("| 20,000 | a10 | 10,000 | 80.00 | 75.00 | b20 | 20,000 | 85.00 | 85.00 | "
                              "+10.00 (+5.84, +14.16) | 1.9e-06 | 3.8e-06 |")
    # 30K: a30 right on 20 images b20 misses: -10 pp; Holm: the larger of 2·p and p for the second-smallest
    assert rows[2].startswith("| 30,000 | a30 | 30,000 | 90.00 | 95.00 | b20 | 20,000 | 85.00 | 85.00 | "
                              "-10.00 (-14.16, -5.84) | 1.9e-06 | 3.8e-06 |")
    assert table.rstrip().endswith("2 distinct pairs of answers; after Holm's correction the second zoo's answer is "
                                   "significantly better at 1, significantly worse at 1, not significantly different "
                                   "at 0.")


def _selectors_raw(reference: tuple[int, int], darts: tuple[int, int], n: int = 200) -> dict:
    """A `selectors` raw file over buckets [10K, 20K) and [20K, 40K): the reference picks 12K and 25K, DARTS 19K and
    21K, each right on the first k of `n` test images (and as many validation images)."""
    bits = lambda k: pack_bits(np.arange(n) < k)

    def zoo(entries):
        return {"zoo": "z", "test_images": n, "val_images": n, "entries": [
            {"id": i, "params": p, "flops": 1, "test_right": bits(t), "val_right": bits(t)} for i, p, t in entries]}

    return {"inputs": {"zoo-front/ref": zoo([("r1", 12_000, reference[0]), ("r2", 25_000, reference[1])]),
                       "zoo-front/new": zoo([("n1", 19_000, darts[0]), ("n2", 21_000, darts[1])])},
            "selectors": {"zoo-front/ref": {"name": "evolution", "how": "on the supernet", "cost": "9 min"},
                          "zoo-front/new": {"name": "DARTS", "how": "GDAS", "cost": "33 min"}},
            "buckets": {"low": 10_000, "ratio": 2, "count": 2}, "about": "Same supernet."}


def test_selectors_pairs_each_selectors_pick_with_the_references_in_the_same_bucket():
    """Bucket 1: DARTS is right on 20 more images than the reference (+10 pp); bucket 2: level. Holm over the 2
    tests, by hand; a zoo that misses a bucket is refused."""
    from bench.report import selectors

    raw = _selectors_raw((150, 180), (170, 180))
    table = selectors(raw)
    assert table.startswith("Reference: evolution. Same supernet.")
    assert "| evolution: on the supernet | 9 min | 82.50 | - | - |" in table
    assert "| DARTS: GDAS | 33 min | 87.50 | +10.00, +0.00 | 1 / 0 |" in table
    # +10 pp: se sqrt(20 - 400/200)/200, p = 2^-19; Wilson 85% of 200: 79.39-89.29; Holm doubles the smaller p
    assert "| 10,000–20,000 | DARTS | n1 | 19,000 | 85.00 | 85.00 (79.39–89.29) | +10.00 (+5.84, +14.16) | 1.9e-06 " \
           "| 3.8e-06 |" in table
    assert "| 20,000–40,000 | DARTS | n2 | 21,000 | 90.00 | 90.00 (85.06–93.43) | +0.00 (+0.00, +0.00) | 1 | 1 |" \
        in table
    raw["inputs"]["zoo-front/new"]["entries"].pop()
    with pytest.raises(ValueError, match="holds 1 entries, not one in each of 2 buckets"):
        selectors(raw)


def test_selector_seeds_gives_each_selectors_verdict_seed_by_seed_and_their_mean():
    """Seed 0: DARTS +10 pp in bucket 1 (significant after Holm), level in bucket 2; seed 1: -10 pp in bucket 1,
    level in bucket 2. Means over the buckets, then over the seeds, by hand; a seed without a selector is refused."""
    from bench.report import selector_seeds

    raw = {"inputs": {"selectors/s0": _selectors_raw((150, 180), (170, 180)),
                      "selectors/s1": _selectors_raw((160, 180), (140, 180))}, "about": "Two seeds."}
    table = selector_seeds(raw)
    assert table.startswith("Two seeds. Seeds' files: `selectors/s0`, `selectors/s1`.")
    assert "| evolution | 82.50, 85.00 (mean 83.75) | reference | - |" in table
    assert "| DARTS | 87.50, 80.00 (mean 83.75) | +5.00, -5.00 (mean +0.00) | 1 / 0, 0 / 1 |" in table
    raw["inputs"]["selectors/s1"]["selectors"]["zoo-front/new"]["name"] = "BossNAS"
    with pytest.raises(ValueError, match="every selector needs a run in each of the 2 seeds' files"):
        selector_seeds(raw)


def _rating_raw(seed: int, darts: list[float]) -> dict:
    truth = [80.0, 82.0, 84.0, 86.0]
    return {"supernet": {"run": {"seed": seed}}, "seconds": {"params": 0, "DARTS α": 0},
            "archs": [{"id": f"a{k}", "test_top1": t, "scores": {"params": 1000 * (k + 1), "DARTS α": d}}
                      for k, (t, d) in enumerate(zip(truth, darts, strict=True))]}


def test_rating_seeds_gives_each_ratings_tau_seed_by_seed_their_mean_and_the_seeds_agreement():
    """Seed 0's DARTS ranks the four archs as their accuracy (tau +1), seed 1's the other way (tau -1): mean 0, and
    the two seeds' scores agree at tau -1; params is the same in both seeds. Another ground truth, or a rating
    missing from one seed, is refused."""
    from bench.report import rating_seeds

    raw = {"inputs": {"rating/s0": _rating_raw(0, [-4.0, -3.0, -2.0, -1.0]),
                      "rating/s1": _rating_raw(1, [-1.0, -2.0, -3.0, -4.0])}, "about": "Two seeds."}
    table = rating_seeds(raw)
    assert table.startswith("Two seeds. Seeds' files: `rating/s0`, `rating/s1`.")
    assert "| rating | Kendall τ [95%], seed 0 | Kendall τ [95%], seed 1 | mean τ | seeds' scores agree, τ |" in table
    assert re.search(r"\| DARTS α \| \+1\.00 \[[^]]+\] \| -1\.00 \[[^]]+\] \| \+0\.00 \| -1\.00 \|", table)
    assert re.search(r"\| params \| \+1\.00 \[[^]]+\] \| \+1\.00 \[[^]]+\] \| \+1\.00 \| \+1\.00 \|", table)
    raw["inputs"]["rating/s1"]["archs"][0]["test_top1"] = 81.0
    with pytest.raises(ValueError, match="must rate the same ground truth"):
        rating_seeds(raw)
    raw["inputs"]["rating/s1"] = _rating_raw(1, [1.0, 2.0, 3.0, 4.0])
    del raw["inputs"]["rating/s1"]["seconds"]["DARTS α"]
    with pytest.raises(ValueError, match="missing somewhere: DARTS α"):
        rating_seeds(raw)


def _edmips_raw(entry: str, seed: int, picks: dict[int, tuple[int, float]]) -> dict:
    row = lambda size, top1: {"file_bytes": size, "test": {"top1": top1}}
    return {"zoo": "z", "entry": entry, "seed": seed, "rows": {
        "int8-weights": row(1000, 90.0), **{f"edmips@{b}": row(*v) for b, v in picks.items()},
        "edmips-finetuned@900": row(850, 80.0)}}


def test_edmips_seeds_puts_each_budgets_pick_of_every_seed_beside_uniform_int8():
    """Budgets in numeric order (900 before 1200, not as text), the fine-tuned pick left out, the mean over the seeds;
    an entry without one seed's file is refused."""
    from bench.report import edmips_seeds

    raw = {"about": "Two seeds.", "inputs": {
        "edmips/a": _edmips_raw("a", 0, {1200: (1100, 91.0), 900: (880, 89.0)}),
        "edmips/a-s1": _edmips_raw("a", 1, {1200: (1150, 90.0), 900: (870, 88.0)})}}
    rows = [line for line in edmips_seeds(raw).splitlines() if line.startswith("| `z`")]
    assert rows == ["| `z` / `a` | 900 | 880, 89.00 | 870, 88.00 | 88.50 | 1,000, 90.00 |",
                    "| `z` / `a` | 1,200 | 1,100, 91.00 | 1,150, 90.00 | 90.50 | 1,000, 90.00 |"]
    raw["inputs"]["edmips/b"] = _edmips_raw("b", 0, {900: (880, 89.0)})
    with pytest.raises(ValueError, match="`z` / `b` lacks a seed's file"):
        edmips_seeds(raw)


def test_picks_places_each_pick_in_its_bucket_and_keeps_its_layers_in_one_cell():
    from bench.report import picks
    from training.preferred import Buckets, Candidate, preferred_doc
    from zoo.families.mbconv.layers import params
    from zoo.families.mbconv.space import MBCONV_TINY, arch

    a = arch((8, [["residual", 3, 1, False]]), (8, [["fused", 3, 2, False]]), (16, [["mbconv", 5, 3, True]]))
    n = params(MBCONV_TINY, a)
    buckets = Buckets(n - 300, n + 100, width=400)
    doc = preferred_doc(MBCONV_TINY, {"method": "zero-cost", "seed": 0, "buckets": {}, "bucket_by": "params"}, {},
                        buckets, [[Candidate(a, n, 1, 12.5)]], family="mbconv")
    table = picks(json.loads(json.dumps(doc)))
    row = next(line for line in table.splitlines() if a.id in line)
    assert row == (f"| {n - 300:,}–{n + 100:,} | {a.id} | {n:,} | 0.75 | 12.5 | "
                   "8: R \\| 8: F3e2 \\| 16: M5e3s |")
    assert table.rstrip().endswith("`mbconv-tiny`; selector: method zero-cost, seed 0.")


def _versus_inputs(n: int = 200) -> dict:
    """A zoo of two entries, the larger better on validation, and a ladder of three baselines: a budget of 12K gets
    the 10K entry, of 35K and 40K the 30K one."""
    right = np.zeros(n, dtype=bool)
    right[:180] = True
    zoo = {"zoo": "z", "test_images": n, "val_images": n, "entries": [
        {"id": f"e{k}", "params": p, "flops": 1_000_000, "test_right": pack_bits(right), "val_right": pack_bits(val)}
        for k, p, val in ((1, 10_000, right), (2, 30_000, np.ones(n, dtype=bool)))]}
    models = [{"rung": r, "seed": 0, "params": p, "macs": 2e6, "test_images": n, "test_right": pack_bits(right),
               "test_top1": 90.0} for r, p in (("a", 12_000), ("b", 35_000), ("c", 40_000))]
    return {"zoo-front/z": zoo, "baselines/cnn": {"family": "cnn", "models": models}}


def _timing(kind: dict, one: float, two: float | None = None) -> dict:
    latency = {"1": {"median_ms": one, "p10_ms": one - 0.01, "p90_ms": one + 0.02}}
    if two is not None:
        latency["2"] = {"median_ms": two, "p10_ms": two - 0.01, "p90_ms": two + 0.02}
    return {**kind, "params": 1, "macs": 1_500_000, "latency": latency}


LATENCY_RAW = {"kind": "latency", "machine": "m", "conditions": "other jobs paused", "models": [
    _timing({"kind": "baseline", "family": "cnn", "rung": "a", "seed": 0}, 0.250, 0.3),
    _timing({"kind": "baseline", "family": "cnn", "rung": "b", "seed": 0}, 0.100, 0.2),
    _timing({"kind": "zoo", "zoo": "z", "id": "e1"}, 0.125),  # measured at one thread only
    _timing({"kind": "zoo", "zoo": "z", "id": "e2"}, 0.4, 0.5)],  # baseline c was not timed
    "protocol": {"engine": "ort", "batch": 1, "threads": [1, 2], "session": "s", "export": "x", "warmup": 3,
                 "rounds": 7, "reps": 2, "statistic": "median"}}


def test_versus_gives_both_sides_measured_latency_and_counts_the_faster():
    """Baseline a (0.250 ms) gets entry e1 (0.125 ms): faster; b (0.100 ms) and c (not timed) get e2 (0.400 ms):
    slower at b, nothing to compare at c, so 1 faster and 1 slower of 2 with both timed."""
    from bench.report import versus

    table = versus({"inputs": {**_versus_inputs(), "latency/fashion-mnist": LATENCY_RAW}})
    a, b, c = (line for line in table.splitlines() if line.startswith("| cnn |"))
    assert a.startswith("| cnn | a, 0 | 12,000 | 2.00M | 0.250 | 90.00 (")
    assert "| e1 (z) | 10,000 | 0.125 | 90.00 |" in a
    assert "| 2.00M | 0.100 | " in b and "| e2 (z) | 30,000 | 0.400 | 90.00 |" in b
    assert "| 2.00M | - | " in c and "| e2 (z) | 30,000 | 0.400 | " in c  # the entry's time: the first run's
    assert "batch 1, 1 intra-op thread, both sides measured in the same 7 interleaved rounds of one run" in table
    assert "Of the 2 baselines with a zoo entry and both timed, the zoo entry is faster at 1 and slower at 1." in table


def test_versus_pairs_a_baseline_timed_in_a_later_run_with_that_runs_zoo_times():
    """A second latency run times baseline c (0.5 ms) beside entry e2 again (0.6 ms there, 0.4 ms in the first run):
    c is paired with 0.6 and so counts as slower (against the first run's 0.4 it would count as faster); a and b keep
    the first run's pairs."""
    from bench.report import versus

    later = {**LATENCY_RAW, "models": [_timing({"kind": "baseline", "family": "cnn", "rung": "c", "seed": 0}, 0.5),
                                       _timing({"kind": "zoo", "zoo": "z", "id": "e2"}, 0.6)]}
    table = versus({"inputs": {**_versus_inputs(), "latency/first": LATENCY_RAW, "latency/later": later}})
    a, b, c = (line for line in table.splitlines() if line.startswith("| cnn |"))
    assert "| 0.250 | " in a and "| e1 (z) | 10,000 | 0.125 |" in a
    assert "| 0.100 | " in b and "| e2 (z) | 30,000 | 0.400 |" in b
    assert "| 2.00M | 0.500 | " in c and "| e2 (z) | 30,000 | 0.600 |" in c
    assert "of one run (`latency/first`, `latency/later`; a later run times the baselines trained since" in table
    assert "Of the 3 baselines with a zoo entry and both timed, the zoo entry is faster at 1 and slower at 2." in table


def test_latency_table_shows_every_thread_count_and_dash_where_unmeasured():
    from bench.report import latency

    table = latency(LATENCY_RAW)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "(" in line.split("|")[2]]
    assert [r.split(" | ")[0] for r in rows] == ["| a, seed 0", "| b, seed 0", "| e1", "| e2"]  # baselines first
    assert rows[0].endswith("| 0.250 (0.240–0.270) | 0.300 (0.290–0.320) |")
    assert rows[2].endswith("| 0.125 (0.115–0.145) | - |")
    assert "3 warm-up calls per session, then 7 rounds of 2 calls" in table and "other jobs paused" in table


def test_the_versus_plot_gains_a_latency_panel_only_with_a_latency_input(tmp_path):
    import matplotlib.image

    from bench.report import plot_versus

    with_ms = plot_versus({"inputs": {**_versus_inputs(), "latency/x": LATENCY_RAW}}, tmp_path / "three.png")
    without = plot_versus({"inputs": _versus_inputs()}, tmp_path / "two.png")
    three, two = (matplotlib.image.imread(path).shape[1] for path in (with_ms, without))
    assert three == pytest.approx(two * 3 / 2, rel=0.02)  # a third panel of the same width


def test_the_bytes_front_chooses_files_on_validation_and_answers_each_budget(tmp_path):
    """Two entries of two zoos, worked out by hand: the w8 file of `a` (900 B, val 80) beats its fp32 file (2,000 B,
    val 79.9) and `b`'s fp32 (1,500 B, val 79); `b`'s w8 (700 B, val 78.5) leads the front; a 800 B budget gets it,
    1,000 B gets `a`'s w8 although `b`'s fp32 would be better on test; 500 B gets nothing."""
    from bench.report import bytes_front

    def zoo(name: str, entry: dict) -> str:
        (tmp_path / name).mkdir()
        (tmp_path / name / "zoo.json").write_text(json.dumps({"name": name, "entries": [entry]}))
        return str(tmp_path / name)

    a = {"id": "a", "params": 500, "file_bytes": 2000, "val_top1": 79.9, "top1": 79.0,
         "variants": {"w8": {"file_bytes": 900, "val_top1": 80.0, "top1": 79.5}}}
    b = {"id": "b", "params": 400, "file_bytes": 1500, "val_top1": 79.0, "top1": 81.0,
         "variants": {"w8": {"file_bytes": 700, "val_top1": 78.5, "top1": 78.0},
                      "w4": {"file_bytes": 600, "val_top1": 70.0, "top1": 69.0}}}
    table = bytes_front({"zoos": [zoo("za", a), zoo("zb", b)], "val_images": 1000, "test_images": 1000,
                         "budgets": [500, 800, 1000]})
    rows = [line for line in table.splitlines() if line.startswith(("| za", "| zb"))]
    assert [r.split(" | ")[1:4:2] for r in rows] == [["b", "w4"], ["b", "w8"], ["a", "w8"]]  # the front, by bytes
    answers = {line.split(" | ")[0]: line for line in table.splitlines() if line[2:3].isdigit()}
    assert "nothing fits" in answers["| 500"] and "| b | 400 | w8 | 700 |" in answers["| 800"]
    assert "| a | 500 | w8 | 900 | 80.00" in answers["| 1,000"]
    assert "w8: val top-1 minus its fp32 file's -0.50 to +0.10 pp over 2 entries, at 45%–47% of its bytes." in table
