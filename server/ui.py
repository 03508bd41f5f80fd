"""The Gradio UI: budget -> chosen model (numbers with their 95% intervals, per-layer table, card, Pareto plot,
downloads), or a model picked from the table of all entries or from the plot; a "try it" tab and, with an admin
token configured, a Hub push form. It calls the same `PreZooServer` as the REST API.

Everything the public endpoints (/specialize, /classify) answer is data inline (text, HTML, an SVG plot, a PNG as a
data: URI): no path of a server file."""

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

from export.cache import CacheError
from export.hf import model_card, scale_cost_axis
from server.images import FORMATS, ImageError, decode_image, model_view, to_input
from server.profile import zoo_latency
from server.state import PreZooServer
from zoo.budget import human
from zoo.pull import HubError
from zoo.store import BudgetError, Zoo, ZooEntry

DOWNLOAD_BUTTONS = {"hf-zip": "HF folder (zip)", "safetensors": "safetensors", "onnx": "ONNX",
                    "onnx-fp16": "ONNX fp16", "onnx-int8": "ONNX INT8"}
WHOLE_ZOO = "the whole zoo"
POINT = "point-"  # SVG id prefix of an entry's marker in the Pareto plot: POINT + entry id
COMPARE = "compare-"  # SVG id prefix of a compared zoo's marker: COMPARE + zoo number + "-" + entry id (no choice)
INTERVALS = "intervals-"  # SVG id of a zoo's error bars: INTERVALS + "served" or the compared zoo's number
COMPARE_STYLES = [("#d97706", "s"), ("#059669", "^"), ("#7c3aed", "D"), ("#db2777", "v")]  # colour, marker per zoo
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


def pareto_svg(zoo: Zoo, chosen: ZooEntry | None, by: str, scale: SliderScale, compare: Sequence[Zoo] = ()) -> str:
    """Top-1 vs cost (`by`: params or flops, in the unit of `scale`) of every entry with its 95% interval as an error
    bar, the Pareto front joined, the chosen one starred; an inline SVG whose markers carry ids POINT + entry id (so a
    click can choose one). Each zoo in `compare` adds its entries and front in its own colour and marker, with ids
    COMPARE + its number + "-" + entry id: shown, never chosen."""
    cost = {"params": lambda e: e.params / scale.factor, "flops": lambda e: e.flops / scale.factor}[by]
    scored = sorted((e for e in zoo.entries if e.top1 is not None), key=cost)
    front = zoo.pareto(by)
    fig = Figure(figsize=(6.4, 4), dpi=100, layout="tight")
    ax = fig.add_subplot()
    plot_intervals(ax, zoo, scored, cost, "#9ca3af", f"{INTERVALS}served", "95% interval")
    ax.plot([cost(e) for e in front], [e.top1 for e in front], "-", color="#2563eb", zorder=2,
            label=f"Pareto front, {zoo_label(zoo)}" if compare else "Pareto front")
    labelled = set()
    for e in scored:
        kind = "on the front" if e in front else "zoo entry"
        ax.plot([cost(e)], [e.top1], "o", markersize=8, color="#2563eb" if e in front else "#6b7280", zorder=3,
                gid=f"{POINT}{e.id}", label=kind if kind not in labelled else "_nolegend_")
        labelled.add(kind)
    if chosen is not None and chosen.top1 is not None:
        ax.scatter([cost(chosen)], [chosen.top1], marker="*", s=320, color="#dc2626", label=f"chosen {chosen.id}",
                   zorder=4)
    compared = [plot_compared_zoo(ax, other, number, by, cost) for number, other in enumerate(compare)]
    scale_cost_axis(ax, [cost(e) for e in scored + [e for entries in compared for e in entries]])
    ax.set_xlabel(scale.label)
    ax.set_ylabel("top-1 accuracy (%)")
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


def plot_intervals(ax, zoo: Zoo, entries: list[ZooEntry], cost: Callable[[ZooEntry], float], colour: str, gid: str,
                   label: str) -> None:
    """Each entry's 95% top-1 interval as an error bar (SVG group `gid`); nothing when the zoo records no test-set
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
            f"predictions use {server.zoo.name} alone.")


def interval_text(zoo: Zoo, entry: ZooEntry) -> str:
    interval = zoo.top1_interval(entry)
    return f"{interval[0]:.2f}–{interval[1]:.2f}" if interval else "–"


def latency_note(server: PreZooServer) -> str:
    """Who measured the latencies shown: this server (host, provider, how) once it has, else the zoo's builder."""
    zoo, progress = server.zoo, server.profiler.progress()
    how = zoo.latency_protocol_text()
    built = ("not measured for this zoo (`prezoo profile` measures it)" if how is None else
             f"{how}; measured when the zoo was built, not on this server")
    if progress["state"] == "off":
        return f"Latency: {built}."
    here = f"on this server ({progress['provider']}): {progress['protocol']}"
    if progress["state"] == "done" and not progress["failed"]:
        return f"Latency: measured {here}."
    return (f"Latency: {progress['profiled']} of {progress['entries']} entries measured {here}; the others: {built}. "
            f"Budgets read this server's numbers where it has them.")


def summary_markdown(server: PreZooServer, entry: ZooEntry, why: str) -> str:
    zoo = server.zoo
    top1 = f"{entry.top1:.2f}% ({interval_text(zoo, entry)})" if entry.top1 is not None else "–"
    top5 = f"{entry.top5:.2f}%" if entry.top5 is not None else "–"
    measured = server.profiler.latency(entry)
    latency = f"{measured.median_ms:.3f} ms ({measured.describe()})" if measured else "not measured"
    note = server.equivalence_note(entry)
    return (f"### Chosen: `{entry.id}`\n{why} {zoo.family.describe_arch(zoo.space, entry.arch)}\n\n"
            f"| parameters | FLOPs (MACs) | top-1 (95% interval) | top-5 | latency |\n|---|---|---|---|---|\n"
            f"| {entry.params:,} ({human(entry.params)}) | {human(entry.flops)} | {top1} | {top5} | {latency} |\n\n"
            + (f"**Cheaper and as accurate:** {note}\n\n" if note else "") + latency_note(server))


def entry_rows(server: PreZooServer, params: SliderScale, flops: SliderScale) -> list[list]:
    """One row per entry, cheapest first (the first cell is the id: a selected row names its entry), with its latency
    and who measured it (as of now: this server's numbers replace the zoo's as they are measured)."""
    zoo = server.zoo
    front = {e.id for e in zoo.pareto("params")}
    latencies = {e.id: server.profiler.latency(e) for e in zoo.entries}
    return [[e.id, round(e.params / params.factor, 1), round(e.flops / flops.factor, 2), e.top1,
             interval_text(zoo, e), e.top5, (m := latencies[e.id]) and round(m.median_ms, 3), m and m.describe(),
             "yes" if e.id in front else ""]
            for e in sorted(zoo.entries, key=lambda e: e.params)]


def layer_rows(zoo: Zoo, entry: ZooEntry) -> list[list]:
    """The entry's layers as its family tabulates them (under `zoo.family.layer_headers`)."""
    return zoo.family.layer_rows(zoo.space, entry.arch)


def card_markdown(zoo: Zoo, entry: ZooEntry) -> str:
    """The model card without its YAML front matter (Hub metadata, not for reading)."""
    return re.sub(r"\A---\n.*?\n---\n", "", model_card(zoo, entry), flags=re.DOTALL)


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
    outputs: list[gr.components.Component]
    buttons: list[gr.DownloadButton]


class PreZooUI:
    """Handlers (methods) and layout (`build`) of the UI; every handler goes through the shared server state."""

    def __init__(self, server: PreZooServer, samples: list[Path]) -> None:
        self.server, self.zoo, self.samples = server, server.zoo, samples
        self.params = SliderScale.of("parameters", [e.params for e in self.zoo.entries])
        self.flops = SliderScale.of("FLOPs", [e.flops for e in self.zoo.entries])
        latencies = [e.latency_ms for e in self.zoo.entries]
        self.latency = SliderScale.of("latency", latencies, unit="ms") if None not in latencies else None
        self.latest = LatestChoice()

    # -- handlers ------------------------------------------------------------------------------
    def specialize(self, max_params: float, max_flops: float, max_latency: float | None, axis: str,
                   request: gr.Request):
        """Budget (slider units) -> summary, plot, per-layer table, card, chosen id, try-it model, downloads."""
        try:
            entry = self.server.profiler.query(max_params * self.params.factor, max_flops * self.flops.factor,
                                               max_latency if self.latency else None)
        except (BudgetError, ValueError) as e:
            self.latest.set(request.session_hash, None)
            title = "No model fits this budget" if isinstance(e, BudgetError) else "Invalid budget"
            return (f"### {title}\n{e}", self.plot(None, axis), [], "", None, gr.skip(),
                    *[gr.DownloadButton(interactive=False) for _ in DOWNLOAD_BUTTONS])
        return self.show(entry, axis, f"The most accurate (point estimate) of the {len(self.zoo.entries)} entries "
                                      f"within the budget.", request)

    def pick_row(self, axis: str, event: gr.SelectData, request: gr.Request):
        """A click on a row of the entries table chooses that entry (the budget is not applied)."""
        return self.pick(event.row_value[0], axis, "table", request)

    def pick_point(self, axis: str, event: gr.SelectData, request: gr.Request):
        """A click on a marker of the Pareto plot chooses that entry (the budget is not applied)."""
        return self.pick(event.value, axis, "plot", request)

    def pick(self, entry_id: str, axis: str, where: str, request: gr.Request):
        try:
            entry = self.zoo.entry(entry_id)
        except KeyError as e:
            raise gr.Error(e.args[0]) from None
        return self.show(entry, axis, f"Picked in the {where} (the budget above is not applied).", request)

    def show(self, entry: ZooEntry, axis: str, why: str, request: gr.Request):
        """The outputs for a chosen entry; the download buttons stay disarmed until prepare_downloads."""
        self.latest.set(request.session_hash, entry.id)
        return (summary_markdown(self.server, entry, why), self.plot(entry.id, axis), layer_rows(self.zoo, entry),
                card_markdown(self.zoo, entry), entry.id, entry.id,
                *[gr.DownloadButton(interactive=False) for _ in DOWNLOAD_BUTTONS])

    def latency_info(self) -> str:
        """Whose numbers set the latency slider's range (the zoo's), and whose a budget reads."""
        source = zoo_latency(self.zoo, self.zoo.entries[0])
        return (f"median per image; the range is the zoo's numbers ({source.host}, {source.provider}); a budget "
                f"reads this server's own once it measured them")

    def entries(self) -> list[list]:
        """The entries table as of now (each page load: latencies measured here since start replace the zoo's)."""
        return entry_rows(self.server, self.params, self.flops)

    def plot(self, entry_id: str | None, axis: str) -> str:
        """The Pareto plot over `axis` with the chosen entry (None: no entry) starred."""
        scale = {"params": self.params, "flops": self.flops}[axis]
        return pareto_svg(self.zoo, None if entry_id is None else self.zoo.entry(entry_id), axis, scale,
                          self.server.compare)

    def prepare_downloads(self, entry_id: str | None, request: gr.Request):
        """Export the chosen entry (cached after the first time) and arm the download buttons."""
        if entry_id is None:
            return [gr.DownloadButton(value=None, interactive=False) for _ in DOWNLOAD_BUTTONS]
        try:
            files = [str(self.server.named_download(self.zoo.entry(entry_id), kind)) for kind in DOWNLOAD_BUTTONS]
        except CacheError as e:
            raise gr.Error(str(e)) from None
        if not self.latest.is_current(request.session_hash, entry_id):
            return [gr.skip() for _ in DOWNLOAD_BUTTONS]
        return [gr.DownloadButton(value=f, interactive=True) for f in files]

    async def classify(self, path: str | None, entry_id: str):
        """An image file -> its top classes, the model's view of it, and the path (to re-run on a model change)."""
        if not path or not Path(path).is_file():  # nothing yet, or Gradio's copy expired
            return None, None, None
        try:
            view = await asyncio.to_thread(self.model_view, Path(path))
            x = to_input(view, self.zoo.preprocessing)
            [result] = await self.server.classify(self.zoo.entry(entry_id), [x], len(self.zoo.classes))
        except (ImageError, CacheError) as e:  # a cold model is exported first: that can fail on a full disk
            raise gr.Error(str(e)) from None
        shown = inline_png(view, 8, "the image as the model sees it")  # pixels stay visible
        return {r["label"]: r["probability"] for r in result}, shown, path

    def model_view(self, path: Path) -> Image.Image:
        image = decode_image(path.read_bytes(), path.name, self.server.config.limits)
        return model_view(image, self.zoo.preprocessing)

    async def classify_sample(self, entry_id: str, event: gr.SelectData):
        return await self.classify(str(self.samples[event.index]), entry_id)

    def push(self, admin_token: str, repo_id: str, what: str, entry_id: str | None) -> str:
        if not self.server.is_admin(admin_token):
            return "**Wrong admin token.**"
        if what != WHOLE_ZOO and entry_id is None:
            return "**Choose a model first** (no model fits the current budget)."
        try:
            url = self.server.push(repo_id.strip(), None if what == WHOLE_ZOO else self.zoo.entry(entry_id))
        except HubError as e:
            return f"**Push failed:** {e}"
        return f"Pushed to [{url}]({url})."

    # -- layout --------------------------------------------------------------------------------
    def build(self) -> gr.Blocks:
        zoo = self.zoo
        with gr.Blocks(title=f"PreZoo · {zoo.name}", delete_cache=(3600, 3600)) as ui:  # Gradio's file copies: 1 h
            chosen = gr.State(self.server.default_entry.id)
            gr.Markdown(f"# PreZoo · {zoo.name}\n{len(zoo.entries)} {zoo.family.noun}s sliced from one supernet "
                        f"(search space `{zoo.space.name}`). Set a budget: you get the most accurate model that fits. "
                        f"Or pick one in the table or the plot.{compare_note(self.server)}")
            with gr.Tab("Specialize"):
                tab = self.specialize_tab()
            with gr.Tab("Try it"):
                model = self.try_it_tab()
            if self.server.push_enabled:
                with gr.Tab("Push to the Hub"):
                    self.push_tab(chosen)

            outputs = [*tab.outputs, chosen, model, *tab.buttons]

            def wire(trigger, handler, inputs, api_name: str | None = None) -> None:
                trigger(handler, inputs, outputs, api_name=api_name,
                        api_visibility="public" if api_name else "private"
                        ).then(self.prepare_downloads, chosen, tab.buttons, api_visibility="private")

            budget = [*tab.budget, tab.axis]
            wire(tab.go.click, self.specialize, budget, api_name="specialize")
            for slider in tab.budget:  # on release: the end of a drag, or leaving (or Enter in) the number box
                if isinstance(slider, gr.Slider):
                    wire(slider.release, self.specialize, budget)
            wire(ui.load, self.specialize, budget)
            ui.load(self.entries, None, tab.entries, api_visibility="private")
            wire(tab.entries.select, self.pick_row, tab.axis)
            wire(tab.plot.select, self.pick_point, tab.axis)
            tab.axis.change(self.plot, [chosen, tab.axis], tab.plot, api_visibility="private")
        return ui

    def specialize_tab(self) -> SpecializeTab:
        with gr.Row():
            with gr.Column(scale=2), gr.HTML(html_template="@children", js_on_load=BLUR_ON_ENTER, elem_id="budget"):
                budget = [self.params.slider(elem_id="max-params"), self.flops.slider(elem_id="max-flops"),
                          self.latency.slider(elem_id="max-latency", info=self.latency_info()) if self.latency else
                          gr.Number(None, label="Max latency (ms): not measured for this zoo", visible=False)]
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
        entries = gr.Dataframe(self.entries(), elem_id="entries",
                               headers=["id", self.params.label, self.flops.label, "top-1 %", "top-1 95% interval",
                                        "top-5 %", "latency ms", "latency measured", "Pareto (params)"],
                               label="All entries (click a row to choose it)", interactive=False)
        layers = gr.Dataframe(headers=list(self.zoo.family.layer_headers), label="Architecture, per layer",
                              interactive=False)
        with gr.Accordion("Model card", open=False):
            card = gr.Markdown()
        return SpecializeTab(budget, axis, go, plot, entries, [summary, plot, layers, card], buttons)

    def try_it_tab(self) -> gr.Dropdown:
        """Upload or pick a sample -> predictions; returns the model dropdown (specialize sets it)."""
        pre = self.zoo.preprocessing
        current = gr.State(None)  # the image file last classified
        gr.Markdown(input_note(self.zoo), elem_id="input-note")
        with gr.Row():
            with gr.Column():
                upload = gr.File(label=f"Upload an image ({', '.join(FORMATS)})", file_types=["image"],
                                 type="filepath", elem_id="try-file")
                choices = [(f"{e.id}  ({human(e.params)} params, top-1 {e.top1:.2f}% ({interval_text(self.zoo, e)}))"
                            if e.top1 is not None else e.id, e.id)
                           for e in sorted(self.zoo.entries, key=lambda e: e.params)]
                model = gr.Dropdown(choices, value=self.server.default_entry.id, label="Model")
            with gr.Column():
                predictions = gr.Label(num_top_classes=5, label="Predictions", elem_id="predictions")
                view = gr.HTML(label=f"What the model sees ({pre['img_size']}x{pre['img_size']}, "
                                     f"{'gray' if pre['in_chans'] == 1 else 'RGB'})",
                               show_label=True, container=True, elem_id="model-view")
        tried = [predictions, view, current]
        upload.upload(self.classify, [upload, model], tried, api_name="classify")
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
