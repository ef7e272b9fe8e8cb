"""A self-contained HTML report from gold rows: KPIs, daily GMV / net revenue, the funnel with
step conversion, and top categories. Charts are matplotlib PNGs embedded as data URIs.

Pure: takes rows (dicts) already read from the gold tables, returns the HTML text.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from datetime import date
from decimal import Decimal

FUNNEL = (("sessions", "Sessions"), ("product_view_sessions", "Product view"),
          ("add_to_cart_sessions", "Add to cart"), ("checkout_start_sessions", "Checkout"),
          ("purchase_sessions", "Purchase"))


def money(value: Decimal) -> str:
    return f"${value.quantize(Decimal('0.01')):,}"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def summarise(sales: list[dict], categories: list[dict], funnel: list[dict]) -> dict:
    """Totals per date and over the range (exact decimals)."""
    per_day: dict[date, dict] = defaultdict(lambda: {"orders": 0, "gmv": Decimal(0), "net": Decimal(0)})
    for r in sales:
        d = per_day[r["sales_date"]]
        d["orders"] += r["orders"]
        d["gmv"] += r["gmv_usd"]
        d["net"] += r["net_revenue_usd"]
    cats: dict[str, Decimal] = defaultdict(Decimal)
    for r in categories:
        cats[r["category"]] += r["item_gmv_usd"]
    steps = {k: sum(r[k] or 0 for r in funnel) for k, _ in FUNNEL}
    reached = {k: sum(r[k.replace("_sessions", "_reached_sessions")] for r in funnel) for k, _ in FUNNEL[1:]}
    purchasing = sum(r["purchasing_sessions"] for r in funnel)
    orders = sum(d["orders"] for d in per_day.values())
    gmv = sum((d["gmv"] for d in per_day.values()), Decimal(0))
    return {
        "per_day": dict(sorted(per_day.items())),
        "categories": sorted(cats.items(), key=lambda kv: kv[1], reverse=True),
        "funnel": steps,
        "reached": reached,
        "purchasing_sessions": purchasing,
        "orders": orders,
        "gmv": gmv,
        "net": sum((d["net"] for d in per_day.values()), Decimal(0)),
        "aov": gmv / orders if orders else Decimal(0),
        # every session with a valid order, whatever funnel steps it reached
        "conversion": Decimal(purchasing) / steps["sessions"] if steps["sessions"] else Decimal(0),
    }


def build_html(first: date, last: date, sales: list[dict], categories: list[dict], funnel: list[dict]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarise(sales, categories, funnel)
    charts = []

    fig, ax = plt.subplots(figsize=(8, 3.4))
    days = list(s["per_day"])
    ax.bar([d.isoformat() for d in days], [float(s["per_day"][d]["gmv"]) for d in days], color="#4C78A8", label="GMV")
    ax.plot([d.isoformat() for d in days], [float(s["per_day"][d]["net"]) for d in days], color="#F58518",
            marker="o", label="Net revenue")
    ax.set_ylabel("USD")
    ax.set_title("Daily GMV and net revenue (by order date)")
    ax.legend()
    ax.tick_params(axis="x", rotation=45)
    charts.append(("Daily GMV and net revenue", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.4))
    labels = [label for _, label in FUNNEL]
    values = [s["funnel"][k] for k, _ in FUNNEL]
    reached = [s["funnel"]["sessions"]] + [s["reached"][k] for k, _ in FUNNEL[1:]]
    y = list(range(len(labels)))[::-1]
    ax.barh([v + 0.2 for v in y], reached, height=0.4, color="#B7D8B0", label="reached (any order)")
    bars = ax.barh([v - 0.2 for v in y], values, height=0.4, color="#54A24B", label="strict (steps in order)")
    ax.set_yticks(y, labels)
    for step, (bar, v) in enumerate(zip(bars, values)):
        conv = "" if step == 0 or not values[step - 1] else f"  {100 * v / values[step - 1]:.1f}% of previous"
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:,}{conv}", va="center", fontsize=8)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"Session funnel — conversion {100 * s['conversion']:.2f}% "
                 f"({s['purchasing_sessions']:,} purchasing sessions)")
    charts.append(("Funnel", _png(fig)))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3.4))
    top = s["categories"][:8]
    ax.barh([c for c, _ in top][::-1], [float(v) for _, v in top][::-1], color="#B279A2")
    ax.set_xlabel("Item GMV, USD")
    ax.set_title("Top categories")
    charts.append(("Top categories", _png(fig)))
    plt.close(fig)

    kpis = [("Orders", f"{s['orders']:,}"), ("GMV", money(s["gmv"])), ("AOV", money(s["aov"])),
            ("Net revenue", money(s["net"])), ("Conversion", f"{100 * s['conversion']:.2f}%")]
    rows = "".join(f"<tr><td>{d.isoformat()}</td><td>{v['orders']:,}</td><td>{money(v['gmv'])}</td>"
                   f"<td>{money(v['net'])}</td></tr>" for d, v in s["per_day"].items())
    cats = "".join(f"<tr><td>{html.escape(c)}</td><td>{money(v)}</td></tr>" for c, v in s["categories"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>shopstream report {first} to {last}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}} .kpi{{display:inline-block;margin:0 2em 1em 0}}
.kpi b{{display:block;font-size:1.6em}} table{{border-collapse:collapse}} td,th{{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}}
td:first-child,th:first-child{{text-align:left}} img{{max-width:100%}}</style></head><body>
<h1>shopstream — {first} to {last}</h1>
<div>{''.join(f'<div class="kpi"><span>{k}</span><b>{v}</b></div>' for k, v in kpis)}</div>
{''.join(f'<h2>{html.escape(t)}</h2><img alt="{html.escape(t)}" src="{src}">' for t, src in charts)}
<h2>Per day</h2><table><tr><th>Date</th><th>Orders</th><th>GMV</th><th>Net revenue</th></tr>{rows}</table>
<h2>Categories</h2><table><tr><th>Category</th><th>Item GMV</th></tr>{cats}</table>
<p>Money is exact in the tables and rounded to the cent here. Source: gold_daily_sales,
gold_daily_category_sales, gold_daily_funnel.</p>
</body></html>
"""
