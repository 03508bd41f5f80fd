"""The Gradio UI: budget -> chosen model of any served zoo (numbers with their 95% intervals, per-layer table, card,
one Pareto plot of every served entry coloured by family, downloads), or a model picked from the table of all entries
or from the plot; a "try it" tab and, with an admin token configured, a Hub push form. It calls the same
`PreZooServer` as the REST API; whatever it does with an entry it does with the entry's own zoo.

Its Gradio API (`gradio_client`) is three named endpoints: /specialize (a budget written as REST takes it, '0.3M'),
/download (an entry's file in one format) and /classify (an image). /specialize and /classify answer data inline
(text, JSON, HTML with a PNG as a data: URI); /download answers a file, which Gradio serves from its own copy: no
answer names a path in the server's cache. The page's own callbacks are private: not part of that API."""

from __future__ import annotations

import asyncio
import base64
import io
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from matplotlib import rc_context
from matplotlib.figure import Figure
from PIL import Image
from pydantic import ValidationError

from export.cache import CacheError
from export.download import DOWNLOADS
from export.hf import model_card, scale_cost_axis
from server.api import (
    ENTRY_ID_CHARS,
    ApiError,
    Budget,
    choose_file,
    clip,
    describe_problems,
    specialized_json,
    variant_json,
)
from server.images import FORMATS, ImageError, decode_image, model_view, to_input
from server.profile import zoo_latency
from server.state import PreZooServer
from zoo.budget import FLOPS_LABEL, human
from zoo.catalog import Catalog
from zoo.pull import HubError
from zoo.store import Zoo, ZooEntry, protocol_text

DOWNLOAD_BUTTONS = {"hf-zip": "HF folder (zip)", "safetensors": "safetensors", "onnx": "ONNX",
                    "onnx-fp16": "ONNX fp16", "onnx-int8": "ONNX INT8"}
WHOLE_ZOO = "the chosen model's whole zoo"
POINT = "point-"  # SVG id prefix of an entry's marker in the Pareto plot: POINT + entry id
COMPARE = "compare-"  # SVG id prefix of a compared zoo's marker: COMPARE + zoo number + "-" + entry id (no choice)
INTERVALS = "intervals-"  # SVG id of a zoo's error bars: INTERVALS + "served" or the compared zoo's number
ENTRY_HEADERS = ["id", "parameters", FLOPS_LABEL, "top-1 %", "top-1 95% interval", "top-5 %", "latency ms",
                 "Pareto (params)"]  # the entries table
ENTRY_TYPES = ["str", "number", "number", "number", "str", "number", "number", "str"]
COUNT_COLUMNS = (1, 2)  # shown as 13.2K, 1.21M
COMPARE_STYLES = [("#d97706", "s"), ("#059669", "^"), ("#7c3aed", "D"), ("#db2777", "v")]  # colour, marker per zoo
FAMILY_COLOURS = ["#2563eb", "#0d9488", "#a16207", "#4b5563"]  # the served entries' markers, per family in order
DATASET_INPUTS = {  # what an image should look like to be in the distribution the zoo was trained on
    "fashion-mnist": "a Fashion-MNIST-like photo: one clothing item or shoe, centred, filling the frame, "
                     "**light on a dark background** (invert a photo of a dark item on a white table first)",
    "cifar10": "a CIFAR-10-like photo: one object (animal or vehicle) filling a small colour frame",
    "cifar100": "a CIFAR-100-like photo: one object filling a small colour frame",
}
BLUR_ON_ENTER = """element.addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && event.target.matches('input[type=number]')) event.target.blur();
});"""  # Gradio's slider applies its number box on blur (its `release` event): Enter applies it too
SELECT_NEAREST_POINT = f"""element.addEventListener('click', (event) => {{
  let best = null, bestDistance = 24;
  for (const point of element.querySelectorAll('[id^="{POINT}"], [id^="{COMPARE}"]')) {{
    const box = point.getBoundingClientRect();
    const distance = Math.hypot(event.clientX - box.left - box.width / 2, event.clientY - box.top - box.height / 2);
    if (distance < bestDistance) {{ best = point; bestDistance = distance; }}
  }}
  if (best && best.id.startsWith('{POINT}')) trigger('select', {{index: null, value: best.id.slice({len(POINT)})}});
}});"""  # a click within 24 px of a marker chooses the nearest entry, unless the nearest is a compared zoo's
PLOT_CSS = f"svg {{ width: 100%; height: auto; }} [id^='{POINT}'] {{ cursor: pointer; }}"


@dataclass(frozen=True)
class SliderScale:
    """A slider over [lowest/2, highest] of a cost, shown in a readable unit (K, M or G), in steps fine enough for
    both ends: about a thousandth of the highest value, and at most a tenth of the lowest."""

    what: str
    unit: str
    factor: float
    minimum: float
    maximum: float
    step: float

    @classmethod
    def of(cls, what: str, values: list[float], unit: str | None = None) -> SliderScale:
        """`unit=None`: pick K, M or G so the slider shows numbers between 1 and 1000."""
        factor = 1.0
        if unit is None:
            factor, unit = next(((f, u) for f, u in ((1e9, "G"), (1e6, "M"), (1e3, "K")) if max(values) >= f),
                                (1.0, ""))
        digits = max(2 - math.floor(math.log10(max(values) / factor)), 1 - math.floor(math.log10(min(values) / factor)))
        step = 10.0 ** -digits
        lo = round(math.floor(min(values) / factor / 2 / step) * step, max(digits, 0))
        hi = round(math.ceil(max(values) / factor / step) * step, max(digits, 0))
        return cls(what, unit, factor, max(lo, step), hi, step)

    @property
    def label(self) -> str:
        return f"{self.what} ({self.unit})" if self.unit else self.what

    def slider(self, **kwargs) -> gr.Slider:
        return gr.Slider(self.minimum, self.maximum, value=self.maximum, step=self.step, label=f"Max {self.label}",
                         **kwargs)


class LatestChoice:
    """The entry each browser session chose last. Exports take seconds, so the download buttons of an older choice
    can be ready after a newer one was made: those results are dropped instead of arming stale buttons."""

    def __init__(self, sessions: int = 10_000) -> None:
        self._chosen: OrderedDict[str, str | None] = OrderedDict()
        self._sessions = sessions
        self._lock = threading.Lock()

    def set(self, session: str, entry_id: str | None) -> None:
        with self._lock:
            self._chosen[session] = entry_id
            self._chosen.move_to_end(session)
            while len(self._chosen) > self._sessions:
                self._chosen.popitem(last=False)

    def is_current(self, session: str, entry_id: str | None) -> bool:
        with self._lock:
            return self._chosen.get(session, entry_id) == entry_id


def zoo_label(zoo: Zoo) -> str:
    """How the plot's legend and the page name a zoo: 'ladder-fmnist (ViT)'."""
    return f"{zoo.name} ({zoo.family.title})"


def served_label(zoos: Catalog) -> str:
    """How the plot's legend names the served zoos: 'ladder-fmnist (ViT) + hytra-fmnist (HyTra)'."""
    return " + ".join(zoo_label(z) for z in zoos.zoos)


def family_colours(zoos: Catalog) -> dict[str, tuple[str, str]]:
    """(colour, legend label) of each served family, in the order the zoos come: 'ViT (ladder-fmnist)'."""
    families: dict[str, list[Zoo]] = {}
    for z in zoos.zoos:
        families.setdefault(z.family.name, []).append(z)
    return {name: (FAMILY_COLOURS[i % len(FAMILY_COLOURS)],
                   f"{served[0].family.title} ({', '.join(z.name for z in served)})")
            for i, (name, served) in enumerate(families.items())}


def pareto_svg(zoos: Catalog, chosen: ZooEntry | None, by: str, scale: SliderScale, compare: Sequence[Zoo] = ()) -> str:
    """Top-1 vs cost (`by`: params or flops, in the unit of `scale`) of every served entry with its 95% interval as an
    error bar, coloured by family (filled on the one Pareto front over all served zoos, hollow off it), the front
    joined, the chosen one starred; an inline SVG whose markers carry ids POINT + entry id (so a click can choose
    one). Each zoo in `compare` adds its entries and front in its own colour and marker, with ids COMPARE + its number
    + "-" + entry id: shown, never chosen."""
    cost = {"params": lambda e: e.params / scale.factor, "flops": lambda e: e.flops / scale.factor}[by]
    scored = sorted((e for e in zoos.entries if e.top1 is not None), key=cost)
    front, colours = zoos.pareto(by), family_colours(zoos)
    fig = Figure(figsize=(6.4, 4), dpi=100, layout="tight")
    ax = fig.add_subplot()
    plot_intervals(ax, zoos, scored, cost, "#9ca3af", f"{INTERVALS}served", "95% interval")
    ax.plot([cost(e) for e in front], [e.top1 for e in front], "-", color="#1f2937", zorder=2,
            label=f"Pareto front, {served_label(zoos)}" if compare else "Pareto front")
    for e in scored:
        colour = colours[zoos.zoo_of(e).family.name][0]
        ax.plot([cost(e)], [e.top1], "o", markersize=8, color=colour, markerfacecolor=colour if e in front else "white",
                zorder=3, gid=f"{POINT}{e.id}", label="_nolegend_")
    for colour, family in colours.values():  # legend lines only: each family's marker as on the front
        ax.plot([], [], "o", markersize=8, color=colour, label=family)
    if len(front) < len(scored):
        ax.plot([], [], "o", markersize=8, color="#6b7280", markerfacecolor="white", label="off the front")
    if chosen is not None and chosen.top1 is not None:
        ax.scatter([cost(chosen)], [chosen.top1], marker="*", s=320, color="#dc2626", label=f"chosen {chosen.id}",
                   zorder=4)
    compared = [plot_compared_zoo(ax, other, number, by, cost) for number, other in enumerate(compare)]
    scale_cost_axis(ax, [cost(e) for e in scored + [e for entries in compared for e in entries]])
    ax.set_xlabel(scale.label)
    ax.set_ylabel(f"test top-1 (%); front chosen on {'validation' if zoos.by_validation else 'test'}")
    ax.grid(alpha=0.3)
    if compare:  # too many lines to sit inside without hiding points: two columns below the axes, the figure taller
        rows = math.ceil(len(ax.get_legend_handles_labels()[1]) / 2)
        fig.set_figheight(fig.get_figheight() + 0.2 * rows)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    else:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)  # where it hides the fewest points and bars
    buf = io.StringIO()
    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "prezoo"}):  # text as text; stable ids
        fig.savefig(buf, format="svg", metadata={"Date": None})  # the same plot is the same text
    return buf.getvalue()[buf.getvalue().index("<svg"):]  # no XML prologue inside HTML


def plot_intervals(ax, zoo: Zoo | Catalog, entries: list[ZooEntry], cost: Callable[[ZooEntry], float], colour: str,
                   gid: str, label: str) -> None:
    """Each entry's 95% top-1 interval as an error bar (SVG group `gid`); nothing when a zoo records no test-set
    size, since a bar there would claim a certainty nobody measured."""
    intervals = [zoo.top1_interval(e) for e in entries]
    if not entries or None in intervals:
        return
    bars = ax.errorbar([cost(e) for e in entries], [e.top1 for e in entries], fmt="none", ecolor=colour, capsize=3,
                       yerr=[[e.top1 - lo for e, (lo, _) in zip(entries, intervals, strict=True)],
                             [hi - e.top1 for e, (_, hi) in zip(entries, intervals, strict=True)]],
                       label=label, zorder=1)
    bars.lines[2][0].set_gid(gid)  # the bars themselves (a LineCollection); the caps are separate lines


def plot_compared_zoo(ax, zoo: Zoo, number: int, by: str, cost: Callable[[ZooEntry], float]) -> list[ZooEntry]:
    """A compared zoo's front (dashed), entries (filled on the front, hollow off it) and 95% intervals in its own
    style, one legend line naming it; returns the entries drawn."""
    colour, marker = COMPARE_STYLES[number % len(COMPARE_STYLES)]
    scored, front = [e for e in zoo.entries if e.top1 is not None], zoo.pareto(by)
    plot_intervals(ax, zoo, scored, cost, colour + "80", f"{INTERVALS}{number}", "_nolegend_")  # half-transparent
    ax.plot([cost(e) for e in front], [e.top1 for e in front], f"--{marker}", color=colour, markersize=7, zorder=2,
            label=f"{zoo_label(zoo)}, compared")
    for e in scored:
        ax.plot([cost(e)], [e.top1], marker, markersize=7, color=colour, zorder=3, gid=f"{COMPARE}{number}-{e.id}",
                markerfacecolor=colour if e in front else "white", label="_nolegend_")
    return scored


def compare_note(server: PreZooServer) -> str:
    """What the compared zoos are and are not: drawn in the plot, never chosen, each with its own evaluation."""
    if not server.compare:
        return ""
    zoos = "; ".join(f"**{zoo_label(other)}**, {len(other.entries)} entries (top-1: "
                     f"{other.doc.get('eval_protocol', 'evaluation not recorded')})" for other in server.compare)
    return (f"\n\nThe Pareto plot also shows, for comparison only: {zoos}. Budgets, the table, downloads and "
            f"predictions use {server.zoos.name} alone.")


def interval_text(zoo: Zoo | Catalog, entry: ZooEntry) -> str:
    interval = zoo.top1_interval(entry)
    return f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "–"


def latency_note(server: PreZooServer) -> str:
    """Who measured the latencies shown: this server (host, provider, how) once it has, else each zoo's builder."""
    progress = server.profiler.progress()
    built = built_latencies(server.zoos.zoos)
    if progress["state"] == "off":
        return f"Latency: {built}."
    here = f"on this server ({progress['provider']}): {progress['protocol']}"
    if progress["state"] == "done" and not progress["failed"]:
        return f"Latency: measured {here}."
    return (f"Latency: {progress['profiled']} of {progress['entries']} entries measured {here}; the others: {built}. "
            f"Budgets read this server's numbers where it has them.")


def built_latencies(zoos: list[Zoo]) -> str:
    """How the zoos' own latencies were measured when each was built: one phrase per protocol, the zoos measured
    alike (on other days) named under it."""
    groups: dict[str, list[str]] = {}
    for zoo in zoos:
        p = zoo.doc.get("latency_protocol")
        how = "not measured (`prezoo profile` measures it)" if p is None else \
            protocol_text({k: v for k, v in p.items() if k != "measured_at"})
        when = f" on {p['measured_at'][:10]}" if p and p.get("measured_at") else ""
        groups.setdefault(how, []).append(f"{zoo.name}{when}")
    return "; ".join(f"{how} ({', '.join(names)})" for how, names in groups.items()) + \
        ", measured when each zoo was built, not on this server"


def variant_markdown(variant: dict | None) -> str:
    """The file a bytes budget chose (REST's `variant`), in one paragraph: name, storage, bytes, accuracies with
    their intervals, latency, and which button downloads it."""
    if variant is None:
        return ""

    def top1(key: str) -> str:
        interval = variant[f"{key}_interval"]
        return f"{variant[key]:.2f}%" + (f" ({interval[0]:.2f}–{interval[1]:.2f})" if interval else "")

    stored = ", ".join(f"{n} layers {w}" for w, n in variant["storage"].items()) or "fp32 weights"
    latency = f"; latency {variant['latency_ms']:.3f} ms" if variant["latency_ms"] is not None else ""
    return (f"**File within the bytes budget:** `{variant['name']}` ({stored}), **{variant['file_bytes']:,} bytes**; "
            f"validation top-1 {top1('val_top1')} (what chose it), test top-1 {top1('top1')}{latency}. "
            f"*Download the chosen file* gives it.\n\n")


def summary_markdown(server: PreZooServer, entry: ZooEntry, why: str, variant: dict | None = None) -> str:
    zoo = server.zoos.zoo_of(entry)
    top1 = f"{entry.top1:.2f}% ({interval_text(zoo, entry)})" if entry.top1 is not None else "–"
    top5 = f"{entry.top5:.2f}%" if entry.top5 is not None else "–"
    measured = server.profiler.latency(entry)
    latency = f"{measured.median_ms:.3f} ms ({measured.describe()})" if measured else "not measured"
    note = server.equivalence_note(entry)
    return (f"### Chosen: `{entry.id}`\n{why} {zoo.family.describe_arch(zoo.space, entry.arch)} (zoo {zoo.name})\n\n"
            f"| parameters | FLOPs (MACs) | test top-1 (95% interval) | top-5 | latency |\n|---|---|---|---|---|\n"
            f"| {entry.params:,} ({human(entry.params)}) | {human(entry.flops)} | {top1} | {top5} | {latency} |\n\n"
            + variant_markdown(variant) + (f"**Cheaper and as accurate:** {note}\n\n" if note else "")
            + latency_note(server))


def entry_rows(server: PreZooServer) -> list[list]:
    """One row per entry (under ENTRY_HEADERS), cheapest first (the first cell is the id: a selected row names its
    entry), counts as numbers; the latency as of now (this server's numbers replace the zoo's as they are measured)."""
    zoo = server.zoos
    front = {e.id for e in zoo.pareto("params")}
    return [[e.id, e.params, e.flops, e.top1, interval_text(zoo, e), e.top5,
             (m := server.profiler.latency(e)) and round(m.median_ms, 3), "yes" if e.id in front else ""]
            for e in sorted(zoo.entries, key=lambda e: e.params)]


def entries_table(server: PreZooServer) -> dict:
    """entry_rows as the table shows them: parameters and MACs with three significant digits and a unit (13.2K,
    1.21M); the numbers stay underneath, so a click on a column header sorts by them, not by their text."""
    rows = entry_rows(server)
    shown = [["" if value is None else human(value) if column in COUNT_COLUMNS else str(value)
              for column, value in enumerate(row)] for row in rows]
    return {"headers": ENTRY_HEADERS, "data": rows, "metadata": {"display_value": shown, "styling": None}}


def latency_sources(server: PreZooServer) -> str:
    """Who measured the table's latencies, each said once: the source of most entries for "the other" ones (or all),
    every other source with the ids of its entries (while this server is still measuring, or where it failed)."""
    sources: dict[str, list[str]] = {}
    for e in sorted(server.zoos.entries, key=lambda e: e.params):
        measured = server.profiler.latency(e)
        sources.setdefault(measured.describe() if measured else "not measured", []).append(e.id)
    (most, ids), *others = sorted(sources.items(), key=lambda item: -len(item[1]))
    parts = [f"{source} ({', '.join(entries)})" for source, entries in others]
    parts.append(f"{most} ({'the other ' + str(len(ids)) if others else f'all {len(ids)} entries'})")
    return "**latency ms**, median per image: " + "; ".join(parts) + "."


def failure_markdown(answer: dict) -> str:
    """An error answer of PreZooUI.choose as the summary says it."""
    title = ("No model fits this budget" if "nearest" in answer else
             "Latency budgets wait for this server's measurements" if "profiling" in answer else "Invalid budget")
    return f"### {title}\n{answer['error']}"


def client_error(message: str) -> gr.Error:
    """An error that is the caller's to fix: shown to them, not logged with a traceback as a server fault is."""
    return gr.Error(message, print_exception=False)


def scaled(value: float | None, scale: SliderScale) -> float | None:
    """A slider's value in single units (None: the number box was emptied)."""
    return None if value is None else value * scale.factor


def layer_table(zoo: Zoo, entry: ZooEntry) -> dict:
    """The entry's layers as its family tabulates them, with the family's headers (families differ)."""
    return {"headers": list(zoo.family.layer_headers), "data": zoo.family.layer_rows(zoo.space, entry.arch)}


def card_markdown(zoo: Zoo, entry: ZooEntry) -> str:
    """The model card without its YAML front matter (Hub metadata, not for reading)."""
    return re.sub(r"\A---\n.*?\n---\n", "", model_card(zoo, entry), flags=re.DOTALL)


def input_notes(zoos: Catalog) -> str:
    """`input_note` of each served zoo, each said once."""
    return "\n\n".join(dict.fromkeys(input_note(z) for z in zoos.zoos))


def input_note(zoo: Zoo) -> str:
    """What an image should look like for this zoo's models, and how to read their probabilities."""
    pre, dataset = zoo.preprocessing, zoo.doc.get("dataset", "")
    looks = DATASET_INPUTS.get(dataset, f"an image like the {dataset or 'training'} images")
    smoothing = zoo.doc.get("training", {}).get("label_smoothing") or 0
    reading = (f"The probabilities come from a model trained with **label smoothing {smoothing:g}**: even a clear, "
               f"right answer stays well below 100%. Compare them with each other; they are not calibrated "
               f"confidences." if smoothing else "The probabilities are the softmax of the model's outputs.")
    return (f"**The model expects** {looks}. Any image is converted to {'gray' if pre['in_chans'] == 1 else 'RGB'}, "
            f"resized and centre-cropped to {pre['img_size']}×{pre['img_size']} (see what the model sees).\n\n"
            f"{reading}")


def inline_png(image: Image.Image, scale: int, alt: str) -> str:
    """An <img> holding the PNG itself (a data: URI, no file on the server), enlarged with its pixels kept."""
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return (f'<img alt="{alt}" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" '
            f'width="{scale * image.width}" height="{scale * image.height}" style="image-rendering: pixelated">')


@dataclass
class SpecializeTab:
    budget: list[gr.components.Component]
    axis: gr.Radio
    go: gr.Button
    plot: gr.HTML
    entries: gr.Dataframe
    sources: gr.Markdown  # who measured the table's latencies
    outputs: list[gr.components.Component]
    buttons: list[gr.DownloadButton]
    max_bytes: gr.Textbox
    file: gr.DownloadButton  # the file a bytes budget chose


class PreZooUI:
    """Handlers (methods) and layout (`build`) of the UI; every handler goes through the shared server state."""

    def __init__(self, server: PreZooServer, samples: list[Path]) -> None:
        self.server, self.zoos, self.samples = server, server.zoos, samples
        self.params = SliderScale.of("parameters", [e.params for e in self.zoos.entries])
        self.flops = SliderScale.of("FLOPs", [e.flops for e in self.zoos.entries])
        latencies = [e.latency_ms for e in self.zoos.entries]
        self.latency = SliderScale.of("latency", latencies, unit="ms") if None not in latencies else None
        self.latest = LatestChoice()

    # -- the API (gradio_client) -----------------------------------------------------------------
    def specialize(self, max_params: str | None = None, max_flops: str | None = None,
                   max_latency_ms: str | None = None, max_bytes: str | None = None) -> tuple[str | None, str, dict]:
        """The most accurate entry within a budget written as POST /api/specialize takes it ('0.3M', '300K', '20M',
        '12ms', and file bytes '120K'; empty: no limit): its id, the summary the page shows, and REST's answer (the
        entry, the file a bytes budget chose, the cheaper entries as accurate, the note). When nothing fits: no id,
        and REST's error with the nearest entries."""
        entry, answer = self.choose({"max_params": max_params, "max_flops": max_flops,
                                     "max_latency_ms": max_latency_ms, "max_bytes": max_bytes})
        if entry is None:
            return None, failure_markdown(answer), answer
        return entry.id, summary_markdown(self.server, entry, self.within_budget(), answer["variant"]), answer

    def download(self, model: str, kind: str) -> str:
        """The entry's file of one kind that GET /api/models/{id}/download/{kind} serves (exported on the first
        request, then cached), as a file."""
        entry = self.known_entry(model)
        if kind not in DOWNLOADS:
            raise client_error(f"no download kind {clip(str(kind))!r}; kinds: {', '.join(DOWNLOADS)}")
        try:
            return str(self.server.named_download(entry, kind))
        except CacheError as e:
            raise gr.Error(str(e)) from None

    async def classify_image(self, image: str | None, model: str) -> tuple[dict | None, str | None]:
        """An image file -> the model's top classes (label: probability) and the image as the model sees it (an
        <img> with the PNG inline)."""
        predictions, view, _ = await self.classify(image, self.known_entry(model).id)
        return predictions, view

    def known_entry(self, model: str) -> ZooEntry:
        """The entry with this id, else the client's error naming the known ones."""
        try:
            return self.zoos.entry(clip(str(model), ENTRY_ID_CHARS))  # no id is longer: a longer value is only echoed
        except KeyError as e:
            raise client_error(e.args[0]) from None

    def choose(self, budget: dict[str, str | float | None]) -> tuple[ZooEntry | None, dict]:
        """A budget through REST's own checks and chooser: the entry and what POST /api/specialize answers, or None
        and the body of its error (the nearest entries when nothing fits, the problem with a bad number, the
        progress while this server measures the latencies a latency budget needs)."""
        try:
            body = Budget.model_validate({k: (v.strip() or None) if isinstance(v, str) else v  # empty: no limit
                                          for k, v in budget.items()})
            entry, variant = choose_file(self.server, body)
        except ValidationError as e:
            problems, message = describe_problems(e.errors())
            return None, {"error": f"invalid request: {message}", "problems": problems}  # REST's 422
        except ApiError as e:
            return None, {"error": e.message, **e.extra}
        return entry, {**specialized_json(self.server, entry), "budget": body.model_dump(),
                       "variant": variant and variant_json(self.server, entry, variant)}

    def within_budget(self) -> str:
        return f"The most accurate (point estimate) of the {len(self.zoos.entries)} entries within the budget."

    # -- the page's handlers -----------------------------------------------------------------------
    def apply_budget(self, max_params: float | None, max_flops: float | None, max_latency: float | None, axis: str,
                     max_bytes: str | None, request: gr.Request):
        """Budget (slider units; file bytes as written, '120K') -> summary, plot, per-layer table, card, chosen id,
        try-it model, downloads, the chosen file's variant (a bytes budget's) and its download."""
        entry, answer = self.choose({"max_params": scaled(max_params, self.params),
                                     "max_flops": scaled(max_flops, self.flops),
                                     "max_latency_ms": self.latency_limit(max_latency), "max_bytes": max_bytes})
        if entry is None:
            self.latest.set(request.session_hash, None)
            return (failure_markdown(answer), self.plot(None, axis), [], "", None, gr.skip(),
                    *[gr.DownloadButton(interactive=False) for _ in DOWNLOAD_BUTTONS], None,
                    gr.DownloadButton(interactive=False))
        return self.show(entry, axis, self.within_budget(), request, answer["variant"])

    def latency_limit(self, value: float | None) -> float | None:
        """The latency slider as a limit: none at its maximum (every entry's zoo latency is under it), so that a
        bytes budget there is not refused for the variants no one timed (`export sizes --latency` times them)."""
        if self.latency is None or value is None or value >= self.latency.maximum:
            return None
        return value

    def pick_row(self, axis: str, event: gr.SelectData, request: gr.Request):
        """A click on a row of the entries table chooses that entry (the budget is not applied)."""
        return self.pick(event.row_value[0], axis, "table", request)

    def pick_point(self, axis: str, event: gr.SelectData, request: gr.Request):
        """A click on a marker of the Pareto plot chooses that entry (the budget is not applied)."""
        return self.pick(event.value, axis, "plot", request)

    def pick(self, entry_id: str, axis: str, where: str, request: gr.Request):
        try:
            entry = self.zoos.entry(entry_id)
        except KeyError as e:
            raise client_error(e.args[0]) from None
        return self.show(entry, axis, f"Picked in the {where} (the budget above is not applied).", request)

    def show(self, entry: ZooEntry, axis: str, why: str, request: gr.Request, variant: dict | None = None):
        """The outputs for a chosen entry (and the file a bytes budget chose); the download buttons stay disarmed
        until prepare_downloads and prepare_file."""
        self.latest.set(request.session_hash, entry.id)
        zoo = self.zoos.zoo_of(entry)
        return (summary_markdown(self.server, entry, why, variant), self.plot(entry.id, axis), layer_table(zoo, entry),
                card_markdown(zoo, entry), entry.id, entry.id,
                *[gr.DownloadButton(interactive=False) for _ in DOWNLOAD_BUTTONS], variant and variant["name"],
                gr.DownloadButton(interactive=False))

    def latency_info(self) -> str:
        """Whose numbers set the latency slider's range (the zoos'), and whose a budget reads."""
        sources = [zoo_latency(z, z.entries[0]) for z in self.zoos.zoos]
        hosts = "; ".join(dict.fromkeys(f"{source.host}, {source.provider}" for source in sources))
        return (f"median per image; the range is the zoo's numbers ({hosts}); a budget reads this server's own once "
                f"it measured them")

    def entries(self) -> tuple[dict, str]:
        """The entries table and who measured its latencies, as of now (each page load: latencies measured here since
        start replace the zoo's)."""
        return entries_table(self.server), latency_sources(self.server)

    def plot(self, entry_id: str | None, axis: str) -> str:
        """The Pareto plot over `axis` with the chosen entry (None: no entry) starred."""
        scale = {"params": self.params, "flops": self.flops}[axis]
        return pareto_svg(self.zoos, None if entry_id is None else self.zoos.entry(entry_id), axis, scale,
                          self.server.compare)

    def prepare_downloads(self, entry_id: str | None, request: gr.Request):
        """Export the chosen entry (cached after the first time) and arm the download buttons."""
        if entry_id is None:
            return [gr.DownloadButton(value=None, interactive=False) for _ in DOWNLOAD_BUTTONS]
        try:
            files = [str(self.server.named_download(self.zoos.entry(entry_id), kind)) for kind in DOWNLOAD_BUTTONS]
        except CacheError as e:
            raise gr.Error(str(e)) from None
        if not self.latest.is_current(request.session_hash, entry_id):
            return [gr.skip() for _ in DOWNLOAD_BUTTONS]
        return [gr.DownloadButton(value=f, interactive=True) for f in files]

    def prepare_file(self, entry_id: str | None, variant: str | None, request: gr.Request):
        """Export the file a bytes budget chose (cached after the first time) and arm its button; disarmed when the
        choice was not a bytes budget's."""
        if entry_id is None or variant is None:
            return gr.DownloadButton(value=None, interactive=False)
        try:
            path = self.server.named_variant_download(self.zoos.entry(entry_id), variant)
        except CacheError as e:
            raise gr.Error(str(e)) from None
        if not self.latest.is_current(request.session_hash, entry_id):
            return gr.skip()
        return gr.DownloadButton(value=str(path), interactive=True)

    async def classify(self, image: str | None, model: str):
        """An image file -> its top classes by the model (an entry id), the model's view of it, and the path (to
        re-run on a model change)."""
        if not image or not Path(image).is_file():  # nothing yet, or Gradio's copy expired
            return None, None, None
        try:
            entry = self.zoos.entry(model)
            zoo = self.zoos.zoo_of(entry)
            view = await asyncio.to_thread(self.model_view, Path(image), zoo)
            x = to_input(view, zoo.preprocessing)
            [result] = await self.server.classify(entry, [x], len(self.zoos.classes))
        except ImageError as e:
            raise client_error(str(e)) from None
        except CacheError as e:  # a cold model is exported first: that can fail on a full disk
            raise gr.Error(str(e)) from None
        shown = inline_png(view, 8, "the image as the model sees it")  # pixels stay visible
        return {r["label"]: r["probability"] for r in result}, shown, image

    def model_view(self, path: Path, zoo: Zoo) -> Image.Image:
        """The image as a model of `zoo` sees it (each zoo preprocesses as it was evaluated)."""
        image = decode_image(path.read_bytes(), path.name, self.server.config.limits)
        return model_view(image, zoo.preprocessing)

    async def classify_sample(self, entry_id: str, event: gr.SelectData):
        return await self.classify(str(self.samples[event.index]), entry_id)

    def push(self, admin_token: str, repo_id: str, what: str, entry_id: str | None) -> str:
        if not self.server.is_admin(admin_token):
            return "**Wrong admin token.**"
        if entry_id is None:
            return "**Choose a model first** (no model fits the current budget)."
        entry = self.zoos.entry(entry_id)
        try:
            url = self.server.push(repo_id.strip(), self.zoos.zoo_of(entry) if what == WHOLE_ZOO else entry)
        except HubError as e:
            return f"**Push failed:** {e}"
        return f"Pushed to [{url}]({url})."

    # -- layout --------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        zoos = self.zoos
        with gr.Blocks(title=f"PreZoo · {zoos.name}", delete_cache=(3600, 3600)) as ui:  # Gradio's file copies: 1 h
            self.api_endpoints()
            chosen = gr.State(self.server.default_entry.id)
            chosen_file = gr.State(None)  # the variant a bytes budget chose
            sliced = " and ".join(f"{len(z.entries)} {z.family.noun}s sliced from one supernet (search space "
                                  f"`{z.space.name}`{', each fine-tuned standalone' if z.tuned else ''})"
                                  for z in zoos.zoos)
            gr.Markdown(f"# PreZoo · {zoos.name}\n{sliced}. Set a budget: you get the most accurate model that fits. "
                        f"Or pick one in the table or the plot. Accuracy: {zoos.choice_text()}."
                        f"{compare_note(self.server)}")
            with gr.Tab("Specialize"):
                tab = self.specialize_tab()
            with gr.Tab("Try it"):
                model = self.try_it_tab()
            if self.server.push_enabled:
                with gr.Tab("Push to the Hub"):
                    self.push_tab(chosen)

            outputs = [*tab.outputs, chosen, model, *tab.buttons, chosen_file, tab.file]

            def wire(trigger, handler, inputs) -> None:
                """A page event that chooses an entry, then arms the download buttons: both the page's own."""
                trigger(handler, inputs, outputs, api_visibility="private"
                        ).then(self.prepare_downloads, chosen, tab.buttons, api_visibility="private"
                               ).then(self.prepare_file, [chosen, chosen_file], tab.file, api_visibility="private")

            budget = [*tab.budget, tab.axis, tab.max_bytes]
            wire(tab.go.click, self.apply_budget, budget)
            wire(tab.max_bytes.submit, self.apply_budget, budget)
            for slider in tab.budget:  # on release: the end of a drag, or leaving (or Enter in) the number box
                if isinstance(slider, gr.Slider):
                    wire(slider.release, self.apply_budget, budget)
            wire(ui.load, self.apply_budget, budget)
            ui.load(self.entries, None, [tab.entries, tab.sources], api_visibility="private")
            wire(tab.entries.select, self.pick_row, tab.axis)
            wire(tab.plot.select, self.pick_point, tab.axis)
            tab.axis.change(self.plot, [chosen, tab.axis], tab.plot, api_visibility="private")
        return ui

    def api_endpoints(self) -> None:
        """The Gradio API: events no element of the page triggers, over hidden components that name their inputs and
        outputs, so the API stays what it is however the page is laid out. Registered before the page's events, so
        their names are exactly /specialize, /download and /classify (the page's take their functions' names)."""
        ids = [e.id for e in sorted(self.zoos.entries, key=lambda e: e.params)]

        def model() -> gr.Dropdown:  # the ids listed; an unknown one gets our error, not a logged traceback
            return gr.Dropdown(ids, value=self.server.default_entry.id, label="model", allow_custom_value=True)

        with gr.Column(visible=False):
            budget = [gr.Textbox(label=name, info=f"{how}; empty: no limit") for name, how in (
                ("max_params", "parameters, e.g. 0.3M or 300K"), ("max_flops", "FLOPs (MACs), e.g. 20M or 1.4G"),
                ("max_latency_ms", "median latency, e.g. 12ms or 0.5s"),
                ("max_bytes", "ONNX file bytes, e.g. 120K (K: 1,000 bytes)"))]
            chosen = [gr.Textbox(label="model"), gr.Markdown(label="summary"), gr.JSON(label="answer")]
            wanted = [model(), gr.Dropdown(list(DOWNLOADS), value="onnx", label="kind", allow_custom_value=True)]
            file = gr.File(label="file")
            image = [gr.File(label="image", file_types=["image"], type="filepath"), model()]
            classified = [gr.Label(num_top_classes=5, label="predictions"), gr.HTML(label="model_view")]
        gr.on([], self.specialize, budget, chosen, api_name="specialize")
        gr.on([], self.download, wanted, file, api_name="download")
        gr.on([], self.classify_image, image, classified, api_name="classify")

    def specialize_tab(self) -> SpecializeTab:
        with gr.Row():
            with gr.Column(scale=2), gr.HTML(html_template="@children", js_on_load=BLUR_ON_ENTER, elem_id="budget"):
                budget = [self.params.slider(elem_id="max-params"), self.flops.slider(elem_id="max-flops"),
                          self.latency.slider(elem_id="max-latency", info=self.latency_info()) if self.latency else
                          gr.Number(None, label="Max latency (ms): not measured for this zoo", visible=False)]
                max_bytes = gr.Textbox(label="Max ONNX file bytes", placeholder="e.g. 120K; empty: no limit",
                                       info="picks the most accurate file: an entry's fp32 one, or its weights "
                                            "stored at 16, 8 or 4 bits", elem_id="max-bytes")
                axis = gr.Radio(["params", "flops"], value="params", label="Pareto plot x-axis")
                go = gr.Button("Specialize", variant="primary")
            with gr.Column(scale=3):
                summary = gr.Markdown(elem_id="chosen")
                plot = gr.HTML(label="Pareto front (click a point to choose it)", show_label=True, container=True,
                               js_on_load=SELECT_NEAREST_POINT, elem_id="pareto",
                               css_template=PLOT_CSS)
        with gr.Row():
            buttons = [gr.DownloadButton(f"Download {label}", interactive=False, elem_id=f"download-{kind}")
                       for kind, label in DOWNLOAD_BUTTONS.items()]
            file = gr.DownloadButton("Download the chosen file", interactive=False, elem_id="download-file")
        entries = gr.Dataframe(entries_table(self.server), elem_id="entries", headers=ENTRY_HEADERS,
                               datatype=ENTRY_TYPES, label="All entries (click a row to choose it)", interactive=False,
                               max_height=760)  # 20 rows before it scrolls
        sources = gr.Markdown(latency_sources(self.server), elem_id="latency-sources")
        family = self.zoos.zoo_of(self.server.default_entry).family  # each entry's table brings its family's headers
        layers = gr.Dataframe(headers=list(family.layer_headers), label="Architecture, per layer",
                              interactive=False)
        with gr.Accordion("Model card", open=False):
            card = gr.Markdown()
        return SpecializeTab(budget, axis, go, plot, entries, sources, [summary, plot, layers, card], buttons,
                             max_bytes, file)

    def try_it_tab(self) -> gr.Dropdown:
        """Upload or pick a sample -> predictions; returns the model dropdown (specialize sets it)."""
        current = gr.State(None)  # the image file last classified
        gr.Markdown(input_notes(self.zoos), elem_id="input-note")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label=f"Upload an image ({', '.join(FORMATS)})", file_types=["image"],
                                 type="filepath", elem_id="try-file")
                choices = [(f"{e.id}  ({human(e.params)} params, top-1 {e.top1:.2f}% ({interval_text(self.zoos, e)}))"
                            if e.top1 is not None else e.id, e.id)
                           for e in sorted(self.zoos.entries, key=lambda e: e.params)]
                model = gr.Dropdown(choices, value=self.server.default_entry.id, label="Model")
            with gr.Column():
                predictions = gr.Label(num_top_classes=5, label="Predictions", elem_id="predictions")
                sizes = " or ".join(dict.fromkeys(f"{p['img_size']}x{p['img_size']}, "
                                                  f"{'gray' if p['in_chans'] == 1 else 'RGB'}"
                                                  for p in (z.preprocessing for z in self.zoos.zoos)))
                view = gr.HTML(label=f"What the model sees ({sizes})",
                               show_label=True, container=True, elem_id="model-view")
        tried = [predictions, view, current]
        upload.upload(self.classify, [upload, model], tried, api_visibility="private")
        model.change(self.classify, [current, model], tried, api_visibility="private")
        if self.samples:
            gallery = gr.Gallery([str(p) for p in self.samples], columns=len(self.samples), height=140,
                                 allow_preview=False, label="…or click a Fashion-MNIST test image", elem_id="samples")
            gallery.select(self.classify_sample, model, tried, api_visibility="private")
        return model

    def push_tab(self, chosen: gr.State) -> None:
        gr.Markdown("Pushes the chosen model (safetensors, config, card) or the whole zoo with the server's Hub token. "
                    "Needs the admin token.")
        admin_token = gr.Textbox(type="password", label="Admin token")
        repo_id = gr.Textbox(label="Hub repo id", placeholder="org/name")
        what = gr.Radio(["the chosen model", WHOLE_ZOO], value="the chosen model", label="What")
        result = gr.Markdown()
        gr.Button("Push").click(self.push, [admin_token, repo_id, what, chosen], result, api_visibility="private")
