"""The bench's results as one JSON document and a Markdown table, with the issue's targets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from streams.bench.latency import Latency
from streams.bench.throughput import Backlog

MB = 2**20
# The targets (2 cores, broker + Redis + worker on one machine, one worker process).
MIN_SHARE_OF_CEILING = 0.5
MIN_TIMES_NAIVE = 10.0
MAX_P99_MS_AT_HALF = 50.0
MAX_PEAK_RSS_MB = 400.0


@dataclass
class LoadResult:
    share: float  # of the reference maximum
    offered_per_s: float
    latency: Latency | None = None  # None: the load is above what this contender sustains
    note: str = ""


@dataclass
class ContenderResult:
    name: str
    backlog: Backlog
    peak_rss_mb: float
    loads: list[LoadResult] = field(default_factory=list)
    rss_run: dict[str, Any] | None = None


def build_report(
    config: dict[str, Any], results: list[ContenderResult], reference: str
) -> dict[str, Any]:
    by_name = {r.name: r for r in results}
    report: dict[str, Any] = {
        "config": config,
        "reference_for_loads": reference,
        "contenders": [asdict(r) for r in results],
    }
    rts = by_name.get("rtscore")
    if rts is None:
        return report
    rate = rts.backlog.events_per_s
    targets: dict[str, Any] = {}
    if "ceiling" in by_name:
        share = rate / by_name["ceiling"].backlog.events_per_s
        ok = share >= MIN_SHARE_OF_CEILING
        targets["share_of_ceiling"] = {"value": round(share, 3), "ok": ok}
    if "naive" in by_name:
        times = rate / by_name["naive"].backlog.events_per_s
        targets["times_naive"] = {"value": round(times, 1), "ok": times >= MIN_TIMES_NAIVE}
    half = next((load for load in rts.loads if load.share == 0.5 and load.latency), None)
    if half is not None and half.latency is not None:
        p99 = half.latency.p99_ms
        targets["p99_ms_at_half_load"] = {"value": round(p99, 1), "ok": p99 <= MAX_P99_MS_AT_HALF}
    targets["peak_rss_mb"] = {
        "value": round(rts.peak_rss_mb, 1),
        "ok": rts.peak_rss_mb <= MAX_PEAK_RSS_MB,
    }
    if rts.rss_run is not None:
        slope = rts.rss_run.get("slope_mb_per_million")
        targets["rss_slope_mb_per_million"] = {
            "value": slope,
            "ok": slope is not None and slope < 5.0,
        }
    report["targets"] = targets
    drift = by_name.get("rtscore+drift")
    if drift is not None:
        share = drift.backlog.events_per_s / rate
        report["with_drift"] = {
            "events_per_s_without": round(rate),
            "events_per_s_with": round(drift.backlog.events_per_s),
            "share": round(share, 3),
        }
    return report


def _ms(latency: Latency | None, note: str) -> str:
    if latency is None:
        return note or "—"
    lost = f" ({latency.sent - latency.received} lost)" if latency.received < latency.sent else ""
    return (
        f"{latency.p50_ms:.0f} / {latency.p95_ms:.0f} / {latency.p99_ms:.0f} / "
        f"{latency.max_ms:.0f}{lost}"
    )


def markdown(report: dict[str, Any]) -> str:
    contenders = report["contenders"]
    shares = sorted({load["share"] for c in contenders for load in c["loads"]})
    head = ["contender", "max events/s", "CPU cores", "CPU µs/event", "peak RSS MB"]
    head += [f"ms p50/p95/p99/max at {share:.0%}" for share in shares]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for c in contenders:
        b = c["backlog"]
        row: list[str] = [
            c["name"],
            f"{b['events_per_s']:,.0f}",
            f"{b['cpu_cores']:.2f}",
            f"{b['cpu_us_per_event']:,.0f}",
            f"{c['peak_rss_mb']:.0f}",
        ]
        loads = {load["share"]: load for load in c["loads"]}
        for share in shares:
            load = loads.get(share)
            if load is None:
                row.append("—")
                continue
            lat = load["latency"]
            row.append(_ms(Latency(**lat) if lat else None, load["note"]))
        lines.append("| " + " | ".join(row) + " |")
    offered = ", ".join(
        f"{load['share']:.0%} = {load['offered_per_s']:,.0f}/s" for load in contenders[0]["loads"]
    )
    if offered:
        lines.append(f"\nOffered loads ({report['reference_for_loads']}'s maximum): {offered}.")
    drift = report.get("with_drift")
    if drift:
        lines.append(
            f"- with the drift processor beside it: {drift['events_per_s_with']:,} events/s, "
            f"{drift['share']:.0%} of the {drift['events_per_s_without']:,} without"
        )
    for name, target in report.get("targets", {}).items():
        lines.append(f"- {name}: {target['value']} ({'ok' if target['ok'] else 'MISSED'})")
    return "\n".join(lines)
