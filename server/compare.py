"""Zoos shown beside the served one, for comparison only (`python -m server --compare-zoo`): their entries and
Pareto fronts appear in GET /api/zoo and the UI's Pareto plot; budgets, downloads and predictions never use them.
Imports nothing heavy: `python -m server` checks them before it loads the serving stack."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zoo.store import Zoo

MAX_COMPARE_ZOOS = 4  # each gets its own colour and marker in the Pareto plot (server.ui.COMPARE_STYLES)


def compare_problem(served: Zoo, other: Zoo) -> str | None:
    """Why `other` cannot be shown beside `served` (None: it can): top-1 on another dataset is no comparison."""
    mine, theirs = served.doc.get("dataset"), other.doc.get("dataset")
    if mine != theirs:
        return (f"zoo {other.name} was evaluated on {theirs or 'an unrecorded dataset'}, the served zoo {served.name} "
                f"on {mine or 'an unrecorded dataset'}: their accuracies are not comparable")
    return None
