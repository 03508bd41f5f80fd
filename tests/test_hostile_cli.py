"""The bad-input battery of the training command line (bench/bench_hostile_cli.py): every subcommand refuses bad
flags, files and folders with exit code 2 and one line, in bounded time, writing nothing."""

from __future__ import annotations

import pytest

from bench.bench_hostile_cli import battery, report

# the battery may grow, never shrink: at least this many cases per subcommand, and this many real CLI processes
MIN_CASES = {"select": 110, "bossnas": 100, "train": 280, "evaluate": 30, "search": 150, "package": 30,
             "finetune": 160, "(none)": 3}
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
