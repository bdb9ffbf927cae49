"""The eval report: a table in the terminal, `results.json`, and `report.html` with plots."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from html import escape
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from evals.charts import Marker, stock_chart
from evals.replay import Replayed
from evals.scoring import Judged, available_series, daily_demand

COLUMNS = (
    ("suggestions", "suggestions"),
    ("unneeded", "unneeded"),
    ("silencing", "silencing"),
    ("quantity_error", "qty error"),
    ("stockout_units", "short"),
    ("lost_sales", "lost sales"),
    ("overstock_units", "over"),
    ("cost", "cost"),
    ("latency_p50_ms", "p50 ms"),
    ("input_tokens", "tokens in"),
)


def plot_data(
    contender: str, replayed: Replayed, judged: list[Judged], *, series: bool
) -> dict[str, Any]:
    """What the plots need of one replay: its suggestions and their arrivals, and with
    `series` the stock and demand of each product (the same for every contender, so
    only one replay of a case needs to give them). Plain data: it crosses processes."""
    data: dict[str, Any] = {"skus": {}}
    events = replayed.events
    if series and events:
        data["start"] = events[0].time
        data["end"] = events[-1].time
        for product in replayed.of_type("product.upserted"):
            sku = product.data.sku
            data["skus"][sku] = {
                "stock": available_series(events, sku),
                "demand": dict(daily_demand(events, sku)),
            }
    markers: dict[str, list[Marker]] = {}
    for j in judged:
        at = datetime.fromisoformat(j.at)
        markers.setdefault(j.sku, []).extend(
            [
                Marker(at, f"{contender}: order {j.quantity} (oracle {j.oracle})", "suggestion"),
                Marker(
                    at + timedelta(days=j.lead_days),
                    f"{contender}: {j.quantity} would arrive (short {j.stockout_units}, "
                    f"over {j.overstock_units})",
                    "arrival",
                ),
            ]
        )
    data["markers"] = {contender: markers}
    return data


def add_plot_data(entry: dict[str, Any], data: dict[str, Any]) -> None:
    """Keep a replay's plot data beside the scores (not written to results.json)."""
    plot = entry.setdefault("_plot", {"skus": {}, "markers": {}})
    if not plot["skus"] and data["skus"]:
        plot.update(start=data["start"], end=data["end"], skus=data["skus"])
    plot["markers"].update(data["markers"])


def margins(results: dict[str, Any]) -> dict[str, Any]:
    """What the agent saves against the formula, and what memory buys, per scenario."""
    out: dict[str, Any] = {}
    for name, entry in results["scenarios"].items():
        contenders = entry["contenders"]
        row: dict[str, Any] = {"history_matters": entry["history_matters"]}
        agent = contenders.get("agent", {}).get("cost")
        formula = contenders.get("reorder_point", {}).get("cost")
        forgetful = contenders.get("agent_no_memory", {}).get("cost")
        if agent is not None and formula is not None:
            row["agent_vs_reorder_point"] = _saving(formula, agent)
        if agent is not None and forgetful is not None:
            row["memory_saves"] = _saving(forgetful, agent)
        out[name] = row
    return out


# What the agent adds, per family: (name, contender saved against, contender judged).
FAMILY_MARGINS = (
    ("agent_vs_reorder_point", "reorder_point", "agent"),
    ("agent_vs_forecaster", "forecaster", "agent"),
    ("memory_saves", "agent_no_memory", "agent"),
)


def families(results: dict[str, Any]) -> dict[str, Any]:
    """Generated worlds by family: each contender's cost over the seeds, with its spread,
    and the margins on the family's total cost, with their spread across seeds.

    Contenders are whatever ran, so a new one (a model, say) gets its own column.
    """
    grouped: dict[str, list[dict[str, Any]]] = {}
    for entry in results["scenarios"].values():
        if entry.get("family"):
            grouped.setdefault(entry["family"], []).append(entry)
    out: dict[str, Any] = {}
    for name, entries in sorted(grouped.items()):
        contenders: dict[str, Any] = {}
        for entry in entries:
            for contender, figures in entry["contenders"].items():
                contenders.setdefault(contender, []).append(float(figures["cost"]))
        row: dict[str, Any] = {
            "history_matters": any(entry["history_matters"] for entry in entries),
            "seeds": len(entries),
            "cost": {contender: _spread(costs) for contender, costs in contenders.items()},
        }
        for margin, before, after in FAMILY_MARGINS:
            if before in contenders and after in contenders:
                per_seed = [
                    _saving(b, a)
                    for b, a in zip(contenders[before], contenders[after], strict=True)
                ]
                row[margin] = {
                    "total": _saving(sum(contenders[before]), sum(contenders[after])),
                    "min": min(per_seed),
                    "max": max(per_seed),
                }
        out[name] = row
    return out


def _spread(values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    sd = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
    return {
        "mean": round(mean, 1),
        "sd": round(sd, 1),
        "min": min(values),
        "max": max(values),
        "total": round(sum(values), 1),
    }


def print_families(console: Console, results: dict[str, Any]) -> None:
    found = results.get("families")
    if not found:
        return
    contenders = list(dict.fromkeys(c for row in found.values() for c in row["cost"]))
    table = Table(
        title="families: mean cost over seeds ± sd (lower is better); savings on the total"
    )
    table.add_column("family")
    table.add_column("seeds", justify="right")
    for contender in contenders:
        table.add_column(contender, justify="right")
    for margin, _, _ in FAMILY_MARGINS:
        table.add_column(margin.replace("_", " "), justify="right")
    for name, row in found.items():
        label = name + (" *" if row["history_matters"] else "")
        cells = [_cost_cell(row["cost"].get(c)) for c in contenders]
        table.add_row(
            label,
            str(row["seeds"]),
            *cells,
            *[_margin_cell(row.get(m)) for m, _, _ in FAMILY_MARGINS],
        )
    console.print(table)
    console.print("* history matters", highlight=False)


def _cost_cell(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "-"
    return f"{figures['mean']:,.0f} ± {figures['sd']:,.0f}"


def _margin_cell(figures: dict[str, float] | None) -> str:
    if figures is None:
        return "-"
    return f"{figures['total']:+.0%} ({figures['min']:+.0%}..{figures['max']:+.0%})"


def comparison(results: dict[str, Any]) -> dict[str, Any] | None:
    """The model (deciding for the agent), the agent's own policy and the reorder-point
    formula side by side, when a model ran: cost per scenario and in all, and what
    the model spent. None when no model ran."""
    rows: dict[str, Any] = {}
    totals = {"model": 0.0, "policy": 0.0, "reorder_point": 0.0}
    spent = {"input_tokens": 0, "output_tokens": 0, "model_calls": 0, "decided_by_model": 0}
    seconds: list[float] = []
    model_name = None
    for name, entry in results["scenarios"].items():
        contenders = entry["contenders"]
        agent, own, formula = (contenders.get(k) for k in ("agent", "policy", "reorder_point"))
        if agent is None or own is None or formula is None:
            return None
        model_name = agent.get("model", model_name)
        rows[name] = {
            "model": agent["cost"],
            "policy": own["cost"],
            "reorder_point": formula["cost"],
            "suggestions": agent["suggestions"],
            "decided_by_model": agent.get("decided_by_model", 0),
            "model_p50_s": agent.get("model_p50_s"),
        }
        totals["model"] += agent["cost"]
        totals["policy"] += own["cost"]
        totals["reorder_point"] += formula["cost"]
        for key in spent:
            spent[key] += int(agent.get(key) or 0)
        if agent.get("model_p50_s") is not None:
            seconds.append(float(agent["model_p50_s"]))
    if not rows:
        return None
    best = min(totals, key=lambda k: totals[k])
    seconds.sort()
    return {
        "model_name": model_name,
        "scenarios": rows,
        "total_cost": {k: round(v, 1) for k, v in totals.items()},
        "best": best,
        "model_vs_policy": _saving(totals["policy"], totals["model"]),
        "model_vs_reorder_point": _saving(totals["reorder_point"], totals["model"]),
        "model_p50_s": seconds[len(seconds) // 2] if seconds else None,
        **spent,
    }


def print_comparison(console: Console, results: dict[str, Any]) -> None:
    found = results.get("comparison")
    if not found:
        return
    table = Table(title=f"model {found['model_name']} against the policy and the formula: cost")
    for header in ("scenario", "model", "policy", "reorder point", "by model", "p50 s"):
        table.add_column(header, justify="left" if header == "scenario" else "right")
    for name, row in found["scenarios"].items():
        table.add_row(
            name,
            _fmt(row["model"]),
            _fmt(row["policy"]),
            _fmt(row["reorder_point"]),
            f"{row['decided_by_model']}/{row['suggestions']}",
            _fmt(row["model_p50_s"]),
        )
    total = found["total_cost"]
    table.add_section()
    table.add_row(
        "all", _fmt(total["model"]), _fmt(total["policy"]), _fmt(total["reorder_point"]), "", ""
    )
    console.print(table)
    console.print(_verdict_line(found), highlight=False)


def _verdict_line(found: dict[str, Any]) -> str:
    return (
        f"model {found['model_vs_policy']:+.0%} against the policy, "
        f"{found['model_vs_reorder_point']:+.0%} against the reorder-point formula "
        f"(cost saved; negative: it costs more); best: {found['best']}; "
        f"{found['model_calls']} model calls, {found['input_tokens']} tokens in, "
        f"{found['output_tokens']} out, p50 {_fmt(found['model_p50_s'])} s per answer"
    )


def _comparison_html(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    parts = [
        f"<h2>Model {escape(str(found['model_name']))} against the policy and the formula</h2>",
        f"<p>{escape(_verdict_line(found))}.</p>",
        "<table><tr><th>scenario</th><th>model</th><th>policy</th><th>reorder point</th>"
        "<th>decided by the model</th><th>p50 s per answer</th></tr>",
    ]
    for name, row in found["scenarios"].items():
        parts.append(
            f"<tr><td>{escape(name)}</td><td>{_fmt(row['model'])}</td>"
            f"<td>{_fmt(row['policy'])}</td><td>{_fmt(row['reorder_point'])}</td>"
            f"<td>{row['decided_by_model']}/{row['suggestions']}</td>"
            f"<td>{_fmt(row['model_p50_s'])}</td></tr>"
        )
    total = found["total_cost"]
    parts.append(
        f"<tr><td>all</td><td>{_fmt(total['model'])}</td><td>{_fmt(total['policy'])}</td>"
        f"<td>{_fmt(total['reorder_point'])}</td><td></td><td></td></tr></table>"
    )
    return parts


def _saving(before: float, after: float) -> float:
    """Share of `before`'s cost that `after` saves (negative: it costs more)."""
    if before == 0:
        return 0.0 if after == 0 else -1.0
    return round((before - after) / before, 3)


def public(results: dict[str, Any]) -> dict[str, Any]:
    """results.json: the scores, without the plot data."""
    scenarios = {
        name: {key: value for key, value in entry.items() if not key.startswith("_")}
        for name, entry in results["scenarios"].items()
    }
    return {**results, "scenarios": scenarios}


def write(results: dict[str, Any], out: Path) -> None:
    (out / "results.json").write_text(json.dumps(public(results), indent=2, sort_keys=True) + "\n")
    (out / "report.html").write_text(html(results))


def print_table(console: Console, results: dict[str, Any]) -> None:
    table = Table(title=f"eval: model {results['model']}, {results['seconds']}s")
    table.add_column("scenario")
    table.add_column("policy")
    for _, header in COLUMNS:
        table.add_column(header, justify="right")
    table.add_column("checks")
    for name, entry in results["scenarios"].items():
        for contender, figures in entry["contenders"].items():
            checks = "[green]pass[/]" if figures["passed"] else "[red]FAIL[/]"
            if figures.get("flaky"):
                checks = "[yellow]flaky[/]"
            table.add_row(name, contender, *[_fmt(figures.get(key)) for key, _ in COLUMNS], checks)
        table.add_section()
    console.print(table)
    for name, row in results["margins"].items():
        if "agent_vs_reorder_point" in row:
            console.print(
                f"{name}: agent cost {row['agent_vs_reorder_point']:+.0%} saved against the "
                f"reorder-point formula"
                + (f", memory saves {row['memory_saves']:+.0%}" if "memory_saves" in row else "")
                + (" (history matters)" if row["history_matters"] else ""),
                highlight=False,
            )


def print_substitutes(console: Console, results: dict[str, Any]) -> None:
    found = results.get("substitutes")
    if not found:
        return
    table = Table(title="substitutes: the right product among the first three offered")
    for header in ("case", "expected", "offered", "verdict"):
        table.add_column(header)
    for name, case in found["cases"].items():
        table.add_row(
            name, case["expect"] or "nothing", ", ".join(case["offered"]) or "-", _verdict(case)
        )
    console.print(table)
    console.print(
        f"top-3 rate {_fmt(found['top3_rate'])}, false suggestions {found['false_suggestions']}, "
        f"invalid substitutes {found['invalid']}",
        highlight=False,
    )
    if found.get("synonyms"):
        console.print(
            "synonym cases (other words, same meaning), top-3 rate by embedder: "
            + ", ".join(
                f"{name} {_fmt(rate['top3_rate'])}" for name, rate in found["synonyms"].items()
            ),
            highlight=False,
        )


def _verdict(case: dict[str, Any]) -> str:
    if case["invalid"]:
        return "[red]invalid[/]"
    if case["expect"] is None:
        return "[red]should be quiet[/]" if case["false_suggestion"] else "[green]quiet[/]"
    return "[green]hit[/]" if case["hit"] else "[red]miss[/]"


def print_regressions(console: Console, found: list[str], baseline: Path) -> None:
    if not found:
        console.print(f"[green]no regression against {baseline}[/]")
        return
    console.print(f"[bold red]{len(found)} regression(s) against {baseline}:[/]")
    for line in found:
        console.print(f"  {line}", highlight=False)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)


def html(results: dict[str, Any]) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>agentbus eval</title>",
        "<style>body{font-family:sans-serif;margin:24px;color:#222}"
        "table{border-collapse:collapse;margin:8px 0 16px}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        ".fail{color:#d1242f;font-weight:bold}.pass{color:#1a7f37}"
        ".charts{display:flex;flex-wrap:wrap;gap:8px}</style></head><body>",
        f"<h1>agentbus eval</h1><p>model <b>{escape(str(results['model']))}</b>, "
        f"repeat {results['repeat']}, {results['seconds']}s. Cost = 3 x units short + units "
        "left over beyond safety stock, summed over suggestions, each re-simulated against "
        "what the recording says happened next. Lower is better.</p>",
        "<h2>Margins</h2><table><tr><th>scenario</th><th>history matters</th>"
        "<th>agent vs reorder point</th><th>memory saves</th></tr>",
    ]
    for name, row in results["margins"].items():
        parts.append(
            f"<tr><td>{escape(name)}</td><td>{'yes' if row['history_matters'] else ''}</td>"
            f"<td>{_pct(row.get('agent_vs_reorder_point'))}</td>"
            f"<td>{_pct(row.get('memory_saves'))}</td></tr>"
        )
    parts.append("</table>")
    parts.extend(_families_html(results.get("families")))
    parts.extend(_comparison_html(results.get("comparison")))
    for name, entry in results["scenarios"].items():
        parts.append(f"<h2>{escape(name)}</h2><p>{escape(entry['notes'])}</p><table><tr>")
        parts.append("<th>policy</th>" + "".join(f"<th>{h}</th>" for _, h in COLUMNS))
        parts.append("<th>checks</th></tr>")
        for contender, figures in entry["contenders"].items():
            cls, word = ("pass", "pass") if figures["passed"] else ("fail", "FAIL")
            cells = "".join(f"<td>{_fmt(figures.get(key))}</td>" for key, _ in COLUMNS)
            parts.append(
                f"<tr><td>{escape(contender)}</td>{cells}<td class='{cls}'>{word}</td></tr>"
            )
        parts.append("</table>")
        plot = entry.get("_plot")
        if plot and plot["skus"]:
            for sku, series in plot["skus"].items():
                parts.append("<div class='charts'>")
                for contender, markers in plot["markers"].items():
                    parts.append(
                        stock_chart(
                            f"{sku}: {contender}",
                            series["stock"],
                            series["demand"],
                            markers.get(sku, []),
                            plot["start"],
                            plot["end"],
                        )
                    )
                parts.append("</div>")
    parts.extend(_substitutes_html(results.get("substitutes")))
    parts.append(
        "<p>Blue: units available in the replayed world. Grey bars: units asked per day. "
        "Red triangles: suggestions (hover for quantity and oracle). Green dots: when the "
        "suggested order would arrive after the real lead time.</p></body></html>"
    )
    return "".join(parts)


def _families_html(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    contenders = list(dict.fromkeys(c for row in found.values() for c in row["cost"]))
    parts = [
        "<h2>Families</h2><p>Generated worlds by family: mean cost over the seeds ± its "
        "standard deviation, and what the agent saves on the family's total cost (the range "
        "over seeds in brackets). * history matters.</p><table><tr><th>family</th><th>seeds</th>",
        *[f"<th>{escape(c)}</th>" for c in contenders],
        *[f"<th>{escape(m.replace('_', ' '))}</th>" for m, _, _ in FAMILY_MARGINS],
        "</tr>",
    ]
    for name, row in found.items():
        label = escape(name) + (" *" if row["history_matters"] else "")
        cells = "".join(f"<td>{_cost_cell(row['cost'].get(c))}</td>" for c in contenders)
        margins = "".join(f"<td>{_margin_cell(row.get(m))}</td>" for m, _, _ in FAMILY_MARGINS)
        parts.append(f"<tr><td>{label}</td><td>{row['seeds']}</td>{cells}{margins}</tr>")
    parts.append("</table>")
    return parts


def _substitutes_html(found: dict[str, Any] | None) -> list[str]:
    if not found:
        return []
    parts = [
        "<h2>Substitutes</h2>",
        f"<p>Top-3 rate {_fmt(found['top3_rate'])}, false suggestions "
        f"{found['false_suggestions']}, invalid substitutes {found['invalid']}.</p>",
        "<table><tr><th>case</th><th>expected</th><th>offered</th><th>verdict</th></tr>",
    ]
    for name, case in found["cases"].items():
        verdict = _verdict(case).split("]", 1)[1].split("[", 1)[0]
        cls = "pass" if verdict in ("hit", "quiet") else "fail"
        parts.append(
            f"<tr><td>{escape(name)}</td><td>{escape(case['expect'] or 'nothing')}</td>"
            f"<td>{escape(', '.join(case['offered']) or '-')}</td>"
            f"<td class='{cls}'>{escape(verdict)}</td></tr>"
        )
    parts.append("</table>")
    by_embedder = found.get("synonyms") or {}
    if by_embedder:
        names = list(by_embedder)
        parts.append(
            "<h3>Synonyms</h3><p>The right product named in other words, among products "
            "that share the missing one's words: offered among the first three, by embedder."
            "</p><table><tr><th>case</th><th>expected</th>"
            + "".join(f"<th>{escape(name)}</th>" for name in names)
            + "</tr>"
        )
        for case, first in by_embedder[names[0]]["cases"].items():
            cells = "".join(
                "<td class='pass'>hit</td>"
                if by_embedder[name]["cases"][case]["hit"]
                else "<td class='fail'>miss</td>"
                for name in names
            )
            parts.append(
                f"<tr><td>{escape(case)}</td><td>{escape(first['expect'] or '')}</td>{cells}</tr>"
            )
        rates = "".join(f"<td>{_fmt(by_embedder[n]['top3_rate'])}</td>" for n in names)
        parts.append(f"<tr><td>top-3 rate</td><td></td>{rates}</tr></table>")
    return parts


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.0%}"
