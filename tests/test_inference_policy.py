"""ONNX Runtime's threading policy: the server's sessions do not spin by default (bench/RESULTS.md § Reliability
shows why), and the contention benchmark that chose it still runs."""

from __future__ import annotations

import numpy as np
import pytest

from bench.bench_contention import POLICIES, latency_rows
from export.cache import ExportCache
from export.runtime import CPU
from server.inference import Engine, InferenceConfig

SPIN = "session.intra_op.allow_spinning"


@pytest.mark.parametrize(("config", "expected"), [(InferenceConfig(), "0"), (InferenceConfig(spinning=True), None)])
def test_served_sessions_do_not_spin_unless_asked(zoo, tmp_path, config, expected):
    engine = Engine(zoo, ExportCache(tmp_path), config, providers=([CPU], "test"))
    entry = zoo.entries[0]
    x = np.zeros((1, 1, 28, 28), np.float32)
    assert engine.logits(entry, x).shape == (1, 10)
    options = engine.sessions.get(entry.id).get_session_options()
    try:
        spinning = options.get_session_config_entry(SPIN)
    except RuntimeError:  # not set: ORT's default, spinning
        spinning = None
    assert spinning == expected


def test_contention_benchmark_measures_every_policy_with_and_without_a_burner(zoo, tmp_path):
    rows = latency_rows(zoo, ExportCache(tmp_path), n_burners=1, rounds=1)
    assert len(rows) == 2 * (len(POLICIES) + 1)
    assert all(float(row.split("|")[3]) > 0 for row in rows)
