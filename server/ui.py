"""The Gradio UI: budget -> chosen model (numbers, per-layer table, card, Pareto plot, downloads), a "try it" tab
and, with an admin token configured, a Hub push form. It calls the same `PreZooServer` as the REST API."""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import dataclass
from pathlib import Path

import gradio as gr
from matplotlib.figure import Figure

from export.hf import model_card
from server.images import ImageError
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

    label: str
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
        return cls(f"{what} ({unit})" if unit else what, factor, max(lo, step), hi, step)

    def slider(self, **kwargs) -> gr.Slider:
        return gr.Slider(self.minimum, self.maximum, value=self.maximum, step=self.step, label=self.label, **kwargs)


def pareto_figure(zoo: Zoo, chosen: ZooEntry | None, by: str) -> Figure:
    """Top-1 vs cost of every entry, the Pareto front joined, the chosen one starred."""
    cost = {"params": lambda e: e.params / 1e6, "flops": lambda e: e.flops / 1e6}[by]
    scored = [e for e in zoo.entries if e.top1 is not None]
    fig = Figure(figsize=(6.4, 4), dpi=100, layout="tight")
    ax = fig.add_subplot()
    ax.scatter([cost(e) for e in scored], [e.top1 for e in scored], color="#9ca3af", label="zoo entries", zorder=2)
    front = zoo.pareto(by)
    ax.plot([cost(e) for e in front], [e.top1 for e in front], "-o", color="#2563eb", label="Pareto front", zorder=3)
    if chosen is not None and chosen.top1 is not None:
        ax.scatter([cost(chosen)], [chosen.top1], marker="*", s=320, color="#dc2626", label=f"chosen {chosen.id}",
                   zorder=4)
    ax.set_xlabel({"params": "parameters (M)", "flops": "FLOPs (M multiply-accumulates)"}[by])
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


def build_ui(server: PreZooServer, samples: list[Path]) -> gr.Blocks:
    zoo = server.zoo
    params = SliderScale.of("Max parameters", [e.params for e in zoo.entries])
    flops = SliderScale.of("Max FLOPs", [e.flops for e in zoo.entries])
    latencies = [e.latency_ms for e in zoo.entries]
    has_latency = all(v is not None for v in latencies)
    latency = SliderScale.of("Max latency", latencies, unit="ms") if has_latency else None
    model_choices = [(f"{e.id}  ({human(e.params)} params, top-1 {e.top1})", e.id)
                     for e in sorted(zoo.entries, key=lambda e: e.params)]

    def specialize(max_params: float, max_flops: float, max_latency: float | None, axis: str):
        """Budget (slider units) -> summary, plot, per-layer table, card, chosen id, try-it model, downloads."""
        limit_latency = max_latency if latency is not None else None
        disarmed = [gr.DownloadButton(interactive=False) for _ in DOWNLOAD_BUTTONS]  # until prepare_downloads
        try:
            entry = zoo.query(max_params * params.factor, max_flops * flops.factor, limit_latency)
        except (BudgetError, ValueError) as e:
            title = "No model fits this budget" if isinstance(e, BudgetError) else "Invalid budget"
            return f"### {title}\n{e}", pareto_figure(zoo, None, axis), [], "", None, gr.skip(), *disarmed
        return (summary_markdown(zoo, entry), pareto_figure(zoo, entry, axis), layer_rows(zoo, entry),
                card_markdown(zoo, entry), entry.id, entry.id, *disarmed)

    def prepare_downloads(entry_id: str | None):
        """Export the chosen entry (cached after the first time) and arm the download buttons."""
        if entry_id is None:
            return [gr.DownloadButton(value=None, interactive=False) for _ in DOWNLOAD_BUTTONS]
        entry = zoo.entry(entry_id)
        return [gr.DownloadButton(value=str(server.named_download(entry, kind)), interactive=True)
                for kind in DOWNLOAD_BUTTONS]

    async def classify(path: str | None, entry_id: str):
        if not path:
            return None
        try:
            x = await asyncio.to_thread(server.decode, Path(path).read_bytes(), Path(path).name)
        except ImageError as e:
            raise gr.Error(str(e)) from None
        [result] = await server.classify(zoo.entry(entry_id), [x], len(zoo.classes))
        return {r["label"]: r["probability"] for r in result}

    def push(admin_token: str, repo_id: str, what: str, entry_id: str | None) -> str:
        if not server.is_admin(admin_token):
            return "**Wrong admin token.**"
        if what != WHOLE_ZOO and entry_id is None:
            return "**Choose a model first** (no model fits the current budget)."
        try:
            url = server.push(repo_id.strip(), None if what == WHOLE_ZOO else zoo.entry(entry_id))
        except HubError as e:
            return f"**Push failed:** {e}"
        return f"Pushed to [{url}]({url})."

    with gr.Blocks(title=f"PreZoo · {zoo.name}") as ui:
        chosen = gr.State(server.default_entry.id)
        gr.Markdown(f"# PreZoo · {zoo.name}\n{len(zoo.entries)} vision transformers sliced from one supernet "
                    f"(search space `{zoo.space.name}`). Set a budget: you get the most accurate model that fits.")
        with gr.Tab("Specialize"):
            with gr.Row():
                with gr.Column(scale=2):
                    max_params = params.slider(elem_id="max-params")
                    max_flops = flops.slider(elem_id="max-flops")
                    max_latency = (latency.slider(elem_id="max-latency") if latency else
                                   gr.Number(None, label="Max latency (ms): not measured for this zoo", visible=False))
                    axis = gr.Radio(["params", "flops"], value="params", label="Pareto plot x-axis")
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
        with gr.Tab("Try it"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], label="Image",
                                     height=240, elem_id="try-image")
                    model = gr.Dropdown(model_choices, value=server.default_entry.id, label="Model")
                    classify_button = gr.Button("Classify", variant="primary")
                    if samples:
                        gr.Examples([[str(p)] for p in samples], inputs=[image], label="Fashion-MNIST test images")
                with gr.Column():
                    predictions = gr.Label(num_top_classes=5, label="Predictions", elem_id="predictions")
        if server.push_enabled:
            with gr.Tab("Push to the Hub"):
                gr.Markdown("Pushes the chosen model (safetensors, config, card) or the whole zoo with the server's "
                            "Hub token. Needs the admin token.")
                admin_token = gr.Textbox(type="password", label="Admin token")
                repo_id = gr.Textbox(label="Hub repo id", placeholder="org/name")
                what = gr.Radio(["the chosen model", WHOLE_ZOO], value="the chosen model", label="What")
                push_button = gr.Button("Push")
                push_result = gr.Markdown()
            push_button.click(push, [admin_token, repo_id, what, chosen], push_result, api_visibility="private")

        budget = [max_params, max_flops, max_latency, axis]
        outputs = [summary, plot, layers, card, chosen, model, *buttons]

        def wire(trigger, api_name: str | None = None) -> None:
            trigger(specialize, budget, outputs, api_name=api_name,
                    api_visibility="public" if api_name else "private"
                    ).then(prepare_downloads, chosen, buttons, api_visibility="private")

        wire(go.click, api_name="specialize")
        for trigger in (ui.load, max_params.release, max_flops.release, axis.change):
            wire(trigger)
        if latency:
            wire(max_latency.release)
        classify_button.click(classify, [image, model], predictions, api_name="classify")
        image.change(classify, [image, model], predictions, api_visibility="private")
    return ui
