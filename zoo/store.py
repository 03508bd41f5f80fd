"""The zoo: a trained supernet plus an index of its preferred architectures with measured numbers.

A zoo is a directory (or a Hub model repo) holding the supernet of one model family (`zoo.family`):
- `zoo.json` — schema_version, the family (absent for a ViT zoo), name, space (+ hash), classes, preprocessing
  (img_size, in_chans, crop_pct, interpolation, mean, std), the FLOPs rule, the evaluation and latency protocols, the
  selector and training settings, the weight files with their sha256, and one entry per preferred
  arch: id, arch, params, flops, top1, top5 (and loss) on the test split, val_top1/val_top5 on the validation split
  where the zoo records one (`validation`: images its training held out), latency (median/p10/p90 ms, or null);
  optionally the bytes of its fp32 ONNX file and its `variants`, the same weights stored at fewer bytes (`Variant`).
- the supernet weights as safetensors (fp16 or fp32; always computed in fp32). A family whose paths need their own
  BatchNorm statistics (`Family.calibrate_bn`: HyTra) stores each entry's in the same file, as
  `paths.<entry id>.<key in the extracted module's state_dict>`: one file, one sha256, one unit with the weights.
  An entry fine-tuned standalone (`own_weights`, `python -m training tune`) stores its whole state_dict there the
  same way, and is served from it instead of the supernet's slice.

`zoo.json` is written last and atomically, so a directory with one is complete; loading checks the whole zoo, so
that a zoo that loads serves every request: the index against its schema (`zoo.schema`: every field, every entry
against the space and the cost model, the weight file inside the zoo folder), the weight file against its sha256, and
every tensor in it against the module that takes it (`load_weights`: the supernet's state and each entry's BatchNorm
statistics, none missing and none stray, each of its module's shape and exact dtype, finite, BatchNorm statistics in
range). A Hub zoo is pulled index first, then only the weight file the index names (`pull_zoo`).
"""

from __future__ import annotations

import glob
import hashlib
import json
import sysconfig
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as save_safetensors

from zoo.budget import human, parse_bytes, parse_count, parse_latency_ms
from zoo.family import DEFAULT_FAMILY, Arch, Family, Space, Supernet, get_family
from zoo.io import (
    atomic_write_bytes,
    atomic_write_text,
    clip,
    printable,
    quote,
    read_versioned_json,
    sha256_file,
    staged_folder,
)
from zoo.layers import bn_statistic_problem, bn_statistics, load_bn_statistics
from zoo.schema import (
    FP32,
    KIND,
    SCHEMA_VERSION,
    ZooError,
    check_index,
    files_boundary,
    preprocessing_problem,
    resolves_inside,
)
from zoo.stats import wilson_interval

INDEX = "zoo.json"


CHECKOUT_ZOOS = Path(__file__).resolve().parent.parent / "zoos"


def shipped_zoos() -> dict[str, Path]:
    """The zoos shipped with PreZoo, by name (`--zoo hytra-fmnist`): the checkout's `zoos/NAME`, else the copy a wheel
    installed under <prefix>/share/prezoo/zoos (pyproject.toml's data-files; a `--user` install puts it under the user
    base); for each name, the first of those that holds it."""
    installed = [Path(sysconfig.get_path("data", scheme)) / "share" / "prezoo" / "zoos"
                 for scheme in (sysconfig.get_default_scheme(), sysconfig.get_preferred_scheme("user"))]
    found: dict[str, Path] = {}
    for root in reversed([CHECKOUT_ZOOS, *installed]):  # the first root wins
        found.update({index.parent.name: index.parent for index in root.glob(f"*/{INDEX}")})
    return dict(sorted(found.items()))


def default_zoo() -> Path:
    """The zoo served when none is named: the shipped `ladder-fmnist` (its checkout path when it is nowhere)."""
    return shipped_zoos().get("ladder-fmnist", CHECKOUT_ZOOS / "ladder-fmnist")


DEFAULT_ZOO = default_zoo()
WEIGHTS = "supernet.safetensors"
PATHS = "paths."  # prefix of an entry's own BatchNorm statistics in the weights: paths.<entry id>.<key>
PathStats = Mapping[str, Mapping[str, torch.Tensor]]  # entry id -> its extracted module's BN buffers by key


def path_stats_key(entry_id: str, key: str) -> str:
    return f"{PATHS}{entry_id}.{key}"


def path_stats_owner(name: str) -> tuple[str, str] | None:
    """(entry id, key) of a weight file's tensor that is an entry's BatchNorm statistics (ids hold no dots), else
    None."""
    if not name.startswith(PATHS):
        return None
    entry_id, _, key = name.removeprefix(PATHS).partition(".")
    return entry_id, key


def split_path_stats(tensors: Iterable[tuple[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """(the supernet's state, {entry id: {key: statistics}}) of a zoo's weight file."""
    state: dict[str, torch.Tensor] = {}
    paths: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in tensors:
        if owner := path_stats_owner(name):
            paths.setdefault(owner[0], {})[owner[1]] = t
        else:
            state[name] = t
    return state, paths


class BudgetError(ValueError):
    """No entry fits the budget; `nearest` holds the entries closest to fitting."""

    def __init__(self, message: str, nearest: list[ZooEntry]) -> None:
        super().__init__(message)
        self.nearest = nearest


class LatencyUnknownError(BudgetError):
    """A latency budget, but `missing` entries have no measured latency to compare with it."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message, [])
        self.missing = missing


class SizesUnknownError(BudgetError):
    """A bytes budget, but `missing` entries have no measured file bytes to compare with it."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message, [])
        self.missing = missing


class VariantBudgetError(BudgetError):
    """No (entry, variant) fits a bytes budget; `nearest_variants` holds the pairs closest to fitting."""

    def __init__(self, message: str, nearest: list[tuple[ZooEntry, Variant]]) -> None:
        super().__init__(message, list({e.id: e for e, _ in nearest}.values()))
        self.nearest_variants = nearest


LatencyOf = Callable[["ZooEntry"], float | None]  # an entry's median latency (ms) as a budget reads it
CHOSEN_ON_TEST = "test (this zoo records no validation accuracy)"
SIZES_COMMANDS = "`python -m training variants --zoo {zoo}` (the variants' accuracy), then `python -m export sizes " \
                 "--zoo {zoo}` (every file's bytes)"


@dataclass(frozen=True)
class Variant:
    """An ONNX file of an entry: its own fp32 one (`FP32`, `bits` None: the entry's numbers) or its weights stored at
    the widths of a precision map (`zoo.precision`), with that file's accuracy, measured bytes and latency."""

    name: str
    bits: Mapping[str, int] | None
    origin: str
    top1: float | None
    top5: float | None
    val_top1: float | None
    val_top5: float | None
    file_bytes: int | None = None
    latency: dict[str, float] | None = None

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency is None else self.latency["median_ms"]

    @property
    def digest(self) -> str:
        """What the file holds besides the entry: its map (12 hex digits of its sha256; the export cache's key)."""
        return hashlib.sha256(json.dumps(self.bits, sort_keys=True).encode()).hexdigest()[:12]

    def to_dict(self) -> dict[str, Any]:
        """The index's variant (never the fp32 one: that is the entry)."""
        measured = {k: v for k, v in (("file_bytes", self.file_bytes), ("latency", self.latency)) if v is not None}
        return {"bits": dict(self.bits or {}), "origin": self.origin, "top1": self.top1, "top5": self.top5,
                "val_top1": self.val_top1, "val_top5": self.val_top5, **measured}


@dataclass(frozen=True)
class ZooEntry:
    arch: Arch
    params: int
    flops: int
    top1: float | None = None
    top5: float | None = None
    loss: float | None = None
    latency: dict[str, float] | None = None  # {"median_ms", "p10_ms", "p90_ms"}
    val_top1: float | None = None  # on the zoo's validation split, where it records one
    val_top5: float | None = None
    file_bytes: int | None = None  # its fp32 ONNX file's, as served (`python -m export sizes`)
    variants: Mapping[str, Variant] = field(default_factory=dict)  # by name; never FP32
    own_weights: bool = False  # fine-tuned standalone: its whole state_dict is stored, not sliced from the supernet

    @property
    def id(self) -> str:
        return self.arch.id

    @property
    def fp32(self) -> Variant:
        """The entry's own fp32 ONNX file as a variant: its numbers are the entry's."""
        return Variant(FP32, None, "the entry's fp32 ONNX file", self.top1, self.top5, self.val_top1, self.val_top5,
                       self.file_bytes, self.latency)

    def all_variants(self) -> list[Variant]:
        """Its fp32 file, then its stored variants."""
        return [self.fp32, *self.variants.values()]

    def variant(self, name: str) -> Variant:
        """The variant of this name (FP32: the entry's own file); KeyError naming the entry's."""
        found = {v.name: v for v in self.all_variants()}
        if name not in found:
            raise KeyError(f"entry {self.id} has no variant {quote(name)}; its variants: {', '.join(found)}")
        return found[name]

    @property
    def latency_ms(self) -> float | None:
        return None if self.latency is None else self.latency["median_ms"]

    def to_dict(self) -> dict[str, Any]:
        """The index's entry; validation accuracy only where measured, so a zoo without it reads as it always did."""
        val = {k: v for k, v in (("val_top1", self.val_top1), ("val_top5", self.val_top5)) if v is not None}
        sized = {"file_bytes": self.file_bytes} if self.file_bytes is not None else {}
        varied = {"variants": {n: v.to_dict() for n, v in self.variants.items()}} if self.variants else {}
        tuned = {"own_weights": True} if self.own_weights else {}
        return {"id": self.id, "arch": self.arch.to_dict(), "params": self.params, "flops": self.flops,
                "top1": self.top1, "top5": self.top5, **val, "loss": self.loss, "latency": self.latency, **sized,
                **varied, **tuned}


def write_zoo(out: str | Path, *, name: str, space: Space, state: dict[str, torch.Tensor],
              entries: list[ZooEntry], classes: list[str], preprocessing: dict[str, Any],
              weights_dtype: torch.dtype = torch.float32, family: str = DEFAULT_FAMILY,
              path_stats: PathStats | None = None, **extra: Any) -> Path:
    """Write a zoo directory as one unit: weights and `zoo.json` are written in a temp folder beside `out`, checked
    as `Zoo.load` checks them (ZooError naming the field), then swapped into place, so `out` is at every instant
    the old zoo or the new one, never a mix or a zoo that would not load. `weights_dtype` applies to floating-point
    tensors; integer ones (BatchNorm's batch counts) are kept as they are. `family` is recorded unless it is the
    default, so a ViT zoo's index reads as it did before families existed. `path_stats` holds each entry's BatchNorm
    statistics, which a family with `calibrate_bn` needs for every entry (and any other family for none), or, for an
    entry with `own_weights`, its whole state_dict."""
    out = Path(out)
    flops_rule = get_family(family).flops_rule
    if len(classes) != space.num_classes:
        raise ValueError(f"{len(classes)} class names for a space with {space.num_classes} classes")
    if problem := preprocessing_problem(preprocessing, space):
        raise ValueError(f"preprocessing: {problem}")
    if out.exists() and not out.is_dir():
        raise ValueError(f"refusing to replace {out}: it is not a folder")
    strays = sorted({p.name for p in out.iterdir()} - {INDEX, WEIGHTS}) if out.exists() else []
    if strays:
        raise ValueError(f"refusing to replace {out}: it holds files that are not a zoo's ({', '.join(strays[:5])})")
    with staged_folder(out) as tmp:
        stats = {path_stats_key(i, k): v for i, per_key in (path_stats or {}).items() for k, v in per_key.items()}
        tensors = {k: v.detach().to("cpu", weights_dtype if v.is_floating_point() else v.dtype).contiguous()
                   for k, v in {**state, **stats}.items()}
        atomic_write_bytes(tmp / WEIGHTS, save_safetensors(tensors))
        named_family = {} if family == DEFAULT_FAMILY else {"family": family}
        doc = {"schema_version": SCHEMA_VERSION, "kind": KIND, **named_family, "name": name,
               "space": space.to_dict(), "space_hash": space.hash, "classes": list(classes),
               "preprocessing": preprocessing, "flops_rule": flops_rule, **extra,
               "weights": {"file": WEIGHTS, "sha256": sha256_file(tmp / WEIGHTS), "dtype": str(weights_dtype)},
               "entries": [e.to_dict() for e in entries]}
        atomic_write_text(tmp / INDEX, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        Zoo.load(tmp)
    return out


class Zoo:
    """A loaded zoo, checked whole. Its supernet is shared: its forward passes and `extract` keep no state, so
    threads may use it at once."""

    def __init__(self, root: Path, doc: dict[str, Any], family: Family, space: Space, entries: list[ZooEntry],
                 supernet: Supernet, path_stats: PathStats) -> None:
        self.root, self.doc, self.family, self.space, self.entries = root, doc, family, space, entries
        self.supernet = supernet  # fp32, eval mode
        self.path_stats = path_stats  # by entry id: its BatchNorm statistics, or its whole state_dict if own_weights

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, source: str | Path) -> Zoo:
        """A zoo directory, or a Hub repo id ('org/name') pulled through the standard Hub cache."""
        path = Path(source)
        if not path.exists() and str(source) in (shipped := shipped_zoos()):
            path = shipped[str(source)]  # a shipped zoo by name
        if not path.exists():
            from zoo.pull import HubError, is_hub_id

            if not is_hub_id(str(source)):
                raise ZooError(f"no zoo at {source}: not a directory and not a Hub repo id like 'org/name' (the "
                               f"shipped zoos, by name: {', '.join(shipped) or 'none here'})")
            try:
                path = pull_zoo(str(source))
            except HubError as e:  # 'zoos/my-zoo' reads as a repo id too: say first that no such folder exists
                raise HubError(f"no zoo at {source}: no folder {path.absolute()}, and as a Hub repo id: {e}") from None
        index = path / INDEX
        if not index.is_file():
            raise ZooError(f"{path} is not a zoo: {INDEX} is missing")
        if not resolves_inside(index, files_boundary(path)):
            raise ZooError(f"{index} does not resolve inside the zoo folder {path}")
        doc = read_versioned_json(index, KIND, SCHEMA_VERSION, ZooError)
        family, space, checked = check_index(doc, index)
        weights = path / checked.weights.file  # checked: a file inside the zoo folder
        digest = sha256_file(weights)
        if digest != checked.weights.sha256:
            raise ZooError(f"{weights} does not match {index}: sha256 {digest[:16]}… but the index records "
                           f"{checked.weights.sha256[:16]}… (truncated, corrupt or replaced)")
        entries = [ZooEntry(e.arch, e.params, e.flops, e.top1, e.top5, e.loss, e.latency and e.latency.model_dump(),
                            e.val_top1, e.val_top5, e.file_bytes, _variants(e.variants), e.own_weights)
                   for e in checked.entries]
        return cls(path, doc, family, space, entries, *load_weights(weights, checked.weights.dtype, family, space,
                                                                    entries))

    # -- metadata ------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.doc["name"]

    @property
    def classes(self) -> list[str]:
        return self.doc["classes"]

    @property
    def preprocessing(self) -> dict[str, Any]:
        return self.doc["preprocessing"]

    @property
    def weights_dtype(self) -> torch.dtype:
        """The dtype its weight file stores floating-point tensors in (the index's weights.dtype)."""
        return getattr(torch, self.doc["weights"]["dtype"].removeprefix("torch."))

    @property
    def checksum(self) -> str:
        """Identity of this zoo's content: its weights' sha256 (the index names them)."""
        return self.doc["weights"]["sha256"]

    @property
    def eval_images(self) -> int | None:
        """How many test images each entry's top-1 was measured on (None for zoos that do not record it)."""
        return self.doc.get("eval_images")

    def latency_protocol_text(self) -> str | None:
        """How the zoo's latencies were measured, in one phrase (None when they were not): every place that shows a
        latency says it the same way."""
        p = self.doc.get("latency_protocol")
        return None if p is None else protocol_text(p)

    def top1_interval(self, entry: ZooEntry) -> tuple[float, float] | None:
        """95% Wilson interval of the entry's test top-1, in percent (None without a top-1 or a test-set size)."""
        if entry.top1 is None or self.eval_images is None:
            return None
        return wilson_interval(entry.top1, self.eval_images)

    # -- which accuracy chooses ----------------------------------------------------------------
    @property
    def validation(self) -> dict[str, Any] | None:
        """The validation split behind the entries' val_top1 (zoo.schema.Validation), None where none is recorded."""
        return self.doc.get("validation")

    @property
    def chosen_by(self) -> str:
        """Which accuracy chooses between entries: "validation", or test where the zoo records no validation."""
        return "validation" if self.validation else CHOSEN_ON_TEST

    def choice_top1(self, entry: ZooEntry) -> float | None:
        """The top-1 that ranks entries for budgets, the Pareto front and `equivalent_cheaper`: the validation one
        where the zoo records it (choosing on the test set would make the test number reported for the choice
        optimistic), else the test one. The one place that decides."""
        return entry.val_top1 if self.validation else entry.top1

    @property
    def choice_split(self) -> tuple[str, int | None]:
        """The split whose top-1 chooses ("validation" or "test") and how many images it was measured on."""
        return ("validation", self.validation["images"]) if self.validation else ("test", self.eval_images)

    def choice_interval(self, entry: ZooEntry) -> tuple[float, float] | None:
        """95% Wilson interval of `choice_top1` on the images it was measured on (None where either is unknown)."""
        top1, images = self.choice_top1(entry), self.choice_split[1]
        return None if top1 is None or images is None else wilson_interval(top1, images)

    def choice_text(self) -> str:
        """Which accuracy chose and which is reported, in one phrase for cards, the UI and logs."""
        if not self.validation:
            return ("entries chosen on test top-1 (this zoo records no validation accuracy), which makes the chosen "
                    "entry's reported test top-1 optimistic")
        v = self.validation
        return (f"entries chosen on validation top-1 ({v['images']:,} held-out {v['source']} training images, seed "
                f"{v['seed']}, never trained on); test top-1 reported")

    def equivalent_cheaper(self, entry: ZooEntry, by: str = "params") -> list[ZooEntry]:
        """Cheaper entries (by `by`) whose choosing top-1 (`choice_top1`) lies within `entry`'s 95% interval:
        statistically as good on those images, cheapest first. Empty when the zoo records no image count."""
        return cheaper_within(self.entries, self.choice_top1, self.choice_interval(entry), entry, by)

    def entry(self, entry_id: str) -> ZooEntry:
        for e in self.entries:
            if e.id == entry_id:
                return e
        raise KeyError(f"no entry '{entry_id}' in zoo {self.name}; ids: {', '.join(e.id for e in self.entries)}")

    # -- queries -------------------------------------------------------------------------------
    def pareto(self, by: str = "params") -> list[ZooEntry]:
        """Entries no other entry beats on both cost (`by`: params, flops or latency) and top-1 (`choice_top1`)."""
        return pareto_front(self.entries, self.choice_top1, by)

    def query(self, max_params: str | float | None = None, max_flops: str | float | None = None,
              max_latency_ms: str | float | None = None, latency_of: LatencyOf | None = None) -> ZooEntry:
        """The most accurate entry (by `choice_top1`) within every given limit (ties: the smaller one). `latency_of`
        says which latency a budget reads (default: the zoo's own; a server passes the numbers measured where it
        serves)."""
        return best_within(self.entries, self.choice_top1, Limits(max_params, max_flops, max_latency_ms, latency_of),
                           f"zoo {self.name}", lambda _: f"`prezoo profile --zoo {self.root}`")

    def choice_variant_top1(self, variant: Variant) -> float | None:
        """`choice_top1` of a variant's file."""
        return variant.val_top1 if self.validation else variant.top1

    def query_variant(self, max_bytes: str | float, max_params: str | float | None = None,
                      max_flops: str | float | None = None, max_latency_ms: str | float | None = None,
                      latency_of: LatencyOf | None = None) -> tuple[ZooEntry, Variant]:
        """The most accurate (entry, variant) whose served file fits `max_bytes` and whose entry fits the other
        limits (ties: the fewer bytes): `best_variant_within`."""
        return best_variant_within(self.entries, self.choice_variant_top1,
                                   Limits(max_params, max_flops, max_latency_ms, latency_of, max_bytes),
                                   f"zoo {self.name}", lambda _: SIZES_COMMANDS.format(zoo=self.root),
                                   lambda _: f"`python -m export sizes --zoo {self.root} --latency`")

    def subnet(self, entry_or_arch: ZooEntry | Arch | str) -> torch.nn.Module:
        """The standalone model (exact weights, eval mode) of an entry, an entry id, or any arch.

        An entry with `own_weights` gets its stored state_dict (checked at load), not the supernet's slice. A family
        with `calibrate_bn` gets the entry's stored BatchNorm statistics (checked at load). Its arch that is
        no entry is refused (ValueError): its statistics would have to be recalibrated on training images, which a
        zoo does not hold, and the supernet's shared ones fit no path, so the model would answer, but wrongly."""
        if isinstance(entry_or_arch, str):
            arch = self.entry(entry_or_arch).arch
        elif isinstance(entry_or_arch, ZooEntry):
            arch = entry_or_arch.arch
        else:
            arch = self.space.validate(entry_or_arch)
        if arch.id in self.tuned:
            module = self.supernet.extract(arch)  # a fresh module: loading into it leaves the supernet as it is
            module.load_state_dict(self.path_stats[arch.id], strict=True)
            return module.eval()
        if not self.family.calibrate_bn:
            return self.supernet.extract(arch)
        if arch.id not in {e.id for e in self.entries}:
            raise ValueError(f"{arch.id} is not an entry of zoo {self.name}: a {self.family.title} path needs "
                             f"BatchNorm statistics of its own, recalibrated on training images, which the zoo holds "
                             f"for its entries only; pick an entry, or recalibrate `zoo.supernet.extract(arch)` on "
                             f"your training images (zoo.layers.recalibrate_bn)")
        return load_bn_statistics(self.supernet.extract(arch), self.path_stats[arch.id])

    def weights_text(self, entry: ZooEntry) -> str:
        """Where an entry's weights come from, in one phrase (model cards, the UI)."""
        if not entry.own_weights:
            return "weights inherited from the one-shot supernet, no retraining"
        epochs = (self.doc["tuning"].get("recipe") or {}).get("epochs")
        return (f"weights inherited from the one-shot supernet, then fine-tuned standalone"
                f"{f' for {epochs} epochs' if isinstance(epochs, int) else ''} (`python -m training tune`)")

    @property
    def tuned(self) -> frozenset[str]:
        """The ids of the entries with weights of their own (`own_weights`)."""
        return frozenset(e.id for e in self.entries if e.own_weights)

    def with_latency(self, latencies: dict[str, dict[str, float]], protocol: dict[str, Any]) -> None:
        """Record measured latencies (by entry id) in the index, rewriting `zoo.json` atomically."""
        self._rewrite([replace(e, latency=latencies.get(e.id, e.latency)) for e in self.entries],
                      latency_protocol=protocol)

    def with_validation(self, validation: dict[str, Any], accuracy: Mapping[str, tuple[float, float]]) -> None:
        """Record every entry's validation (top-1, top-5) (by entry id) and the split they were measured on
        (`zoo.schema.Validation`), rewriting `zoo.json` atomically; the schema refuses a split that the zoo's
        training did not hold out. Nothing else changes."""
        if missing := [e.id for e in self.entries if e.id not in accuracy]:
            raise ValueError(f"no validation accuracy for entr{'y' if len(missing) == 1 else 'ies'} "
                             f"{', '.join(missing)} of zoo {self.name}")
        self._rewrite([replace(e, val_top1=accuracy[e.id][0], val_top5=accuracy[e.id][1]) for e in self.entries],
                      validation=validation)

    def with_variants(self, variants: Mapping[str, Mapping[str, Variant]], protocol: dict[str, Any]) -> None:
        """Record each entry's variants (by entry id; an entry not named keeps its own), rewriting `zoo.json`
        atomically; a variant whose map is unchanged keeps its measured bytes and latency, any other needs
        `python -m export sizes` again. `protocol`: how their accuracy was measured (the `variants` block)."""
        if not self.validation:
            raise ValueError(f"zoo {self.name} records no validation accuracy, which chooses among variants: run "
                             f"`python -m training evaluate --zoo {self.root} --split val --write` first")
        entries = [replace(e, variants={n: _kept(e.variants.get(n), v) for n, v in variants[e.id].items()})
                   if e.id in variants else e for e in self.entries]
        self._rewrite(entries, variants={**(self.doc.get("variants") or {}), "accuracy": protocol})

    def with_sizes(self, sizes: Mapping[str, Mapping[str, int]], protocol: dict[str, Any],
                   latencies: Mapping[str, Mapping[str, dict[str, float]]] | None = None) -> None:
        """Record file bytes (entry id -> variant name (FP32: the entry's own file) -> bytes) and, where given, the
        variants' latencies, rewriting `zoo.json` atomically. `protocol`: how (the `variants` block's `sizes`)."""
        def sized(e: ZooEntry) -> ZooEntry:
            got, timed = sizes.get(e.id, {}), (latencies or {}).get(e.id, {})
            variants = {n: replace(v, file_bytes=got.get(n, v.file_bytes), latency=timed.get(n, v.latency))
                        for n, v in e.variants.items()}
            return replace(e, file_bytes=got.get(FP32, e.file_bytes), variants=variants)

        self._rewrite([sized(e) for e in self.entries], variants={**(self.doc.get("variants") or {}),
                                                                  "sizes": protocol})

    def with_own_weights(self, states: Mapping[str, Mapping[str, torch.Tensor]],
                         accuracy: Mapping[str, tuple[float, float, float, float, float]],
                         tuning: dict[str, Any], validation: dict[str, Any]) -> Zoo:
        """Store fine-tuned models (by entry id: its state_dict, and (test top-1, top-5, loss, validation top-1,
        top-5) measured with it as stored) with the weights, rewriting the zoo as one unit (`write_zoo`); the zoo
        reloaded. Their variants and file sizes are dropped (other weights: rerun `training variants` and `export
        sizes`), their latencies kept (the same graph). `tuning`: how they were tuned (the index's block);
        `validation`: the split their validation accuracy was measured on (`zoo.schema.Validation`)."""
        if unknown := sorted(states.keys() - {e.id for e in self.entries}):
            raise ValueError(f"{unknown[0]} is not an entry of zoo {self.name}")
        if states.keys() != accuracy.keys():
            raise ValueError("every tuned entry needs its accuracy, and only those")
        entries = [replace(e, top1=a[0], top5=a[1], loss=a[2], val_top1=a[3], val_top5=a[4], file_bytes=None,
                           variants={}, own_weights=True) if (a := accuracy.get(e.id)) else e for e in self.entries]
        written = {"schema_version", "kind", "family", "name", "space", "space_hash", "classes", "preprocessing",
                   "flops_rule", "weights", "entries"}
        kept = {k: v for k, v in self.doc.items() if k not in written and (k != "variants" or
                                                                              any(e.variants for e in entries))}
        write_zoo(self.root, name=self.name, space=self.space, state=self.supernet.state_dict(), entries=entries,
                  classes=self.classes, preprocessing=self.preprocessing,
                  weights_dtype=self.weights_dtype,
                  family=self.family.name, path_stats={**self.path_stats, **states},
                  **{**kept, "tuning": tuning, "validation": validation})
        return Zoo.load(self.root)

    def _rewrite(self, entries: list[ZooEntry], **fields: Any) -> None:
        """`zoo.json` with these entries and top-level fields, checked as a load checks it, then written atomically
        (a ZooError leaves the zoo as it was)."""
        doc = {**self.doc, **fields, "entries": [e.to_dict() for e in entries]}
        check_index(doc, self.root / INDEX)  # never write an index that would not load
        atomic_write_text(self.root / INDEX, json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        self.doc, self.entries = doc, entries


def _variants(checked: Mapping[str, Any] | None) -> dict[str, Variant]:
    """The index's checked variants (zoo.schema.Variant) as `Variant`s."""
    return {name: Variant(name, dict(v.bits), v.origin, v.top1, v.top5, v.val_top1, v.val_top5, v.file_bytes,
                          v.latency and v.latency.model_dump()) for name, v in (checked or {}).items()}


def _kept(old: Variant | None, new: Variant) -> Variant:
    """`new`, with `old`'s measured bytes and latency where its file is the same (the same map)."""
    if old is None or old.digest != new.digest:
        return new
    return replace(new, file_bytes=old.file_bytes, latency=old.latency)


Top1Of = Callable[[ZooEntry], float | None]  # the accuracy that ranks entries (`Zoo.choice_top1`)


@dataclass(frozen=True)
class Limits:
    """A budget's limits as `Zoo.query` takes them: as given (numbers or '0.3M', '2ms'; None: no limit), and which
    latency it reads (None: each entry's recorded one)."""

    max_params: str | float | None = None
    max_flops: str | float | None = None
    max_latency_ms: str | float | None = None
    latency_of: LatencyOf | None = None
    max_bytes: str | float | None = None  # the served ONNX file's bytes: chooses an (entry, variant) pair


def pareto_front(entries: list[ZooEntry], top1: Top1Of, by: str = "params") -> list[ZooEntry]:
    """The entries no other one beats on both cost (`by`) and `top1`, cheapest first: a zoo's front, or one front
    over several zoos (zoo.catalog)."""
    cost = _cost_fn(by)
    scored = [e for e in entries if top1(e) is not None and cost(e) is not None]
    front = [e for e in scored
             if not any(cost(o) <= cost(e) and top1(o) >= top1(e) and (cost(o), top1(o)) != (cost(e), top1(e))
                        for o in scored)]
    return sorted(front, key=cost)


def cheaper_within(entries: list[ZooEntry], top1: Top1Of, interval: tuple[float, float] | None, entry: ZooEntry,
                   by: str = "params") -> list[ZooEntry]:
    """Entries cheaper than `entry` (by `by`) whose `top1` lies within its 95% `interval` (None: none), cheapest
    first."""
    cost = _cost_fn(by)
    if interval is None:
        return []
    return sorted((e for e in entries if top1(e) is not None and cost(e) is not None
                   and cost(e) < cost(entry) and top1(e) >= interval[0]), key=cost)


def parsed_limits(asked: Limits) -> dict[str, float | None]:
    """Every limit `asked`, parsed (ValueError naming a bad one); None where it is not asked."""
    return {"params": parse_count(asked.max_params, "max_params"),
            "flops": parse_count(asked.max_flops, "max_flops"), "latency": parse_latency_ms(asked.max_latency_ms),
            "bytes": parse_bytes(asked.max_bytes)}


def excess_over(costs: Mapping[str, Callable[[Any], float]], limits: Mapping[str, float | None]
                ) -> Callable[[Any], float]:
    """How far an item is over the limits (relative, summed over the limits asked that `costs` prices): 0 when it
    fits."""
    return lambda item: sum(max(0.0, costs[k](item) / v - 1) for k, v in limits.items()
                            if v is not None and k in costs)


def asked_text(limits: Mapping[str, float | None]) -> str:
    return ", ".join(f"max_{k}={human(v) if k != 'latency' else f'{v:g}ms'}"
                     for k, v in limits.items() if v is not None) or "no limit"


def best_within(entries: list[ZooEntry], top1: Top1Of, asked: Limits, where: str,
                profile: Callable[[list[str]], str]) -> ZooEntry:
    """The most accurate entry by `top1` within every limit `asked` but bytes (ties: the smaller one), else
    BudgetError with the nearest entries; LatencyUnknownError for a latency budget while an entry has no latency.
    `where` names the entries in messages ("zoo NAME"); `profile` says which command measures the missing
    latencies (by id)."""
    limits = {k: v for k, v in parsed_limits(asked).items() if k != "bytes"}
    costs = {"params": _cost_fn("params"), "flops": _cost_fn("flops"),
             "latency": asked.latency_of or _cost_fn("latency")}
    missing = [e.id for e in entries if costs["latency"](e) is None]
    if limits["latency"] is not None and missing:
        raise LatencyUnknownError(f"{where} has no measured latency for every entry ({len(missing)} of "
                                  f"{len(entries)} lack one); run {profile(missing)} first", missing)
    excess = excess_over(costs, limits)
    fits = [e for e in entries if excess(e) == 0]
    if fits:
        return max(fits, key=lambda e: (-1 if top1(e) is None else top1(e), -e.params))
    nearest = sorted(entries, key=excess)[:3]
    options = "; ".join(f"{e.id} ({human(e.params)} params, {human(e.flops)} FLOPs"
                        + (f", {costs['latency'](e):.2f} ms" if costs["latency"](e) is not None else "") + ")"
                        for e in nearest)
    raise BudgetError(f"no entry of {where} fits {asked_text(limits)}; nearest: {options}", nearest)


VariantTop1Of = Callable[[Variant], float | None]  # the accuracy that ranks variants (validation where recorded)


def best_variant_within(entries: list[ZooEntry], top1: VariantTop1Of, asked: Limits, where: str,
                        sizes: Callable[[list[str]], str], profile: Callable[[list[str]], str]
                        ) -> tuple[ZooEntry, Variant]:
    """The most accurate (entry, variant) pair by `top1` whose recorded file bytes fit `asked.max_bytes` and whose
    entry fits every other limit (latency: the variant's own; the fp32 file's is the entry's, `latency_of`), ties to
    the fewer bytes; else VariantBudgetError with the nearest pairs. SizesUnknownError while an entry has no measured
    file bytes (`sizes` names the commands that measure them, by entry id); LatencyUnknownError for a latency limit
    while a pair has no latency (`profile`)."""
    limits = parsed_limits(asked)
    if unsized := [e.id for e in entries if e.file_bytes is None]:
        raise SizesUnknownError(f"{where}: {len(unsized)} of {len(entries)} entries have no measured file bytes, "
                                f"which a bytes budget compares; run {sizes(unsized)}", unsized)
    entry_latency = asked.latency_of or _cost_fn("latency")
    costs = {"params": lambda p: p[0].params, "flops": lambda p: p[0].flops,
             "latency": lambda p: entry_latency(p[0]) if p[1].name == FP32 else p[1].latency_ms,
             "bytes": lambda p: p[1].file_bytes}
    pairs = [(e, v) for e in entries for v in e.all_variants() if v.file_bytes is not None]
    if limits["latency"] is not None and (untimed := [f"{e.id}/{v.name}" for e, v in pairs
                                                       if costs["latency"]((e, v)) is None]):
        raise LatencyUnknownError(f"{where} has no measured latency for {len(untimed)} of its {len(pairs)} files "
                                  f"(e.g. {untimed[0]}); run {profile(untimed)} first", untimed)
    excess = excess_over(costs, limits)
    if fits := [p for p in pairs if excess(p) == 0]:
        return max(fits, key=lambda p: (-1 if top1(p[1]) is None else top1(p[1]), -p[1].file_bytes))
    nearest = sorted(pairs, key=excess)[:3]
    options = "; ".join(f"{e.id} {v.name} ({human(v.file_bytes)} bytes, {human(e.params)} params)"
                        for e, v in nearest)
    raise VariantBudgetError(f"no file of {where} fits {asked_text(limits)}; nearest: {options}", nearest)


def protocol_text(p: dict[str, Any]) -> str:
    """A latency protocol (`prezoo profile`'s, or a server's own) in one phrase: how, with what, where, when.
    Protocols written before hosts were recorded name only the machine type (`device`)."""
    where = f" on {p['host']}" if p.get("host") else f" on {p.get('device', '?')}"
    when = f", measured {p['measured_at']}" if p.get("measured_at") else ""
    return (f"{p.get('statistic', 'median').split(',')[0]} of {p.get('runs', '?')} runs after "
            f"{p.get('warmup', '?')} warm-up, batch {p.get('batch', '?')}, {p.get('threads', '?')} threads, "
            f"{p.get('engine', '?')}{where}{when}")


def pull_zoo(repo_id: str) -> Path:
    """The snapshot of a zoo's Hub repo: zoo.json first, then only the weight file it names (at the same commit), so
    that whatever else the repo holds is never downloaded. Pulls are capped in size (`zoo.pull.HubLimits`)."""
    from zoo.pull import pull

    index_only = pull(repo_id, allow_patterns=[INDEX])
    named = weight_file_named(index_only / INDEX)
    return pull(repo_id, revision=index_only.name, allow_patterns=[INDEX, *named]) if named else index_only


def weight_file_named(index: Path) -> list[str]:
    """The weight file an index not yet checked names, as an exact pattern (nothing when it names none: `Zoo.load`
    then says what is wrong)."""
    if not index.is_file():
        return []
    weights = read_versioned_json(index, KIND, SCHEMA_VERSION, ZooError).get("weights")
    name = weights.get("file") if isinstance(weights, dict) else None
    return [glob.escape(name)] if isinstance(name, str) and name else []


def load_weights(weights: Path, dtype: str, family: Family, space: Space,
                 entries: list[ZooEntry]) -> tuple[Supernet, PathStats]:
    """The supernet holding a zoo's weights (fp32, eval mode) and each entry's BatchNorm statistics, or ZooError
    naming the file and the first tensor that is missing, stray or wrong (`WeightSpec`): a zoo is checked whole when
    it loads, never found broken by a request. `dtype` is the index's weights.dtype."""
    supernet = family.supernet(space)
    spec = WeightSpec.of(supernet, family, space, entries, dtype)
    tensors = dict(checked_tensors(weights, spec))
    if missing := [name for name in spec.own if name not in tensors]:
        raise ZooError(f"{weights}: {spec.missing(missing)}")
    state, path_stats = split_path_stats(tensors.items())
    supernet.load_state_dict(state, strict=True)  # copies, casting fp16 to the module's fp32; keys and shapes checked
    # off the memory map too, so that what was checked is what serves whatever later happens to the file
    return supernet.eval(), {i: {k: t.clone() for k, t in stats.items()} for i, stats in path_stats.items()}


@dataclass(frozen=True)
class WeightSpec:
    """What a zoo's weight file must hold, as the modules that take it hold it: each tensor by name (`own`: its
    shape and dtype), which of them are BatchNorm statistics, and `dtype`, the index's for every floating-point one.
    Each method says what is wrong in a phrase that follows the file's name."""

    family: Family
    space: Space
    own: dict[str, torch.Tensor]
    statistics: frozenset[str]
    dtype: str
    entry_ids: frozenset[str]
    tuned: frozenset[str]  # the entries with own weights

    @classmethod
    def of(cls, supernet: Supernet, family: Family, space: Space, entries: list[ZooEntry], dtype: str) -> WeightSpec:
        """The supernet's state and, as each entry's extracted module has them, the whole state_dict of each entry
        with own weights and, for a family with `calibrate_bn`, every other entry's BatchNorm statistics."""
        own, statistics = dict(supernet.state_dict()), set(bn_statistics(supernet))
        for entry in entries:
            if not (entry.own_weights or family.calibrate_bn):
                continue
            module = supernet.extract(entry.arch)
            stored = module.state_dict() if entry.own_weights else bn_statistics(module)
            own.update({path_stats_key(entry.id, key): t for key, t in stored.items()})
            statistics.update(path_stats_key(entry.id, key) for key in bn_statistics(module))
        return cls(family, space, own, frozenset(statistics), dtype, frozenset(e.id for e in entries),
                   frozenset(e.id for e in entries if e.own_weights))

    def problem(self, name: str, tensor: torch.Tensor) -> str | None:
        """Why a stored tensor of a known name cannot be its module's, or None. Dtypes are exact, never cast: the
        index's where the module computes in floating point (always fp32), the module's own elsewhere (BatchNorm's
        batch count: int64)."""
        own = self.own[name]
        expected = self.dtype if own.is_floating_point() else str(own.dtype)
        if str(tensor.dtype) != expected:
            why = "the index's weights.dtype" if own.is_floating_point() else "its module's"
            return f"tensor {quote(name)} is {tensor.dtype}, expected {expected} ({why})"
        if tensor.shape != own.shape:
            shapes = f"of shape {tuple(tensor.shape)}, the model's is {tuple(own.shape)}"
            if owner := path_stats_owner(name):
                return f"{self.unfit(owner[0])}: {self.what(owner[0])} {owner[1]} {shapes}"
            return f"tensor {quote(name)} {shapes}"
        values = tensor.numpy()  # numpy: ~30x faster than torch.isfinite here
        if not np.isfinite(values).all():  # NaN would answer every prediction
            return f"tensor {quote(name)} holds NaN or infinite values"
        problem = bn_statistic_problem(name, values) if name in self.statistics else None
        return problem and f"tensor {quote(name)} {problem}"

    def stray(self, name: str) -> str:
        """A tensor with no place in the modules, said of what its name claims it is."""
        owner = path_stats_owner(name)
        if owner is None:
            return f"tensor {quote(name)} is no part of the {self.family.title} supernet of space {self.space.name}"
        entry_id, key = (clip(printable(part)) for part in owner)
        if owner[0] in self.entry_ids:
            return f"{self.unfit(owner[0])}: {self.what(owner[0])} for {key}, which the model does not have"
        if self.family.calibrate_bn:
            return f"tensors {PATHS}{entry_id}.* are BatchNorm statistics of no entry of the index"
        return (f"tensors {PATHS}{entry_id}.* belong to no entry of the index with own weights (a "
                f"{self.family.title} zoo keeps no BatchNorm statistics)")

    def missing(self, names: list[str]) -> str:
        """What the first of the `names` the file lacks belongs to: the supernet, or an entry's statistics."""
        owner = path_stats_owner(names[0])
        if owner is None:
            more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
            return (f"tensor {quote(names[0])} of the {self.family.title} supernet of space {self.space.name} is "
                    f"missing{more}")
        entry_id, key = owner
        lacking = set(names)
        if not any(name.startswith(f"{PATHS}{entry_id}.") and name not in lacking for name in self.own):
            if entry_id in self.tuned:
                return (f"entry {entry_id} has no weights ({PATHS}{entry_id}.*), though the index says it has its own "
                        f"(own_weights)")
            return (f"entry {entry_id} has no BatchNorm statistics ({PATHS}{entry_id}.*): a {self.family.title} path "
                    f"needs its own, recalibrated at packaging")
        return f"{self.unfit(entry_id)}: no {self.what(entry_id)} for {key}"

    def what(self, entry_id: str) -> str:
        """What an entry's stored tensors are, in a message."""
        return "weights" if entry_id in self.tuned else "statistics"

    def unfit(self, entry_id: str) -> str:
        """How a problem with an entry's stored tensors begins: it names the entry, whichever tensor is wrong."""
        kind = "own weights" if entry_id in self.tuned else "BatchNorm statistics"
        return f"the {kind} of entry {clip(printable(entry_id))} do not fit its model"


def checked_tensors(weights: Path, spec: WeightSpec) -> Iterator[tuple[str, torch.Tensor]]:
    """The tensors of a safetensors file, read once, one at a time (memory-mapped), each checked against `spec`."""
    try:
        with safe_open(weights, framework="pt") as f:
            for name in f.keys():
                if name not in spec.own:
                    raise ZooError(f"{weights}: {spec.stray(name)}")
                tensor = f.get_tensor(name)
                if problem := spec.problem(name, tensor):
                    raise ZooError(f"{weights}: {problem}")
                yield name, tensor
    except ZooError:
        raise
    except Exception as e:  # safetensors raises its own types for damaged files
        raise ZooError(f"{weights} is not a readable safetensors file: {e}") from e


def _cost_fn(by: str):
    fns = {"params": lambda e: e.params, "flops": lambda e: e.flops, "latency": lambda e: e.latency_ms}
    if by not in fns:
        raise ValueError(f"cost must be one of {sorted(fns)}, got {by!r}")
    return fns[by]
