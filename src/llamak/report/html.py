"""`report.html` of a run: one self-contained page (plots embedded as PNG, the lineage graph as SVG).

Rebuilt from `manifest.json` after every stage: a table of stages, the loss curve of each training
stage, DPO margins and GRPO rewards/KL, long-context probe heat maps before/after a LongPO stage,
the trainable-parameter share, stage durations and the lineage graph (which stage feeds which).
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def loss_plot(stages: dict) -> str | None:
    import matplotlib.pyplot as plt

    curves = {n: s["metrics"].get("log_history") for n, s in stages.items() if s.get("metrics", {}).get("log_history")}
    if not curves:
        return None
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3), squeeze=False)
    for ax, (name, history) in zip(axes[0], curves.items()):
        ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker=".")
        ax.set_title(f"{name} loss")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return _png(fig)


def _series(history: list[dict], key: str) -> tuple[list, list]:
    points = [(h["step"], h[key]) for h in history if isinstance(h.get(key), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def alignment_plot(stages: dict) -> str | None:
    """DPO: implicit rewards of chosen/rejected and their margin; GRPO: each reward's mean, the
    weighted total, and the KL to the reference (when beta > 0) — one row of panels per stage."""
    import matplotlib.pyplot as plt

    panels = []  # (title, [(label, steps, values)])
    for name, s in stages.items():
        history = s.get("metrics", {}).get("log_history") or []
        if s.get("type") == "dpo":
            keys = ["rewards/margins", "rewards/chosen", "rewards/rejected"]
            panels.append((f"{name}: implicit rewards", [(k.split("/")[1], *_series(history, k)) for k in keys]))
        elif s.get("type") == "grpo":
            keys = sorted({k for h in history for k in h if k.startswith("rewards/") and k.endswith("/mean")}) + ["reward"]
            panels.append((f"{name}: rewards", [(k.removeprefix("rewards/").removesuffix("/mean"), *_series(history, k)) for k in keys]))
            if _series(history, "kl")[0]:
                panels.append((f"{name}: KL to reference", [("kl", *_series(history, "kl"))]))
    panels = [(t, [c for c in curves if c[1]]) for t, curves in panels]
    panels = [(t, curves) for t, curves in panels if curves]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.2), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        for label, steps, values in curves:
            ax.plot(steps, values, marker=".", label=label, linewidth=2.2 if label in ("reward", "margins") else 1.2)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _png(fig)


def bar_plot(values: dict[str, float], title: str, unit: str) -> str | None:
    import matplotlib.pyplot as plt

    if not values:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(values) + 0.8))
    ax.barh(list(values), list(values.values()), color="#4c72b0")
    ax.invert_yaxis()
    ax.set_title(title)
    ax.set_xlabel(unit)
    for i, v in enumerate(values.values()):
        ax.text(v, i, f" {v:.3g}", va="center", fontsize=8)
    return _png(fig)


def lineage_svg(order: list[str], stages: dict) -> str:
    """Boxes in run order; an arrow from each stage's input (an earlier stage or an external model)."""
    nodes: list[str] = []
    edges: list[tuple[str, str]] = []
    for name in order:
        if name not in stages:
            continue
        ref = stages[name].get("input", "?")
        parent = ref if ref in stages else f"{ref} (input)"
        if parent not in nodes:
            nodes.append(parent)
        nodes.append(name)
        edges.append((parent, name))
        # other stages it reads (a merge's models): external models would only add clutter
        edges += [(r, name) for r in dict.fromkeys(stages[name].get("reads", [])) if r in stages and r != parent]
    w, h, gap = 150, 34, 40
    x = {n: 10 + i * (w + gap) for i, n in enumerate(nodes)}
    parts = []
    for a, b in edges:
        if x[b] - x[a] == w + gap:
            parts.append(f'<line x1="{x[a] + w}" y1="{h / 2 + 10}" x2="{x[b]}" y2="{h / 2 + 10}" stroke="#555" marker-end="url(#arrow)"/>')
        else:  # a jump over other boxes: arc above them
            parts.append(f'<path d="M{x[a] + w / 2},10 C{x[a] + w / 2},-20 {x[b] + w / 2},-20 {x[b] + w / 2},10" fill="none" stroke="#555" marker-end="url(#arrow)"/>')
    for n in nodes:
        fill = "#eef" if n in stages else "#eee"
        parts.append(f'<rect x="{x[n]}" y="10" width="{w}" height="{h}" rx="6" fill="{fill}" stroke="#446"/>')
        parts.append(f'<text x="{x[n] + w / 2}" y="{h / 2 + 14}" text-anchor="middle" font-size="12">{html.escape(n[:24])}</text>')
    width = 20 + len(nodes) * (w + gap)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{h + 30}" viewBox="0 -30 {width} {h + 60}">'
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" orient="auto">'
        '<path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>' + "".join(parts) + "</svg>"
    )


def stage_table(order: list[str], stages: dict) -> str:
    rows = []
    for name in order:
        s = stages.get(name)
        if s is None:
            rows.append(f"<tr><td>{html.escape(name)}</td><td colspan=5>not run yet</td></tr>")
            continue
        m = s.get("metrics", {})
        share = f"{100 * m['trainable_share']:.2f}%" if "trainable_share" in m else ""
        loss = f"{m['train_loss']:.4f}" if isinstance(m.get("train_loss"), (int, float)) else ""
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{s['type']}</td><td>{s['seconds']:.1f}</td><td>{share}</td>"
            f"<td>{loss}</td><td>{html.escape(s['finished'])}</td></tr>"
        )
    return "<table><tr><th>stage</th><th>type</th><th>seconds</th><th>trainable</th><th>train loss</th><th>finished</th></tr>" + "".join(rows) + "</table>"


def data_table(stages: dict) -> str:
    """What each `data` stage read, kept, dropped and masked, the mixture it made and its packing."""
    rows = []
    for name, s in stages.items():
        m = s.get("metrics", {})
        if s.get("type") != "data" or "clean" not in m:
            continue
        c = m["clean"]
        dropped = ", ".join(f"{k} {v}" for k, v in c.get("dropped", {}).items()) or "none"
        masked = ", ".join(f"{k} {v}" for k, v in c.get("masked", {}).items()) or "none"
        mix = ", ".join(f"{lang} {share:.3f}" for lang, share in m.get("mix", {}).get("share", {}).items()) or "as found"
        pack = m.get("pack", {})
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{c['read']}</td><td>{c['kept']}</td><td>{html.escape(dropped)}</td><td>{html.escape(masked)}</td>"
            f"<td>{html.escape(mix)}</td><td>{pack.get('rows', '')} × {pack.get('seq_len', '')} ({pack.get('fill', 0):.1%} full)</td></tr>"
        )
    if not rows:
        return ""
    head = "<tr><th>stage</th><th>read</th><th>kept</th><th>dropped</th><th>masked</th><th>token shares</th><th>packed rows</th></tr>"
    return "<h2>Data</h2><table>" + head + "".join(rows) + "</table>"


def _fmt(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def eval_section(order: list[str], stages: dict) -> str:
    """Per eval stage: metrics × models with the difference from the first model, and a chart of
    the suite scores ("Korean gain and English retention at a glance")."""
    import matplotlib.pyplot as plt

    parts = []
    for name in order:
        stage = stages.get(name, {})
        comparison = stage.get("metrics", {})
        if stage.get("type") != "eval" or "scores" not in comparison:
            continue
        models, baseline = comparison["models"], comparison["baseline"]
        head = "<tr><th>metric</th>" + "".join(f"<th>{html.escape(m)}</th>" for m in models) + "</tr>"
        rows = []
        for metric, row in comparison["scores"].items():
            cells = []
            for m in models:
                delta = comparison["delta"][metric].get(m)
                shown = _fmt(row.get(m)) + (f" <small>({delta:+.3f})</small>" if m != baseline and delta is not None else "")
                cells.append(f"<td>{shown}</td>")
            style = "" if "/" in metric else " style='font-weight:bold'"
            rows.append(f"<tr{style}><td>{html.escape(metric)}</td>{''.join(cells)}</tr>")
        suites = [m for m in comparison["scores"] if "/" not in m]
        fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(suites) * max(1, len(models)) / 2, 3))
        width = 0.8 / len(models)
        for i, m in enumerate(models):
            ax.bar([j + i * width for j in range(len(suites))], [comparison["scores"][s].get(m) or 0 for s in suites], width, label=m)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(suites))], suites)
        ax.set_ylabel("score")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
        parts.append(f"<h3>{html.escape(name)} (differences from {html.escape(baseline)})</h3><table>{head}{''.join(rows)}</table>{_png(fig)}")
    return "<h2>Evaluation</h2>" + "".join(parts) if parts else ""


def energy_section(order: list[str], stages: dict) -> str:
    """kWh and CO₂ per stage (codecarbon, offline), and what surgery costs next to training."""
    measured = {n: stages[n]["energy"] for n in order if stages.get(n, {}).get("energy")}
    if not measured:
        return ""
    head = "<tr><th>stage</th><th>type</th><th>seconds</th><th>kWh</th><th>CO₂ (g)</th><th>CPU / GPU / RAM (W)</th></tr>"
    rows = [f"<tr><td>{html.escape(n)}</td><td>{stages[n]['type']}</td><td>{e['seconds']:.0f}</td><td>{e['kwh']:.3g}</td>"
            f"<td>{1000 * e['co2_kg']:.3g}</td><td>{e['cpu_w']:.0f} / {e['gpu_w']:.0f} / {e['ram_w']:.0f}</td></tr>" for n, e in measured.items()]
    notes = []
    training = {n: e["kwh"] for n, e in measured.items() if stages[n]["type"] in ("cpt", "sft", "dpo", "grpo", "longpo")}
    if training:
        biggest = max(training, key=training.get)
        for n, e in measured.items():
            if stages[n]["type"] in ("merge", "chat_vector", "expand") and training[biggest] > 0:
                notes.append(f"{html.escape(n)} used {100 * e['kwh'] / training[biggest]:.2g}% of the energy of {html.escape(biggest)}")
    hardware = next(iter(measured.values()))["hardware"]
    total = sum(e["kwh"] for e in measured.values())
    chart = bar_plot({n: e["kwh"] for n, e in measured.items()}, "energy per stage", "kWh")
    return (f"<h2>Energy</h2><p>codecarbon's offline tracker, grid of {html.escape(next(iter(measured.values()))['country'])}; "
            f"{html.escape(hardware)}; total {total:.3g} kWh. " + "; ".join(notes) + "</p>"
            f"<table>{head}{''.join(rows)}</table>{chart or ''}")


def probes_section(run_dir: Path, order: list[str], stages: dict) -> str:
    """Per stage with `probes` metrics: accuracy before → after and both depth × length heat maps."""
    parts = []
    for name in order:
        probes = stages.get(name, {}).get("metrics", {}).get("probes")
        if not probes:
            continue
        images = []
        for when in ("before", "after"):
            png = run_dir / name / "probes" / when / "long_heatmap.png"
            if png.is_file():
                data = base64.b64encode(png.read_bytes()).decode()
                images.append(f'<figure><figcaption>{when}</figcaption><img alt="{when}" src="data:image/png;base64,{data}"></figure>')
        parts.append(f"<h3>{html.escape(name)}: accuracy {probes['before']:.2f} → {probes['after']:.2f}</h3>" + "".join(images))
    return "<h2>Long-context probes</h2>" + "".join(parts) if parts else ""


def plan_section(run_dir: Path) -> str:
    """The plan `llamak plan` wrote for this run (memory per GPU, fit, GPU-hours, energy per stage)."""
    from llamak.planner import hardware_line, human, quantity

    path = run_dir / "plan.json"
    if not path.is_file():
        return ""
    plan = json.loads(path.read_text())
    hw = plan["hardware"]
    head = "<tr><th>stage</th><th>type</th><th>layers</th><th>params</th><th>trainable</th><th>tokens</th><th>GPUs</th><th>sharding</th><th>GB per GPU</th><th>fits</th><th>disk GB</th><th>GPU-hours</th><th>kWh</th></tr>"
    rows = [f"<tr><td>{html.escape(r['name'])}</td><td>{r['type']}</td><td>{human(r['layers'])}</td><td>{human(r['params'])}</td>"
            f"<td>{human(r['trainable'])}</td><td>{human(r['tokens'])}</td><td>{human(r.get('gpus'))}</td><td>{r.get('sharding') or '—'}</td><td>{quantity(r['per_gpu_gb'])}</td><td>{html.escape(r['fits'])}</td>"
            f"<td>{quantity(r['disk_gb'])}</td><td>{quantity(r['gpu_hours'])}</td><td>{quantity(r['energy_kwh'])}</td></tr>" for r in plan["stages"]]
    chart = bar_plot({r["name"]: r["gpu_hours"] for r in plan["stages"] if r.get("gpu_hours")}, "planned GPU-hours", "GPU-hours")
    t = plan["totals"]
    return (f"<h2>Plan</h2><p>{html.escape(hardware_line(hw))}: {t['gpu_hours']:.3g} GPU-hours, {t['energy_kwh']:.3g} kWh in all.</p>"
            f"<table>{head}{''.join(rows)}</table>{chart or ''}")


def write_report(run_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    stages, order = manifest.get("stages", {}), manifest.get("order", list(manifest.get("stages", {})))
    sections = [f"<h1>llamak run: {html.escape(manifest.get('name', run_dir.name))}</h1>",
                f"<p>recipe: <code>{html.escape(manifest.get('recipe', '?'))}</code></p>",
                "<h2>Stages</h2>", stage_table(order, stages),
                data_table(stages),
                "<h2>Lineage</h2>", lineage_svg(order, stages),
                probes_section(run_dir, order, stages),
                eval_section(order, stages),
                energy_section(order, stages),
                plan_section(run_dir)]
    plots = [
        ("Training loss", loss_plot(stages)),
        ("Preference and RL signals", alignment_plot(stages)),
        ("Trainable parameters", bar_plot({n: 100 * s["metrics"]["trainable_share"] for n, s in stages.items() if "trainable_share" in s.get("metrics", {})}, "trainable share", "% of parameters")),
        ("Stage durations", bar_plot({n: s["seconds"] for n, s in stages.items()}, "duration", "seconds")),
    ]
    sections += [f"<h2>{title}</h2>{img}" for title, img in plots if img]
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>llamak report</title><style>"
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}img{max-width:100%}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )
    path = run_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
