"""The zoo index `zoo.json`, schema version 1: one declarative model, checked in full when a zoo is loaded.

Each field has its JSON type and range below (strict: no "89.5" for 89.5, no true for 1; numbers finite; unknown
fields refused except at the top level, where `write_zoo(**extra)` adds free-form metadata). What depends on the
index's own search space (class count, preprocessing, each entry's arch, id, params and FLOPs) or on the zoo folder
(the weight file) is checked by validators that get both through the validation context, so the family (`zoo.family`:
the optional top-level "family", "vit" when absent) and its space are read first. `zoo.io.read_versioned_json` has
already bounded the file's size and nesting and made every number finite, free-form fields included. The first
problem becomes one message naming the field, e.g.
`entries[2].top1: Input should be less than or equal to 100, got 870.0`.

Accuracy: each entry's `top1`/`top5` are measured on the test split (`eval_images` images, `eval_protocol`), and, in
a zoo that records validation, `val_top1`/`val_top5` on the optional top-level block `validation`, the split its
supernet's training held out and never trained on:

    "validation": {"source": "fashion-mnist", "split": "val", "held_out_of": "train", "images": 5000, "seed": 0,
                   "protocol": "fashion-mnist val split, 5000 images held out of the training split (seed 0), ..."}

`source` is the training's data source, `images` the split's size and `seed` the seed of the permutation that held
them out of the `held_out_of` split (training.data). The block and the entries' `val_top1` come together (every entry
has one, or none has), and the block must be the split that the index's `training` settings held out (its data, seed
and val_size, `held_out_split`): a split the settings cannot tell, or one they did not hold out and so may overlap
the images the supernet was trained on, is refused. Budgets, the Pareto front and the equivalence of entries choose on
validation where a zoo records it, else on test (`zoo.store.Zoo.choice_top1`); test is what is reported.

Variants (a bytes budget's choices, optional): an entry's `variants` are ONNX files storing its weights at fewer
bytes, by name (`w16`, `w8`, `w4`, `edmips-<budget>`; "fp32" is the entry itself), each with its precision map
(`bits`: layer -> 4, 8, 16 or 32), its top-1/top-5 on the test split and on the `validation` split (so a zoo with
variants records validation), written by `python -m training variants`; `file_bytes` (the entry's own fp32 file and
each variant's, as served) and an optional variant `latency` are written by `python -m export sizes`. The top-level
`variants` block says how all of them were measured.

Own weights (optional): an entry with `own_weights` true was fine-tuned standalone after extraction (`python -m
training tune`): the weight file holds its whole model as `paths.<id>.*` (`zoo.store`), its accuracies are the tuned
model's, and the top-level `tuning` block says how it was tuned (required when any entry has own weights).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from zoo.family import Arch, Family, Space, family_of  # no torch: the server's `--help` reads INTERPOLATIONS here
from zoo.io import clip, json_path, quote

SCHEMA_VERSION = 1
KIND = "prezoo.zoo"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")
MESSAGE_CHARS = 300  # longest problem quoted; messages of spaces and archs may quote whole lists
FP32 = "fp32"  # the variant an entry is itself: its fp32 ONNX file; never a stored variant's name
VARIANT_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,47}$"  # a path segment of the export cache: no dots, no slashes
MAX_VARIANTS = 64
MAX_LAYERS = 10_000  # zoo.precision.MAX_LAYERS


class ZooError(ValueError):
    """A zoo that cannot be used as it is: the message names the file and what is wrong."""


def preprocessing_problem(p: Any, space: Space) -> str | None:
    """Why a zoo's preprocessing cannot feed its models (the server and exports rely on it), or None.

    The message reads after 'preprocessing: ', the field it is about."""
    if not isinstance(p, dict):
        return f"must be an object, got {quote(p)}"
    missing = [k for k in ("img_size", "in_chans", "mean", "std") if k not in p]
    if missing:
        return f"lacks {', '.join(missing)}"
    if (p["img_size"], p["in_chans"]) != (space.img_size, space.in_chans):
        return (f"is for {quote(p['img_size'])}px x {quote(p['in_chans'])} channels but the space takes "
                f"{space.img_size}px x {space.in_chans}")
    for key in ("mean", "std"):
        v = p[key]
        if not (isinstance(v, list | tuple) and len(v) == space.in_chans
                and all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)):
            return f"{key} must be {space.in_chans} number(s), got {quote(v)}"
    if min(p["std"]) <= 0:
        return f"std must be positive, got {quote(p['std'])}"
    crop = p.get("crop_pct", 1.0)
    if isinstance(crop, bool) or not isinstance(crop, int | float) or not 0 < crop <= 1:
        return f"crop_pct must lie in (0, 1], got {quote(crop)}"
    if p.get("interpolation", "bicubic") not in INTERPOLATIONS:
        return f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {quote(p['interpolation'])}"
    return None


# -- where the index's files may be ----------------------------------------------------------------

def files_boundary(folder: Path) -> Path:
    """The folder a zoo's files must resolve inside: the zoo folder, or for a Hub snapshot
    (`models--org--name/snapshots/<rev>`) its repo folder, whose `blobs/` the snapshot's files are links to."""
    folder = folder.resolve()
    hub_snapshot = folder.parent.name == "snapshots" and folder.parents[1].name.startswith("models--")
    return folder.parents[1] if hub_snapshot else folder


def resolves_inside(path: Path, boundary: Path) -> bool:
    """False for a path that leads out of `boundary` (by '..' or a symlink) or cannot be resolved (a symlink loop)."""
    try:
        return path.resolve().is_relative_to(boundary)
    except (OSError, RuntimeError):  # Python 3.11 raises RuntimeError for a symlink loop
        return False


@dataclass(frozen=True)
class IndexContext:
    """What the space- and folder-dependent checks need (pydantic hands it to every validator)."""

    family: Family
    space: Space
    folder: Path
    boundary: Path


# -- the validation split ---------------------------------------------------------------------------

@dataclass(frozen=True)
class HeldOut:
    """The validation split a supernet's training held out (training.data): `val_size` images of `source`'s training
    split (None: the source's default number), chosen by a permutation seeded with `seed`."""

    source: str
    seed: int
    val_size: int | None


def held_out_split(training: Any) -> HeldOut:
    """The validation split that recorded training settings (a zoo's `training` block, a run's config) held out, or
    ValueError saying why it cannot be determined or holds no image the supernet was not trained on."""
    cannot = "which images the supernet was trained on cannot be determined"
    if not isinstance(training, dict):
        raise ValueError(f"the index records no training settings: {cannot}")
    if missing := [k for k in ("data", "seed", "val_size") if k not in training]:
        raise ValueError(f"training records no {', '.join(missing)}: {cannot}")
    source, seed, val_size = training["data"], training["seed"], training["val_size"]
    if not isinstance(source, str) or not source:
        raise ValueError(f"training.data is {quote(source)}, not a data source: {cannot}")
    if not _natural(seed):
        raise ValueError(f"training.seed is {quote(seed)}, not a non-negative integer: {cannot}")
    if val_size is not None and not _natural(val_size):
        raise ValueError(f"training.val_size is {quote(val_size)}, neither null nor a non-negative integer: {cannot}")
    if val_size == 0:
        raise ValueError("training.val_size is 0: the supernet was trained on every training image, so no "
                         "validation split lies outside its training data")
    return HeldOut(source, seed, val_size)


def _natural(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def validation_problem(validation: Validation, training: Any) -> str | None:
    """Why a recorded validation split is not the one the training settings held out, or None."""
    try:
        held = held_out_split(training)
    except ValueError as e:
        return str(e)
    if (validation.source, validation.seed) != (held.source, held.seed) or held.val_size not in (None,
                                                                                                 validation.images):
        size = "the default number of" if held.val_size is None else f"{held.val_size}"
        return (f"{validation.images} images of {quote(validation.source)} held out with seed {validation.seed} are "
                f"not the split the supernet's training held out ({size} images of {quote(held.source)}, seed "
                f"{held.seed}): they may overlap the images it was trained on")
    return None


# -- validators that need the context --------------------------------------------------------------

def _space_hash(value: str, info: ValidationInfo) -> str:
    if value != info.context.space.hash:
        raise ValueError(f"{quote(value)} does not match its space ({info.context.space.hash})")
    return value


def _classes(names: list[str], info: ValidationInfo) -> list[str]:
    """One unique name per class of the space (the server labels its top-k with them)."""
    if len(names) != info.context.space.num_classes:
        raise ValueError(f"{len(names)} names for a space with {info.context.space.num_classes} classes")
    name, count = Counter(names).most_common(1)[0]
    if count > 1:
        raise ValueError(f"{quote(name)} is listed {count} times")
    return names


def _preprocessing(value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
    if problem := preprocessing_problem(value, info.context.space):
        raise ValueError(problem)
    return value


def _arch(value: Any, info: ValidationInfo) -> Arch:
    """An architecture of the index's space."""
    return info.context.space.validate(info.context.family.arch_from_dict(value))


def _weight_file(name: str, info: ValidationInfo) -> str:
    """A plain file name whose file lies in the zoo folder: never a path or link that leads out of it (whose
    existence, content or hash an error could otherwise reveal)."""
    if name in ("", "..") or PurePosixPath(name).name != name or "\\" in name or "\0" in name:
        raise ValueError(f"must be a plain file name in the zoo folder, got {quote(name)}")
    path = info.context.folder / name
    if not resolves_inside(path, info.context.boundary):
        raise ValueError(f"{quote(name)} does not resolve inside the zoo folder {info.context.folder}")
    if not path.is_file():
        raise ValueError(f"{path} is missing")
    return name


def _unique_ids(entries: list[Entry]) -> list[Entry]:
    first: dict[str, int] = {}
    for i, entry in enumerate(entries):
        if entry.id in first:
            raise ValueError(f"entries[{first[entry.id]}] and entries[{i}] are both {entry.id}")
        first[entry.id] = i
    return entries


# -- the schema --------------------------------------------------------------------------------------

Count = Annotated[int, Field(gt=0)]
Percent = Annotated[float, Field(ge=0, le=100)]
Milliseconds = Annotated[float, Field(gt=0)]
Label = Annotated[str, Field(min_length=1, max_length=200)]
Metadata = dict[str, Any]


class Strict(BaseModel):
    """JSON types as written (strict), finite numbers, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class Latency(Strict):
    median_ms: Milliseconds
    p10_ms: Milliseconds
    p90_ms: Milliseconds


def _not_fp32(variants: dict[str, Variant]) -> dict[str, Variant]:
    if FP32 in variants:
        raise ValueError(f"{quote(FP32)} is the entry's own file, not a stored variant")
    return variants


LayerName = Annotated[str, Field(min_length=1, max_length=200)]


class Variant(Strict):
    """An entry's weights stored at fewer bytes (see the module's docstring)."""

    bits: Annotated[dict[LayerName, Literal[4, 8, 16, 32]], Field(min_length=1, max_length=MAX_LAYERS)]
    origin: Label  # how the map was made: "uniform", or the EdMIPS map file it was read from
    top1: Percent
    top5: Percent
    val_top1: Percent
    val_top5: Percent
    file_bytes: Count | None = None
    latency: Latency | None = None


Variants = Annotated[dict[Annotated[str, Field(pattern=VARIANT_NAME)], Variant], Field(max_length=MAX_VARIANTS),
                     AfterValidator(_not_fp32)]


class Entry(Strict):
    id: str
    arch: Annotated[Any, PlainValidator(_arch)]  # an `Arch` of the index's family
    params: Count
    flops: Count
    top1: Percent | None = None
    top5: Percent | None = None
    val_top1: Percent | None = None  # on the index's `validation` split
    val_top5: Percent | None = None
    loss: Annotated[float, Field(ge=0)] | None = None
    latency: Latency | None = None
    file_bytes: Count | None = None  # the entry's fp32 ONNX file as served (`python -m export sizes`)
    variants: Variants | None = None
    own_weights: bool = False  # fine-tuned standalone: its whole model is stored, not sliced from the supernet

    @model_validator(mode="after")
    def _agrees_with_its_arch(self, info: ValidationInfo) -> Entry:
        family, space = info.context.family, info.context.space
        expected = (self.arch.id, family.params(space, self.arch), family.flops(space, self.arch))
        if (self.id, self.params, self.flops) != expected:
            raise ValueError(f"says id/params/flops {quote(self.id)}/{self.params}/{self.flops} but its arch gives "
                             f"{expected[0]}/{expected[1]}/{expected[2]}")
        return self


class SpaceTexts(Strict):
    """The space's free texts: the family's space itself checks every field that shapes the weights (check_index)."""

    model_config = ConfigDict(extra="allow")

    name: Label
    description: str = ""


class Weights(Strict):
    file: Annotated[str, AfterValidator(_weight_file)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    dtype: Literal["torch.float16", "torch.float32"]  # what write_zoo stores (computed in fp32 either way)


class Validation(Strict):
    """The split behind the entries' val_top1/val_top5 (see the module's docstring)."""

    source: Label
    split: Literal["val"]
    held_out_of: Literal["train"]
    images: Count
    seed: Annotated[int, Field(ge=0)]
    protocol: str | None = None


class ZooIndex(Strict):
    model_config = ConfigDict(extra="allow")  # write_zoo(**extra) may add metadata; read_versioned_json bounded it

    schema_version: Literal[SCHEMA_VERSION]
    kind: Literal[KIND]
    family: str | None = None  # checked first, by `family_of`: what the space and archs are read as
    name: Label
    space: SpaceTexts
    space_hash: Annotated[str, AfterValidator(_space_hash)]
    classes: Annotated[list[Label], AfterValidator(_classes)]
    preprocessing: Annotated[Metadata, AfterValidator(_preprocessing)]
    flops_rule: str | None = None
    dataset: str | None = None
    eval_protocol: str | None = None
    eval_images: Count | None = None  # test images behind top1/top5: their 95% intervals (zoo.stats)
    validation: Validation | None = None  # the held-out split behind val_top1/val_top5
    source: str | None = None
    selector: Metadata | None = None
    training: Metadata | None = None
    fp16_check: Metadata | None = None
    latency_protocol: Metadata | None = None
    variants: Metadata | None = None  # how the entries' variants were measured (`training variants`, `export sizes`)
    tuning: Metadata | None = None  # how the entries with own weights were fine-tuned (`training tune`)
    weights: Weights
    entries: Annotated[list[Entry], Field(min_length=1), AfterValidator(_unique_ids)]

    @model_validator(mode="after")
    def _own_weights_say_how(self) -> ZooIndex:
        if self.tuning is None and (tuned := [i for i, e in enumerate(self.entries) if e.own_weights]):
            raise ValueError(f"entries[{tuned[0]}] has its own weights but the index has no `tuning` block saying how "
                             f"they were tuned")
        return self

    @model_validator(mode="after")
    def _validation_is_whole_and_held_out(self) -> ZooIndex:
        """Validation accuracy for every entry or none, on the split the training held out."""
        measured = [e.val_top1 is not None or e.val_top5 is not None for e in self.entries]
        if self.validation is None and (varied := [i for i, e in enumerate(self.entries) if e.variants]):
            raise ValueError(f"entries[{varied[0]}] has variants, whose validation top-1 chooses them, but the index "
                             f"names no validation split")
        if self.validation is None:
            if any(measured):
                raise ValueError(f"entries[{measured.index(True)}] records validation accuracy but the index names "
                                 f"no validation split it was measured on")
            return self
        if unmeasured := [i for i, e in enumerate(self.entries) if e.val_top1 is None]:
            raise ValueError(f"validation: entries[{unmeasured[0]}] has no val_top1 (every entry needs one)")
        if problem := validation_problem(self.validation, self.training):
            raise ValueError(f"validation: {problem}")
        return self


def describe(error: ValidationError) -> str:
    """The first problem as 'field: what is wrong, got <value>', and how many more there are."""
    first, more = error.errors(include_url=False)[0], error.error_count() - 1
    if first["type"] == "value_error":  # raised by a validator above: its message says it all
        problem = str(first["ctx"]["error"])
    elif first["type"] == "missing":  # its input is the object that lacks the field
        problem = "missing"
    else:
        problem = f"{first['msg']}, got {quote(first['input'])}"
    where = json_path(first["loc"])
    text = clip(f"{where}: {problem}" if where else problem, MESSAGE_CHARS)
    return text + (f" (and {more} more problem{'s' if more > 1 else ''})" if more else "")


def check_index(doc: dict[str, Any], index: Path) -> tuple[Family, Space, ZooIndex]:
    """The family, space and checked index of a parsed `zoo.json`, or ZooError naming the first wrong field."""
    with _named(index, "family"):
        family = family_of(doc)
    with _named(index, "space"):
        space = family.space_from_dict(doc.get("space"))
    context = IndexContext(family, space, index.parent, files_boundary(index.parent))
    try:
        return family, space, ZooIndex.model_validate(doc, context=context)
    except ValidationError as e:
        raise ZooError(f"{index}: {describe(e)}") from e


@contextmanager
def _named(index: Path, field: str) -> Iterator[None]:
    """A ValueError (or TypeError: e.g. super_embed_dim given as a list) of the block as a ZooError on `field`."""
    try:
        yield
    except (TypeError, ValueError) as e:
        raise ZooError(f"{index}: {field}: {clip(str(e), MESSAGE_CHARS)}") from e
