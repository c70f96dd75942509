"""The results of a run as Markdown, a PNG chart and JSON, with each ratio against issue 6."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

TARGET_NAMES = {
    "service": "service",
    "lever": "service + lever",
    "raw": "raw SQL",
    "peer": "PostGraphile 4",
}
WORKLOAD_NAMES = {
    "timeline": "timeline page (first: 50, then by cursor)",
    "conversations": "conversation list (first: 25)",
    "conversations_channel": "conversation list, one channel",
    "persist_new": "persistMessage, new (inbound + outbound)",
    "persist_replay": "persistMessage, replay (deduplicated)",
    "persist_batch": "persistMessages, a batch of new messages (backfill)",
    "mixed": "mixed inbox",
    "floor": "{ __typename }: the stack's floor, no SQL",
}
STATEMENT_KINDS = {
    "timeline": ["timeline"],
    "conversations": ["conversations"],
    "conversations_channel": ["conversations_channel"],
    "persist_new": ["persist_inbound", "persist_outbound"],
    "persist_replay": ["persist_replay"],
    "persist_batch": ["persist_batch"],
    "floor": ["floor"],
}


def _ms(value: float) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:,.1f}"


def _ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b or math.isnan(a) or math.isnan(b):
        return None
    return a / b


def _x(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _processes(env: dict[str, Any]) -> str:
    workers = env.get("peer_workers", 1)
    return "one process" if workers == 1 else f"{workers} processes (`--cluster-workers`)"


def _statements(results: dict[str, Any], workload: str) -> str:
    per = results.get("statements", {})
    kinds = [k for k in STATEMENT_KINDS.get(workload, []) if k in per]
    if not kinds:
        return "–"
    lo = min(per[k]["min"] for k in kinds)
    hi = max(per[k]["max"] for k in kinds)
    mean = sum(per[k]["mean"] for k in kinds) / len(kinds)
    spread = f" ({lo}–{hi})" if lo != hi else ""
    return f"{mean:.1f}{spread}"


def cpu_ms(summary: dict[str, Any], target: str) -> tuple[float | None, float | None]:
    """CPU milliseconds per request: of the target's own process (for raw SQL: the asyncpg
    client, this process) and of PostgreSQL. Unlike throughput, these hardly move when other
    work shares the machine."""
    cpu = summary.get("cpu") or {}
    rps = summary["all"]["rps"]
    if not rps:
        return None, None
    own = cpu.get("driver") if target == "raw" else cpu.get("server")
    pg = cpu.get("postgres")
    return (
        None if own is None else own * 1000 / rps,
        None if pg is None else pg * 1000 / rps,
    )


def _cpu(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def efficiency(by_target: dict[str, Any], a: str, b: str) -> float | None:
    """How many requests ``a`` serves per CPU-second of (its process + PostgreSQL), relative to
    ``b``: the throughput ratio the two would have on a machine of their own."""
    ca = cpu_ms(by_target[a], a)
    cb = cpu_ms(by_target[b], b)
    if None in ca or None in cb:
        return None
    return (cb[0] + cb[1]) / (ca[0] + ca[1])  # type: ignore[operator]


def summary_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| Workload | Target | req/s | p50 ms | p95 ms | p99 ms | errors "
        "| SQL statements / request | CPU ms / request: own + PostgreSQL "
        "| service ÷ raw | service ÷ peer |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workload, by_target in results["runs"].items():
        service = by_target.get("service", {}).get("all")
        for target in ("service", "lever", "raw", "peer"):
            if target not in by_target:
                continue
            a = by_target[target]["all"]
            vs_raw = vs_peer = ""
            statements = ""
            if target == "service":
                raw = by_target.get("raw", {}).get("all")
                peer = by_target.get("peer", {}).get("all")
                vs_raw = _x(_ratio(a["rps"], raw["rps"])) if raw else "–"
                vs_peer = _x(_ratio(a["rps"], peer["rps"])) if peer else "–"
                statements = _statements(results, workload)
            elif target == "raw":
                statements = _statements(results, workload)
            elif target == "lever" and service:
                vs_raw = f"lever ÷ service: {_x(_ratio(a['rps'], service['rps']))}"
            name = (
                WORKLOAD_NAMES.get(workload, workload) if target == "service" or not service else ""
            )
            own, pg = cpu_ms(by_target[target], target)
            lines.append(
                f"| {name} | {TARGET_NAMES[target]} | {a['rps']:,.0f} | {_ms(a['p50'])} "
                f"| {_ms(a['p95'])} | {_ms(a['p99'])} | {a['errors']} | {statements} "
                f"| {_cpu(own)} + {_cpu(pg)} | {vs_raw} | {vs_peer} |"
            )
    return lines


def kinds_table(results: dict[str, Any]) -> list[str]:
    lines = [
        "| Workload | Request kind | Target | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for workload in ("persist_new", "mixed"):
        for target, summary in results["runs"].get(workload, {}).items():
            for kind, s in summary.items():
                if kind in ("all", "cpu", "peak_rss_mb", "first_errors", "repeats_rps"):
                    continue
                lines.append(
                    f"| {workload} | {kind} | {TARGET_NAMES[target]} | {s['rps']:,.0f} "
                    f"| {_ms(s['p50'])} | {_ms(s['p95'])} | {_ms(s['p99'])} |"
                )
    return lines


def targets(results: dict[str, Any], baseline: dict[str, Any] | None) -> list[str]:
    runs = results["runs"]
    lines = ["| Target (issue 6) | Measured | Met? |", "|---|---|---|"]

    def row(what: str, measured: str, ok: bool | None) -> None:
        verdict = "–" if ok is None else ("yes" if ok else "**no**")
        lines.append(f"| {what} | {measured} | {verdict} |")

    for workload in ("timeline", "conversations", "conversations_channel"):
        r = runs.get(workload, {})
        if "service" in r and "peer" in r:
            s, p = r["service"]["all"], r["peer"]["all"]
            ratio = _ratio(s["rps"], p["rps"])
            row(
                f"{workload}: throughput ≥ peer's",
                f"{s['rps']:,.0f} vs {p['rps']:,.0f} req/s = {_x(ratio)}; per CPU-second "
                f"(own + PostgreSQL): {_x(efficiency(r, 'service', 'peer'))}",
                ratio is not None and ratio >= 1,
            )
            row(
                f"{workload}: p99 ≤ peer's",
                f"{_ms(s['p99'])} vs {_ms(p['p99'])} ms",
                s["p99"] <= p["p99"],
            )
    r = runs.get("persist_new", {})
    if "service" in r and "raw" in r:
        ratio = _ratio(r["service"]["all"]["rps"], r["raw"]["all"]["rps"])
        row(
            "persistMessage (new): throughput ≥ 0.5 × raw SQL of the same writes",
            f"{r['service']['all']['rps']:,.0f} vs {r['raw']['all']['rps']:,.0f} req/s "
            f"= {_x(ratio)}; per CPU-second (own + PostgreSQL): "
            f"{_x(efficiency(r, 'service', 'raw'))}",
            ratio is not None and ratio >= 0.5,
        )
    r = runs.get("persist_batch", {})
    if "service" in r and "raw" in r:
        ratio = _ratio(r["service"]["all"]["rps"], r["raw"]["all"]["rps"])
        size = results.get("batch_size", "?")
        row(
            f"persistMessages ({size} per batch): throughput ≥ 0.8 × raw SQL of the same rows",
            f"{r['service']['all']['rps']:,.1f} vs {r['raw']['all']['rps']:,.1f} batches/s "
            f"= {_x(ratio)}; per CPU-second (own + PostgreSQL): "
            f"{_x(efficiency(r, 'service', 'raw'))}",
            ratio is not None and ratio >= 0.8,
        )
    if baseline and baseline.get("scale") != results.get("scale"):
        for workload in ("timeline", "conversations", "conversations_channel"):
            now = runs.get(workload, {}).get("service", {}).get("all")
            then = baseline["runs"].get(workload, {}).get("service", {}).get("all")
            if now and then:
                ratio = _ratio(now["p50"], then["p50"])
                own_now = cpu_ms(runs[workload]["service"], "service")
                own_then = cpu_ms(baseline["runs"][workload]["service"], "service")
                cpu_ratio = None
                if None not in own_now and None not in own_then:
                    cpu_ratio = (own_now[0] + own_now[1]) / (own_then[0] + own_then[1])  # type: ignore[operator]
                row(
                    f"{workload}: p50 at {results['scale']} ≤ 1.2 × p50 at {baseline['scale']}",
                    f"{_ms(now['p50'])} vs {_ms(then['p50'])} ms = {_x(ratio)}; CPU per "
                    f"request (service + PostgreSQL): {_x(cpu_ratio)}",
                    ratio is not None and ratio <= 1.2,
                )
    for label, sizes in results.get("statements_by_page_size", {}).items():
        values = {int(k): v for k, v in sizes.items()}
        constant = len({round(v, 3) for v in values.values()}) == 1
        measured = ", ".join(f"{k}: {v:g}" for k, v in sorted(values.items()))
        row(
            f"{label}: constant SQL statements per request whatever the page size (most per "
            "request, by page size)",
            measured,
            constant,
        )
    return lines


def resources(results: dict[str, Any]) -> list[str]:
    lines = [
        "| Workload | Target | req/s of each repeat | CPU: server (cores) | CPU: PostgreSQL "
        "| CPU: load driver | CPU: other work on the machine | peak RSS MiB |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]

    def cores(v: float | None) -> str:
        return "–" if v is None else f"{v:.2f}"

    for workload, by_target in results["runs"].items():
        for target, s in by_target.items():
            cpu = s.get("cpu", {})
            rss = s.get("peak_rss_mb")
            repeats = ", ".join(f"{r:,.0f}" for r in s.get("repeats_rps", []))
            lines.append(
                f"| {workload} | {TARGET_NAMES[target]} | {repeats} | {cores(cpu.get('server'))} "
                f"| {cores(cpu.get('postgres'))} | {cores(cpu.get('driver'))} "
                f"| {cores(cpu.get('other'))} | {'–' if rss is None else f'{rss:,.0f}'} |"
            )
    return lines


def markdown(results: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    env = results["environment"]
    counts = results["counts"]
    serve = " ".join(env["serve_args"]) or "defaults"
    peer = results.get("peer_version")
    lines = [
        f"# Benchmark at {results['scale']} messages"
        + (f" — lever: {results['label']}" if results.get("label") else ""),
        "",
        f"Run {env['date']} on commit `{env['commit']}`. Machine: {env['cpu']}, "
        f"{env['cores']} cores, {env['memory_gib']} GiB, {env['os']}. "
        f"PostgreSQL {env['postgresql']}, default settings. Python {env['python']}, "
        f"Strawberry {env['strawberry']}, SQLAlchemy {env['sqlalchemy']}, asyncpg "
        f"{env['asyncpg']}, uvicorn {env['uvicorn']}.",
        "",
        f"Service: `python -m tests.bench.serve` ({serve}; = `omni-store serve`: uvicorn on "
        f"uvloop/httptools, or asyncio/h11 on commits older than `omni_store.cli.SERVER_OPTIONS`, "
        f"unless a lever says otherwise), pool {env['pool_size']}. "
        + (
            f"Peer: PostGraphile {peer} on Node {env['node']}, {_processes(env)}, pool "
            f"{env['pool_size']}, `--dynamic-json --disable-query-log`. "
            if peer
            else "Peer: not run. "
        )
        + f"Raw SQL: the service's own recorded statements and transactions through an asyncpg "
        f"pool of {env['pool_size']}. Load: {env['concurrency']} concurrent clients "
        f"(keep-alive HTTP/1.1 on 127.0.0.1, driver on {env['driver_loop']}), "
        f"{env['duration']:g} s measured after {env['warmup']:g} s of warm-up per run, "
        f"targets alternating, best of {env.get('repeat', 1)} per workload and target; "
        'everything on the same machine (see "other" CPU below for work that was not ours).',
        "",
        f"Data: {counts['channel_accounts']} channel accounts of 10 tenants, "
        f"{counts['contacts']:,} contacts, {counts['conversations']:,} conversations, "
        f"{counts['messages']:,} messages, {counts['attachments']:,} attachments "
        f"({results['database_size']}).",
        "",
        *summary_table(results),
        "",
    ]
    rss = results.get("service_peak_rss_mb")
    if rss:
        lines.append(
            f"Peak RSS of the service process: {rss:,.0f} MiB"
            + (
                f"; of PostGraphile: {results['peer_peak_rss_mb']:,.0f} MiB."
                if results.get("peer_peak_rss_mb")
                else "."
            )
        )
        lines.append("")
    if results.get("lever_command"):
        lines += [
            f"Lever: `{results['lever_command']}` against `{results['service_command']}`, "
            "side by side.",
            "",
        ]
    lines += ["## Against the targets", "", *targets(results, baseline), ""]
    lines += ["## By request kind", "", *kinds_table(results), ""]
    lines += ["## CPU and memory per run", "", *resources(results), ""]
    return "\n".join(lines)


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(results["runs"])
    targets_ = [
        t for t in ("service", "raw", "peer") if any(t in r for r in results["runs"].values())
    ]
    colours = {"service": "#3b6fb6", "raw": "#9aa5b1", "peer": "#e08a2c"}
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), constrained_layout=True)
    width = 0.8 / len(targets_)
    for i, target in enumerate(targets_):
        xs = [w + i * width for w in range(len(workloads))]
        rps = [results["runs"][w].get(target, {}).get("all", {}).get("rps", 0) for w in workloads]
        top.bar(xs, rps, width, label=TARGET_NAMES[target], color=colours[target])
        p50 = [results["runs"][w].get(target, {}).get("all", {}).get("p50", 0) for w in workloads]
        p99 = [results["runs"][w].get(target, {}).get("all", {}).get("p99", 0) for w in workloads]
        bottom.bar(
            xs, p99, width, color=colours[target], alpha=0.45, label=f"{TARGET_NAMES[target]} p99"
        )
        bottom.bar(xs, p50, width, color=colours[target], label=f"{TARGET_NAMES[target]} p50")
    for ax in (top, bottom):
        ax.set_xticks([w + 0.4 - width / 2 for w in range(len(workloads))])
        ax.set_xticklabels(workloads, fontsize=9)
        ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    top.set_ylabel("requests / s (log)")
    bottom.set_ylabel("latency ms (log): p50 solid, p99 light")
    env = results["environment"]
    top.set_title(
        f"omni-store at {results['scale']} messages — {env['concurrency']} clients, "
        f"{env['cores']} cores" + (f" — {results['label']}" if results.get("label") else "")
    )
    top.legend(fontsize=8)
    bottom.legend(fontsize=7, ncol=3)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: dict[str, Any], directory: Path, stem: str) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    # Flatness compares with the 100k run of the same label (1M-x with 100k-x): another
    # label's 100k run may be of other code, or another machine.
    baseline_path = directory / f"100k{stem.removeprefix(results['scale'])}.json"
    baseline = json.loads(baseline_path.read_text()) if baseline_path.exists() else None
    json_path = directory / f"{stem}.json"
    json_path.write_text(json.dumps(results, indent=1, default=str) + "\n")
    md_path = directory / f"{stem}.md"
    md_path.write_text(markdown(results, baseline) + "\n")
    png_path = directory / f"{stem}.png"
    chart(results, png_path)
    return [md_path, png_path, json_path]


SCALES = ("100k", "1M", "10M")


def _rps(summary: dict[str, Any] | None) -> str:
    return "–" if not summary else f"{summary['rps']:,.0f}"


def condensed(results: dict[str, Any]) -> list[str]:
    """One row per workload: the service against the limit and the peer."""
    lines = [
        "| Workload | service req/s | p50 / p95 / p99 ms | raw SQL req/s | PostGraphile req/s "
        "| service ÷ raw | service ÷ peer (per CPU-s) | SQL statements / request |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for workload, by_target in results["runs"].items():
        s = by_target.get("service", {}).get("all")
        if not s:
            continue
        raw = by_target.get("raw", {}).get("all")
        peer = by_target.get("peer", {}).get("all")
        vs_peer = "–"
        if peer:
            vs_peer = (
                f"{_x(_ratio(s['rps'], peer['rps']))} "
                f"({_x(efficiency(by_target, 'service', 'peer'))})"
            )
        lines.append(
            f"| {workload} | {s['rps']:,.0f} | {_ms(s['p50'])} / {_ms(s['p95'])} / "
            f"{_ms(s['p99'])} | {_rps(raw)} | {_rps(peer)} "
            f"| {_x(_ratio(s['rps'], raw['rps'])) if raw else '–'} | {vs_peer} "
            f"| {_statements(results, workload)} |"
        )
    return lines


def readme_section(directory: Path) -> str:
    """The latest table of each scale, for the README's Benchmarks section."""
    out = []
    for scale in SCALES:
        path = directory / f"{scale}.json"
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        env = results["environment"]
        out += [
            f"**{scale} messages** — {env['date']}, commit `{env['commit']}`, {env['cpu']}, "
            f"{env['cores']} cores, {env['memory_gib']} GiB; PostgreSQL {env['postgresql']}; "
            f"{env['concurrency']} clients, {env['duration']:g} s per run, best of "
            f"{env.get('repeat', 1)}; peak RSS of the service "
            f"{results.get('service_peak_rss_mb', 0):,.0f} MiB "
            f"(PostGraphile {results.get('peer_peak_rss_mb', 0):,.0f} MiB). "
            f"Full table: `tests/bench/results/{scale}.md`.",
            "",
            *condensed(results),
            "",
        ]
    return "\n".join(out)


def levers_table(directory: Path, scale: str) -> str:
    """Every A/B lever run of a scale (results/<scale>-lever-*.json), one row per workload."""
    lines = [
        f"# Service levers at {scale} messages, each against the default service side by side",
        "",
        "| Lever | Workload | default req/s | with lever req/s | gain | default CPU ms/req "
        "| with lever CPU ms/req | p99 default → lever ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for path in sorted(directory.glob(f"{scale}-lever-*.json")):
        results = json.loads(path.read_text())
        name = results.get("label", path.stem).removeprefix("lever-")
        for workload, by_target in results["runs"].items():
            if "service" not in by_target or "lever" not in by_target:
                continue
            a, b = by_target["service"], by_target["lever"]
            ca, cb = cpu_ms(a, "service"), cpu_ms(b, "lever")
            command = results.get("lever_command", "").removeprefix("python -m tests.bench.serve ")
            lines.append(
                f"| {name} (`{command}`) "
                f"| {workload} | {a['all']['rps']:,.0f} | {b['all']['rps']:,.0f} "
                f"| {_x(_ratio(b['all']['rps'], a['all']['rps']))} | {_cpu(ca[0])} "
                f"| {_cpu(cb[0])} | {_ms(a['all']['p99'])} → {_ms(b['all']['p99'])} |"
            )
    return "\n".join(lines) + "\n\n" + LEVER_NOTES


LEVER_NOTES = """\
Each row is one A/B run (`python -m tests.bench.run --messages 1M --targets service,lever
--workloads timeline,persist_new --duration 15 --repeat 2 --serve=<options>`): the default
service and the service with the lever, both up, loaded alternately, best of 2. Throughput
moved with other work on the shared machine (0.0–1.3 cores of it, see each run's CPU table in
`1M-lever-<name>.md`); CPU milliseconds per request of the service process hardly did, so read
that column first.

- `caches-as-is` and `all-as-is`: Strawberry's ParserCache and ValidationCache added as they
  are. The validation cache never hits: `build_schema` makes a QueryDepthLimiter and a
  MaxAliasesLimiter per request, each builds a new rule class, and the rule set is part of the
  cache key. `caches` and `all` build those rule classes once (tests/bench/serve.py shows how):
  validation then hits on every repeated document. `all-workers2` ran with them built once
  too. These ran on the code before 5c57425.
- `stable-rules` (`--caches`: rule classes built once, plus ParserCache) and
  `stable-rules-only` (`--stable-rules`: rule classes built once, nothing else) ran on 1c847a6,
  whose build_schema already has a ValidationCache that, as it is, never hits (its key holds
  the per-request rule classes: 0 hits in 22 requests in process; 21 of 22 with the classes
  built once).
- `workers2`: two uvicorn workers. With about one core of other work on the machine during
  that run, the second worker had no core to run on; inconclusive here.
"""


if __name__ == "__main__":
    import sys

    here = Path(__file__).resolve().parent / "results"
    if sys.argv[1:] == ["--readme"]:
        print(readme_section(here))
    elif sys.argv[1:2] == ["--levers"]:
        scale = sys.argv[2]
        (here / f"levers-{scale}.md").write_text(levers_table(here, scale))
        print(levers_table(here, scale))
    else:
        for stem in sys.argv[1:]:
            results = json.loads((here / f"{stem}.json").read_text())
            print([str(p) for p in write_report(results, here, stem)])
