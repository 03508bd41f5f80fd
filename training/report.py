"""Human-facing output of the selector: a table on the terminal and a PNG plot."""

from __future__ import annotations

from pathlib import Path

from training.select import Selection
from zoo.budget import FLOPS_LABEL, human
from zoo.io import atomic_write_figure


def selection_table(sel: Selection) -> str:
    cfg = sel.config
    by = cfg.bucket_by
    rows = [f"space {cfg.space.name} [{cfg.space.hash}]  proxy {cfg.proxy}  seed {cfg.seed}  "
            f"data {cfg.data} x{cfg.batch_size}  buckets by {by}",
            f"{'bucket':<19} {'id':<20} {'params':>9} {FLOPS_LABEL:>12} {'score':>10}  layout"]
    for (lo, hi), best in zip(cfg.buckets.edges(), sel.preferred, strict=True):
        label = f"[{human(lo)}, {human(hi)})"
        if not best:
            rows.append(f"{label:<19} (empty)")
        for c in best:
            rows.append(f"{label:<19} {c.arch.id:<20} {human(c.params):>9} {human(c.flops):>12} "
                        f"{c.score:>10.4g}  {c.arch.describe()}")
    s = sel.seconds
    rows.append(f"{len(sel.candidates)} representatives scored; gradient pass {s['gradient_pass']:.2f} s, "
                f"scoring {s['scoring_total']:.2f} s "
                f"({len(sel.candidates) / max(s['scoring_total'], 1e-9):,.0f} archs/s), total {s['total']:.2f} s")
    return "\n".join(rows)


def plot_selection(sel: Selection, path: str | Path) -> Path:
    """All scored representatives (cost vs step-2 score), the preferred ones highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = sel.config.bucket_by
    scale, unit = (1e6, "M params") if by == "params" else (1e9, "GMACs")
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    embeds = sorted({c.arch.embed_dim for c in sel.candidates})
    for E in embeds:
        cs = [c for c in sel.candidates if c.arch.embed_dim == E]
        ax.scatter([getattr(c, by) / scale for c in cs], [c.score for c in cs], s=6, alpha=0.45, label=f"embed {E}")
    pref = sel.preferred_archs
    ax.scatter([getattr(c, by) / scale for c in pref], [c.score for c in pref], s=70, facecolors="none",
               edgecolors="red", linewidths=1.8, label="preferred")
    for lo, _ in sel.config.buckets.edges():
        ax.axvline(lo / scale, color="grey", lw=0.5, ls=":")
    ax.axvline(sel.config.buckets.edges()[-1][1] / scale, color="grey", lw=0.5, ls=":")
    ax.set_xlabel(unit)
    ax.set_ylabel("step-2 score (plain SNIP, inherited slices)")
    ax.set_title(f"{sel.config.space.name}: {len(sel.candidates)} isomer representatives, "
                 f"proxy {sel.config.proxy}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = atomic_write_figure(path, fig)
    plt.close(fig)
    return path
