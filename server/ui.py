"""The Gradio UI: budget -> chosen model (numbers, per-layer table, card, Pareto plot, downloads), a "try it" tab
and, with an admin token configured, a Hub push form. It calls the same `PreZooServer` as the REST API."""

from __future__ import annotations

import asyncio
import math
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from matplotlib.figure import Figure
from PIL import Image

from export.cache import CacheError
from export.hf import model_card
from server.images import FORMATS, ImageError, decode_image, model_view, to_input
from server.state import PreZooServer
from zoo.budget import human
from zoo.hub import HubError
from zoo.store import BudgetError, Zoo, ZooEntry

LAYER_HEADERS = ["layer", "heads", "qkv width", "MLP ratio", "MLP width"]
DOWNLOAD_BUTTONS = {"safetensors": "safetensors", "onnx": "ONNX", "onnx-int8": "ONNX INT8"}
WHOLE_ZOO = "the whole zoo"


@dataclass(frozen=True)
class SliderScale:
    """A slider over [lowest/2, highest] of a cost, shown in a readable unit (K, M or G)."""

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
        digits = 2 - math.floor(math.log10(max(values) / factor))  # about 100-1000 steps over the range
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


def pareto_figure(zoo: Zoo, chosen: ZooEntry | None, by: str, scale: SliderScale) -> Figure:
    """Top-1 vs cost (`by`: params or flops, in the unit of `scale`) of every entry, the Pareto front joined, the
    chosen one starred."""
    cost = {"params": lambda e: e.params / scale.factor, "flops": lambda e: e.flops / scale.factor}[by]
    scored = [e for e in zoo.entries if e.top1 is not None]
    fig = Figure(figsize=(6.4, 4), dpi=100, layout="tight")
    ax = fig.add_subplot()
    ax.scatter([cost(e) for e in scored], [e.top1 for e in scored], color="#9ca3af", label="zoo entries", zorder=2)
    front = zoo.pareto(by)
    ax.plot([cost(e) for e in front], [e.top1 for e in front], "-o", color="#2563eb", label="Pareto front", zorder=3)
    if chosen is not None and chosen.top1 is not None:
        ax.scatter([cost(chosen)], [chosen.top1], marker="*", s=320, color="#dc2626", label=f"chosen {chosen.id}",
                   zorder=4)
    ax.set_xlabel(scale.label)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def summary_markdown(zoo: Zoo, entry: ZooEntry) -> str:
    top1 = f"{entry.top1:.2f}%" if entry.top1 is not None else "–"
    top5 = f"{entry.top5:.2f}%" if entry.top5 is not None else "–"
    latency = f"{entry.latency_ms:.3f} ms" if entry.latency_ms is not None else "not measured"
    return (f"### Chosen: `{entry.id}`\nThe most accurate of the {len(zoo.entries)} entries within the budget. "
            f"Embed {entry.arch.embed_dim}, depth {entry.arch.depth}.\n\n"
            f"| parameters | FLOPs (MACs) | top-1 | top-5 | latency |\n|---|---|---|---|---|\n"
            f"| {entry.params:,} ({human(entry.params)}) | {human(entry.flops)} | {top1} | {top5} | {latency} |")


def layer_rows(zoo: Zoo, entry: ZooEntry) -> list[list]:
    a = entry.arch
    return [[i, h, a.qkv_dim(i, zoo.space.head_dim), r, a.mlp_dim(i)]
            for i, (h, r) in enumerate(zip(a.num_heads, a.mlp_ratios, strict=True))]


def card_markdown(zoo: Zoo, entry: ZooEntry) -> str:
    """The model card without its YAML front matter (Hub metadata, not for reading)."""
    return re.sub(r"\A---\n.*?\n---\n", "", model_card(zoo, entry), flags=re.DOTALL)


@dataclass
class SpecializeTab:
    budget: list[gr.components.Component]
    go: gr.Button
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
        zoo, scale = self.zoo, {"params": self.params, "flops": self.flops}[axis]
        disarmed = [gr.DownloadButton(interactive=False) for _ in DOWNLOAD_BUTTONS]  # until prepare_downloads
        try:
            entry = zoo.query(max_params * self.params.factor, max_flops * self.flops.factor,
                              max_latency if self.latency else None)
        except (BudgetError, ValueError) as e:
            self.latest.set(request.session_hash, None)
            title = "No model fits this budget" if isinstance(e, BudgetError) else "Invalid budget"
            return f"### {title}\n{e}", pareto_figure(zoo, None, axis, scale), [], "", None, gr.skip(), *disarmed
        self.latest.set(request.session_hash, entry.id)
        return (summary_markdown(zoo, entry), pareto_figure(zoo, entry, axis, scale), layer_rows(zoo, entry),
                card_markdown(zoo, entry), entry.id, entry.id, *disarmed)

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
        shown = view.resize((8 * view.width, 8 * view.height), Image.Resampling.NEAREST)  # pixels stay visible
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
            gr.Markdown(f"# PreZoo · {zoo.name}\n{len(zoo.entries)} vision transformers sliced from one supernet "
                        f"(search space `{zoo.space.name}`). Set a budget: you get the most accurate model that fits.")
            with gr.Tab("Specialize"):
                tab = self.specialize_tab()
            with gr.Tab("Try it"):
                model = self.try_it_tab()
            if self.server.push_enabled:
                with gr.Tab("Push to the Hub"):
                    self.push_tab(chosen)

            outputs = [*tab.outputs[:4], chosen, model, *tab.buttons]

            def wire(trigger, api_name: str | None = None) -> None:
                trigger(self.specialize, tab.budget, outputs, api_name=api_name,
                        api_visibility="public" if api_name else "private"
                        ).then(self.prepare_downloads, chosen, tab.buttons, api_visibility="private")

            wire(tab.go.click, api_name="specialize")
            for control in tab.budget:  # sliders on release, the plot axis on change
                wire(control.release if isinstance(control, gr.Slider) else control.change)
            wire(ui.load)
        return ui

    def specialize_tab(self) -> SpecializeTab:
        with gr.Row():
            with gr.Column(scale=2):
                budget = [self.params.slider(elem_id="max-params"), self.flops.slider(elem_id="max-flops"),
                          self.latency.slider(elem_id="max-latency") if self.latency else
                          gr.Number(None, label="Max latency (ms): not measured for this zoo", visible=False),
                          gr.Radio(["params", "flops"], value="params", label="Pareto plot x-axis")]
                go = gr.Button("Specialize", variant="primary")
            with gr.Column(scale=3):
                summary = gr.Markdown(elem_id="chosen")
                plot = gr.Plot(label="Pareto front")
        with gr.Row():
            buttons = [gr.DownloadButton(f"Download {label}", interactive=False, elem_id=f"download-{kind}")
                       for kind, label in DOWNLOAD_BUTTONS.items()]
        layers = gr.Dataframe(headers=LAYER_HEADERS, label="Architecture, per layer", interactive=False)
        with gr.Accordion("Model card", open=False):
            card = gr.Markdown()
        return SpecializeTab(budget, go, [summary, plot, layers, card], buttons)

    def try_it_tab(self) -> gr.Dropdown:
        """Upload or pick a sample -> predictions; returns the model dropdown (specialize sets it)."""
        pre = self.zoo.preprocessing
        current = gr.State(None)  # the image file last classified
        with gr.Row():
            with gr.Column():
                upload = gr.File(label=f"Upload an image ({', '.join(FORMATS)})", file_types=["image"],
                                 type="filepath", elem_id="try-file")
                choices = [(f"{e.id}  ({human(e.params)} params, top-1 {e.top1})", e.id)
                           for e in sorted(self.zoo.entries, key=lambda e: e.params)]
                model = gr.Dropdown(choices, value=self.server.default_entry.id, label="Model")
            with gr.Column():
                predictions = gr.Label(num_top_classes=5, label="Predictions", elem_id="predictions")
                view = gr.Image(label=f"What the model sees ({pre['img_size']}x{pre['img_size']}, "
                                      f"{'gray' if pre['in_chans'] == 1 else 'RGB'})",
                                interactive=False, height=200, elem_id="model-view")
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
