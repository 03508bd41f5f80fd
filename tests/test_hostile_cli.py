"""The bad-input batteries of the command lines: every training subcommand (bench/bench_hostile_cli.py), and the
server's start and the Triton export (bench/bench_hostile_start.py), refuse bad flags, files, zoos and folders with
exit code 2 and one line, in bounded time, writing nothing."""

from __future__ import annotations

import pytest

from bench import bench_hostile_start
from bench.bench_hostile_cli import battery, report

# the battery may grow, never shrink: at least this many cases per subcommand, and this many real CLI processes
MIN_CASES = {"select": 110, "bossnas": 100, "train": 300, "evaluate": 30, "search": 170, "pick": 50, "darts": 150,
             "variants": 50, "package": 30, "finetune": 160, "tune": 140, "(none)": 3}
MIN_SUBPROCESSES = 35


@pytest.mark.slow
def test_every_training_subcommand_refuses_bad_input_cleanly(tmp_path):
    result = battery(tmp_path)
    text = report(result)
    counts = {command: sum(o.case.command == command for o in result.outcomes) for command in MIN_CASES}
    assert all(counts[c] >= n for c, n in MIN_CASES.items()), (counts, text)
    assert sum(o.case.subprocess for o in result.outcomes) >= MIN_SUBPROCESSES, text
    assert not result.failures, text
    assert result.uncovered == [], text  # every flag of every subcommand is in the battery


@pytest.mark.slow
def test_a_server_on_bad_flags_or_a_tampered_zoo_and_a_triton_export_over_foreign_folders_refuse_cleanly(tmp_path):
    result = bench_hostile_start.battery(tmp_path)
    text = report(result)
    tampered = [o for o in result.outcomes if "cannot use zoo" in o.case.names]
    assert len(result.outcomes) >= 190 and len(tampered) >= len(bench_hostile_start.TAMPERINGS) + 2, text
    assert not result.failures, text
