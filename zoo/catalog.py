"""Several zoos chosen from as one (`python -m server --zoo A --zoo B`): a budget, the Pareto front and
`equivalent_cheaper` rank the entries of every zoo together, by one accuracy, with the functions a single zoo's own
methods use (zoo.store's `best_within`, `pareto_front`, `cheaper_within`); everything done with one entry (its
subnet, export, preprocessing, latency) is done by the zoo it came from (`zoo_of`).

Zoos chosen from together must have been measured alike: on the same dataset with the same classes, and their entry
ids must differ (an id names one entry across them). Which accuracy chooses is one for all: validation top-1 where
every zoo records it, else test top-1 for all of them (a validation number beside a test number is no ranking), and
`choice_text` says so. A catalog of one zoo chooses exactly as that zoo does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from zoo.stats import wilson_interval
from zoo.store import (
    SIZES_COMMANDS,
    LatencyOf,
    Limits,
    Variant,
    Zoo,
    ZooEntry,
    best_variant_within,
    best_within,
    cheaper_within,
    pareto_front,
)


def dataset_problem(first: Zoo, other: Zoo) -> str | None:
    """Why `other`'s top-1 cannot be set beside `first`'s (None: it can): top-1 on another dataset is no comparison."""
    mine, theirs = first.doc.get("dataset"), other.doc.get("dataset")
    if mine != theirs:
        return (f"zoo {other.name} was evaluated on {theirs or 'an unrecorded dataset'}, the served zoo {first.name} "
                f"on {mine or 'an unrecorded dataset'}: their accuracies are not comparable")
    return None


def serving_problem(first: Zoo, other: Zoo) -> str | None:
    """Why `other` cannot be served beside `first` (None: it can): another dataset, or other classes (a prediction's
    label would depend on which zoo the chosen entry came from)."""
    if problem := dataset_problem(first, other):
        return problem
    if other.classes != first.classes:
        return (f"zoo {other.name} has other classes than zoo {first.name} ({len(other.classes)} vs "
                f"{len(first.classes)}, or in another order): zoos served together must share their classes")
    return None


def named(zoos: Sequence[Zoo]) -> str:
    """'zoo a' or 'zoos a, b', as messages name the zoos they speak of."""
    return f"zoo{'s' if len(zoos) > 1 else ''} {', '.join(z.name for z in zoos)}"


class Catalog:
    """The entries of several loaded zoos, looked up by id and chosen from as one set (see the module's docstring)."""

    def __init__(self, zoos: Sequence[Zoo]) -> None:
        """ValueError, in one line, for no zoo, zoos that cannot be served together (`serving_problem`), or an entry
        id that two of them hold."""
        if not zoos:
            raise ValueError("a catalog needs at least one zoo")
        for other in zoos[1:]:
            if problem := serving_problem(zoos[0], other):
                raise ValueError(problem)
        owner: dict[str, Zoo] = {}
        for zoo in zoos:
            for e in zoo.entries:
                if e.id in owner:
                    raise ValueError(f"entry id {e.id} is in zoo {owner[e.id].name} ({owner[e.id].root}) and in zoo "
                                     f"{zoo.name} ({zoo.root}): an id must name one entry across the served zoos")
                owner[e.id] = zoo
        self.zoos, self._owner = tuple(zoos), owner

    @classmethod
    def of(cls, served: Zoo | Catalog) -> Catalog:
        """A catalog as given, or one of a single zoo."""
        return served if isinstance(served, Catalog) else cls([served])

    # -- identity and lookup ---------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The zoos' names, 'ladder-fmnist + hytra-fmnist' (one zoo: its name)."""
        return " + ".join(z.name for z in self.zoos)

    @property
    def checksum(self) -> str:
        """Identity of the content served: the zoo's sha256 for one zoo, else the sha256 of theirs in order."""
        if len(self.zoos) == 1:
            return self.zoos[0].checksum
        return hashlib.sha256("\n".join(z.checksum for z in self.zoos).encode()).hexdigest()

    @property
    def entries(self) -> list[ZooEntry]:
        """Every zoo's entries, zoo by zoo in the order given."""
        return [e for z in self.zoos for e in z.entries]

    @property
    def classes(self) -> list[str]:
        return self.zoos[0].classes  # shared (`serving_problem`)

    def entry(self, entry_id: str) -> ZooEntry:
        """The entry with this id in whichever zoo holds it (KeyError naming the zoos and their ids)."""
        if entry_id not in self._owner:
            raise KeyError(f"no entry '{entry_id}' in {named(self.zoos)}; ids: {', '.join(e.id for e in self.entries)}")
        return self._owner[entry_id].entry(entry_id)

    def zoo_of(self, entry: ZooEntry) -> Zoo:
        """The zoo an entry of this catalog came from: the one to export, preprocess and describe it with."""
        return self._owner[entry.id]

    def top1_interval(self, entry: ZooEntry) -> tuple[float, float] | None:
        return self.zoo_of(entry).top1_interval(entry)

    # -- which accuracy chooses ------------------------------------------------------------------
    @property
    def by_validation(self) -> bool:
        """Whether validation top-1 chooses: only where every zoo records it."""
        return all(z.validation for z in self.zoos)

    def _without_validation(self) -> list[Zoo]:
        return [z for z in self.zoos if not z.validation]

    @property
    def chosen_by(self) -> str:
        """As `Zoo.chosen_by`: "validation", or test, with the zoos that record no validation accuracy."""
        if self.by_validation or len(self.zoos) == 1:
            return self.zoos[0].chosen_by
        return f"test (no validation accuracy in {named(self._without_validation())})"

    def choice_top1(self, entry: ZooEntry) -> float | None:
        """The top-1 that ranks every entry of every zoo (`Zoo.choice_top1`, with the split all zoos share)."""
        return entry.val_top1 if self.by_validation else entry.top1

    def choice_split(self, entry: ZooEntry) -> tuple[str, int | None]:
        """The split whose top-1 chooses and how many images of the entry's zoo it was measured on."""
        zoo = self.zoo_of(entry)
        return ("validation", zoo.validation["images"]) if self.by_validation else ("test", zoo.eval_images)

    def choice_interval(self, entry: ZooEntry) -> tuple[float, float] | None:
        """95% Wilson interval of `choice_top1` on the images it was measured on (None where either is unknown)."""
        top1, images = self.choice_top1(entry), self.choice_split(entry)[1]
        return None if top1 is None or images is None else wilson_interval(top1, images)

    def choice_text(self) -> str:
        """Which accuracy chose and which is reported, in one phrase (`Zoo.choice_text`; each zoo's where they
        differ, and why test chooses for all where one zoo records no validation accuracy)."""
        if not self.by_validation and len(self.zoos) > 1:
            return (f"entries of all {len(self.zoos)} zoos chosen on test top-1, the one split every zoo records "
                    f"(no validation accuracy in {named(self._without_validation())}), which makes the chosen entry's "
                    f"reported test top-1 optimistic")
        texts = {z.name: z.choice_text() for z in self.zoos}
        if len(set(texts.values())) == 1:
            return texts[self.zoos[0].name]
        return "; ".join(f"{name}: {text}" for name, text in texts.items())

    # -- queries over every zoo ------------------------------------------------------------------
    def pareto(self, by: str = "params") -> list[ZooEntry]:
        """One front over the entries of every zoo (`Zoo.pareto`)."""
        return pareto_front(self.entries, self.choice_top1, by)

    def equivalent_cheaper(self, entry: ZooEntry, by: str = "params") -> list[ZooEntry]:
        """Cheaper entries of any zoo whose choosing top-1 lies within `entry`'s 95% interval
        (`Zoo.equivalent_cheaper`)."""
        return cheaper_within(self.entries, self.choice_top1, self.choice_interval(entry), entry, by)

    def query(self, max_params: str | float | None = None, max_flops: str | float | None = None,
              max_latency_ms: str | float | None = None, latency_of: LatencyOf | None = None) -> ZooEntry:
        """The most accurate entry of any zoo within every limit, ties to the smaller one (`Zoo.query`)."""
        def profile(missing: list[str]) -> str:
            lacking = [z for z in self.zoos if any(e.id in missing for e in z.entries)]
            return " and ".join(f"`prezoo profile --zoo {z.root}`" for z in lacking)

        return best_within(self.entries, self.choice_top1, Limits(max_params, max_flops, max_latency_ms, latency_of),
                           named(self.zoos), profile)

    def choice_variant_top1(self, variant: Variant) -> float | None:
        """`choice_top1` of a variant's file (the split every zoo shares)."""
        return variant.val_top1 if self.by_validation else variant.top1

    def query_variant(self, max_bytes: str | float, max_params: str | float | None = None,
                      max_flops: str | float | None = None, max_latency_ms: str | float | None = None,
                      latency_of: LatencyOf | None = None) -> tuple[ZooEntry, Variant]:
        """The most accurate (entry, variant) of any zoo whose served file fits `max_bytes` (`Zoo.query_variant`)."""
        def lacking(ids: list[str]) -> list[Zoo]:
            """The zoos of these entries ('ID' or 'ID/VARIANT')."""
            owners = {self._owner[i.split("/")[0]].root for i in ids}
            return [z for z in self.zoos if z.root in owners]

        return best_variant_within(
            self.entries, self.choice_variant_top1, Limits(max_params, max_flops, max_latency_ms, latency_of,
                                                           max_bytes), named(self.zoos),
            lambda ids: " and ".join(SIZES_COMMANDS.format(zoo=z.root) for z in lacking(ids)),
            lambda ids: " and ".join(f"`python -m export sizes --zoo {z.root} --latency`" for z in lacking(ids)))
