"""Zoos shown beside the served ones, for comparison only (`python -m server --compare-zoo`): their entries and
Pareto fronts appear in GET /api/zoo and the UI's Pareto plot; budgets, downloads and predictions never use them.
Imports nothing heavy: `python -m server` checks them before it loads the serving stack."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoo.catalog import Catalog
    from zoo.store import Zoo

MAX_COMPARE_ZOOS = 4  # each gets its own colour and marker in the Pareto plot (server.ui.COMPARE_STYLES)


def compare_problem(served: Catalog, other: Zoo) -> str | None:
    """Why `other` cannot be shown beside the served zoos (None: it can): top-1 on another dataset is no comparison
    (they share one: `zoo.catalog.serving_problem`)."""
    from zoo.catalog import dataset_problem  # torch is loaded by now: the zoos are

    return dataset_problem(served.zoos[0], other)
