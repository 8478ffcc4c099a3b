"""`cutloop report RUN`: the whole story of a run on one self-contained HTML page.

Plots (matplotlib, embedded as PNG): held-out acceptance per round with its 95% intervals for
every eval judge; the training loss and its components by optimizer step (steps counted on
across rounds); answer length and the finished share by round; stage times. Tables: what each
round cost the judge, the most common critiques of each round's training sample, and for a few
held-out instructions every round's answer side by side with its judgment, so a person reads
how the answers changed. Everything comes from the run directory; nothing is recomputed.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from cut_loop.config import config_from_dict, load_yaml
from cut_loop.errors import CutLoopError
from cut_loop.evaluation.heldout import stored_responses
from cut_loop.metrics import collect_metrics
from cut_loop.rundir import RunDir, atomic_write_text, read_jsonl
from cut_loop.stages import critique_groups, read_judgments
from cut_loop.tracking import scalars

EXAMPLES = 6  # held-out instructions shown side by side
TOP_CRITIQUES = 8


def write_report(run_dir: Path, output: Path | None = None) -> Path:
    rd = RunDir(run_dir)
    if not rd.config_path.exists():
        raise CutLoopError(f"{run_dir}: not a cut_loop run directory (no config.yaml)")
    cfg = config_from_dict(load_yaml(rd.config_path), source=str(rd.config_path))
    rows = collect_metrics(rd)
    if not any(r["kind"] == "eval" for r in rows):
        raise CutLoopError(f"{run_dir}: no finished evaluation yet; run the loop first")
    evals = [r for r in rows if r["kind"] == "eval"]
    labels = list(dict.fromkeys(r.get("judge") or "eval" for r in evals))
    sections = [
        _header(rd, cfg),
        _figure("Held-out acceptance by round (95% intervals)", _acceptance_plot(evals, labels)),
        _figure("Training loss and its components by optimizer step", _loss_plot(rd)),
        _figure("Answer length and finished share by round", _length_plot(rows)),
        _figure("Wall time of each stage by round", _time_plot(rows)),
        _cost_table(rows),
        _critique_table(rd),
        _examples(rd, labels[0] if labels else "eval"),
    ]
    page = _PAGE.format(title=html.escape(f"cut_loop report: {rd.root.name}"),
                        body="\n".join(s for s in sections if s))  # fmt: skip
    path = output or rd.root / "report.html"
    atomic_write_text(path, page)
    return path


# --- plots -------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # no display: render to memory
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    from matplotlib.ticker import MaxNLocator

    for ax in fig.axes:  # rounds and steps are whole numbers
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _acceptance_plot(evals: list[dict[str, Any]], labels: list[str]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for label in labels:
        mine = sorted((r for r in evals if (r.get("judge") or "eval") == label),
                      key=lambda r: r["round"])  # fmt: skip
        mine = [r for r in mine if r.get("acceptance_rate") is not None]
        xs = [r["round"] for r in mine]
        ys = [r["acceptance_rate"] for r in mine]
        lo = [y - (r.get("ci95") or [y, y])[0] for y, r in zip(ys, mine, strict=True)]
        hi = [(r.get("ci95") or [y, y])[1] - y for y, r in zip(ys, mine, strict=True)]
        ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=4, label=label)
    ax.set(xlabel="round (0: the starting model)", ylabel="acceptance", ylim=(0, 1))
    ax.legend(title="eval judge")
    ax.grid(alpha=0.3)
    return _png(fig)


def _loss_plot(rd: RunDir) -> str:
    plt = _plt()
    curves: dict[str, list[tuple[int, float]]] = {}
    for tag, value, step, _ in scalars(rd, []):
        name = tag.removeprefix("train/")
        if name in ("lr", "grad_norm", "tokens", "seconds", "tokens_per_s"):
            continue
        curves.setdefault(name, []).append((step, value))
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for name, points in sorted(curves.items()):
        ax.plot([s for s, _ in points], [v for _, v in points], label=name, linewidth=1.2)
    ax.set(xlabel="optimizer step (all rounds)", ylabel="value")
    if curves:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished training yet", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    return _png(fig)


def _length_plot(rows: list[dict[str, Any]]) -> str:
    plt = _plt()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    first = {}
    for r in rows:
        if r["kind"] == "eval":
            first.setdefault(r["round"], r)
    held = sorted(first.values(), key=lambda r: r["round"])
    train = sorted((r for r in rows if r["kind"] == "train"), key=lambda r: r["round"])
    ax.plot([r["round"] for r in held], [r.get("mean_response_tokens") for r in held],
            marker="o", label="held-out answers")  # fmt: skip
    ax.plot([r["round"] for r in train], [r.get("sample_mean_tokens") for r in train],
            marker="s", label="training sample")  # fmt: skip
    ax.set(xlabel="round", ylabel="mean tokens")
    ax.legend(fontsize=8)
    ax2.plot([r["round"] for r in held], [r.get("finished_fraction") for r in held],
             marker="o", label="held-out answers")  # fmt: skip
    ax2.plot([r["round"] for r in train], [r.get("sample_finished_fraction") for r in train],
             marker="s", label="training sample")  # fmt: skip
    ax2.set(xlabel="round", ylabel="finished before the token limit", ylim=(0, 1.05))
    for a in (ax, ax2):
        a.grid(alpha=0.3)
    return _png(fig)


def _time_plot(rows: list[dict[str, Any]]) -> str:
    plt = _plt()
    times = sorted((r for r in rows if r["kind"] == "time"), key=lambda r: r["round"])
    fig, ax = plt.subplots(figsize=(7, 3.2))
    bottom = [0.0] * len(times)
    for stage in ("generate", "judge", "train", "eval"):
        values = [(r.get(f"{stage}_seconds") or 0.0) / 60 for r in times]
        ax.bar([r["round"] for r in times], values, bottom=bottom, label=stage)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set(xlabel="round", ylabel="minutes")
    if any(bottom):
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no stage times recorded", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3, axis="y")
    return _png(fig)


def _figure(caption: str, png: str) -> str:
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{png}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip


# --- tables ------------------------------------------------------------------------------------
def _header(rd: RunDir, cfg: Any) -> str:
    manifest_path = rd.root / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    versions = ", ".join(f"{k} {v}" for k, v in (manifest.get("versions") or {}).items() if v)
    done = sum(RunDir.is_done(rd.round_dir(k), "round") for k in rd.iter_round_numbers())
    facts = [
        ("model", cfg.model), ("judge", cfg.judge.name), ("loss", cfg.loss.name),
        ("rounds", f"{done} of {cfg.iterations} done"),
        ("per round", cfg.data.per_round), ("held-out", cfg.eval.size), ("seed", cfg.seed),
        ("machine", (manifest.get("machine") or {}).get("cpu", "?")), ("versions", versions),
    ]  # fmt: skip
    cells = "".join(f"<tr><th>{k}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts)
    return f"<h1>{html.escape(str(rd.root))}</h1><table class=facts>{cells}</table>"


def _cost_table(rows: list[dict[str, Any]]) -> str:
    spent: dict[int, Counter[str]] = {}
    for r in rows:
        if r["kind"] in ("judge", "eval"):
            spent.setdefault(r["round"], Counter()).update(r.get("usage") or {})
    if not any(spent.values()):
        return "<h2>Judge cost</h2><p>The judges reported no usage (local or rule judges).</p>"
    keys = sorted({k for c in spent.values() for k in c})
    head = "".join(f"<th>{k}</th>" for k in keys)
    body = "".join(
        f"<tr><td>{k}</td>"
        + "".join(f"<td>{_num(spent[k].get(key))}</td>" for key in keys)
        + "</tr>"
        for k in sorted(spent)
    )
    title = "<h2>Judge cost (training and eval judges)</h2>"
    return f"{title}<table><tr><th>round</th>{head}</tr>{body}</table>"


def _critique_table(rd: RunDir) -> str:
    """Per round, the training sample's most common critiques, grouped with their numbers
    taken out (a judge words the same complaint about different answers the same way)."""
    parts = []
    for k in rd.iter_round_numbers():
        judged = read_judgments(rd.round_dir(k) / "judgments.jsonl").values()
        groups = critique_groups(judged, TOP_CRITIQUES)
        total = sum(1 for j in judged if not j.failed)
        rejected = sum(1 for j in judged if not j.acceptable and not j.failed)
        rows = "".join(
            f"<tr><td>{n}</td><td>{n / total:.0%}</td><td>{html.escape(text)}</td></tr>"
            for text, n in groups
        )
        head = "<tr><th>n</th><th>share</th><th>critique</th></tr>"
        title = f"<h3>Round {k}: {rejected} of {total} rejected</h3>"
        parts.append(f"{title}<table>{head}{rows}</table>")
    return "<h2>Most common critiques of the training samples</h2>" + "".join(parts)


def _examples(rd: RunDir, label: str) -> str:
    """For the first held-out instructions, every round's answer and its judgment."""
    rounds = sorted(int(p.name.split("-")[1]) for p in (rd.root / "eval").glob("round-[0-9][0-9]")
                    if RunDir.is_done(p, "generate"))  # fmt: skip
    answers = {k: {r["id"]: r for r in stored_responses(rd.eval_dir(k))} for k in rounds}
    verdicts = {
        k: read_judgments(rd.eval_dir(k) / f"judge-{label}" / "judgments.jsonl") for k in rounds
    }
    shown = read_jsonl(rd.eval_instructions_path)[:EXAMPLES]
    blocks = []
    for x in shown:
        cells = []
        for k in rounds:
            r = answers[k].get(x["id"])
            j = verdicts[k].get(x["id"])
            verdict = "-" if j is None else j.verdict.value
            critique = (
                f"<p class=critique>{html.escape(j.critique)}</p>" if j and j.critique else ""
            )
            text = html.escape(r["response"]) if r else "-"
            cells.append(f"<td><div class='verdict {verdict}'>round {k}: {verdict}</div>"
                         f"<pre>{text}</pre>{critique}</td>")  # fmt: skip
        prompt = html.escape(x["instruction"] + (f"\n\n{x['input']}" if x.get("input") else ""))
        blocks.append(f"<h3>{prompt}</h3><table class=side><tr>{''.join(cells)}</tr></table>")
    return (f"<h2>How the answers changed (held-out, judged by {html.escape(label)})</h2>"
            + "".join(blocks))  # fmt: skip


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) and not value.is_integer() else f"{value:g}"


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
table.facts th {{ background: #f4f4f4; }}
table.side td {{ width: 25%; }}
pre {{ white-space: pre-wrap; font-size: 0.85em; max-height: 18em; overflow: auto; }}
figure {{ margin: 1em 0; }} figcaption {{ color: #555; font-size: 0.9em; }}
.verdict {{ font-weight: bold; }} .acceptable {{ color: #17803d; }}
.unacceptable {{ color: #b42318; }} .failed {{ color: #777; }}
.critique {{ color: #b42318; font-size: 0.85em; }}
</style></head>
<body>
{body}
</body></html>
"""
