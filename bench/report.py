#!/usr/bin/python3
"""Turns the measurements of one scripts/bench run into the comparison table,
the PASS/FAIL verdict per project target, bench/RESULTS.md and the chart.

Usage: report.py RESULTS.jsonl RESULTS.md CHART.png
Exit status 0 when every target passes, 3 when one fails or was not measured.
"""
import json
import statistics
import sys
from collections import defaultdict

SERVERS = ["socks4d", "danted", "microsocks"]
COLUMNS = ["direct"] + SERVERS
COLORS = {"direct": "#7f7f7f", "socks4d": "#1f77b4", "danted": "#d62728", "microsocks": "#2ca02c"}

# Targets the project committed to (issue 5).
TP_VS_DANTED = 1.5
TP_VS_DIRECT = 0.65
HS_VS_DANTED = 3.0
HS_VS_MICROSOCKS = 1.5
KIB_PER_RELAY = 8.0
SHIM_NS = 1000.0
SUP_HS_VS_SHIM = 0.7
SUP_TP_VS_SHIM = 0.95
# Metrics must cost no measurable handshake rate (issue 14).
METRICS_ON_VS_OFF = 0.97
# SOCKS5 (issue 11): the handshake targets as SOCKS4's, and the relay as
# fast as SOCKS4's (the same relay code after a longer handshake).
HS5_VS_DANTED = 3.0
HS5_VS_MICROSOCKS = 1.5
TP5_VS_TP4 = 0.9
# "RSS back near idle": at most this share of what the relays added is
# still held after they close (1 MiB slack for noise).
RETAINED_SHARE = 0.10
RETAINED_SLACK_KIB = 1024


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    return recs


class Run:
    def __init__(self, recs):
        self.meta = next((r for r in recs if r["kind"] == "meta"), {})
        self.tp = defaultdict(list)  # (label, streams) -> [gbit/s per round]
        self.iperf = {}
        self.hs = {}
        self.udp = {}  # label -> best round by datagrams/s
        self.rss = {}
        self.hold = {}
        self.loop = defaultdict(list)  # plain|shim -> [median ns per run]
        self.loop_n = 0
        self.eisconn = defaultdict(list)  # plain|shim -> [ns per EISCONN connect per run]
        self.metrics_check = None
        for r in recs:
            k = r["kind"]
            if k == "throughput":
                self.tp[(r["label"], r["streams"])].append(r["gbit_s"])
            elif k == "iperf3":
                key = (r["label"], r["streams"])
                self.iperf[key] = max(self.iperf.get(key, 0), r["gbit_s"])
            elif k == "handshake":
                # Best round by rate, with that round's latencies.
                if r["label"] not in self.hs or r["per_s"] > self.hs[r["label"]]["per_s"]:
                    self.hs[r["label"]] = r
            elif k == "udp":
                if r["label"] not in self.udp or r["per_s"] > self.udp[r["label"]]["per_s"]:
                    self.udp[r["label"]] = r
            elif k == "rss":
                self.rss[r["label"]] = r
            elif k == "metrics_check":
                self.metrics_check = r
            elif k == "hold":
                self.hold[r["label"]] = r
            elif k == "connect_loop":
                self.loop[r["label"]].append(r["median_ns"])
                self.loop_n = r["n"]
                if "eisconn_ns" in r:
                    self.eisconn[r["label"]].append(r["eisconn_ns"])
        self.idle_big = self.meta.get("idle_big", 10000)

    def throughput(self, label, streams):
        v = self.tp.get((label, streams))
        return max(v) if v else None

    def per_relay_kib(self, server, n):
        idle = self.rss.get(f"{server}:idle")
        loaded = self.rss.get(f"{server}@{n}:loaded")
        hold = self.hold.get(f"{server}@{n}")
        if not (idle and loaded and hold and hold["relayed"]):
            return None
        return (loaded["rss_kib"] - idle["rss_kib"]) / hold["relayed"]

    # The per-run medians are bimodal on a shared VM (a run lands at ~21 us
    # or ~27 us per cycle, by what else the host is doing), so the median of
    # the runs can flip sign; the least disturbed run of each variant (the
    # minimum) is the stable estimate of what the code itself costs.
    def shim_overhead_ns(self):
        plain, shim = self.loop.get("plain"), self.loop.get("shim")
        if not plain or not shim:
            return None
        return min(shim) - min(plain)

    def supervisor_overhead_ns(self):
        plain, sup = self.loop.get("plain"), self.loop.get("supervised")
        if not plain or not sup:
            return None
        return min(sup) - min(plain)

    def metrics_pairs(self):
        """Per back-to-back pair: handshakes/s with metrics over without."""
        out = []
        for label, rec in self.hs.items():
            if label.startswith("pair") and label.endswith(":socks4d"):
                on = self.hs.get(label[: -len("socks4d")] + "socks4d-metrics")
                if on:
                    out.append(on["per_s"] / rec["per_s"])
        return sorted(out)

    def handshake_rate(self, label):
        """Proxied connects per second from connect_loop's fastest run's median."""
        v = self.loop.get(label)
        return 1e9 / min(v) if v else None

    def eisconn_overhead_ns(self):
        plain, shim = self.eisconn.get("plain"), self.eisconn.get("shim")
        if not plain or not shim:
            return None
        return min(shim) - min(plain)


def fmt(v, unit=""):
    if v is None:
        return "n/a"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        s = f"{v:,.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def mib(kib):
    return None if kib is None else kib / 1024


def comparison_rows(run):
    """Rows of (metric, {column: value}) where a bigger or smaller value is better."""
    rows = []
    for streams in (1, 4):
        rows.append((f"throughput, {streams} stream{'s' if streams > 1 else ''}, loadgen (Gbit/s)",
                     {c: run.throughput(c, streams) for c in COLUMNS}))
    for streams in (1, 4):
        vals = {c: run.iperf.get((c, streams)) for c in COLUMNS}
        vals["microsocks"] = "SOCKS5"
        rows.append((f"throughput, {streams} stream{'s' if streams > 1 else ''}, iperf3 via libsocks4.so (Gbit/s)",
                     vals))
    for key, name in (("per_s", "sequential handshakes (/s)"), ("p50_us", "CONNECT latency p50 (us)"),
                      ("p99_us", "CONNECT latency p99 (us)")):
        rows.append((name, {c: run.hs[c][key] if c in run.hs else None for c in COLUMNS}))
    for streams in (1, 4):
        rows.append((f"SOCKS5 throughput, {streams} stream{'s' if streams > 1 else ''}, loadgen (Gbit/s)",
                     {c: run.throughput(socks5_label(c), streams) for c in COLUMNS}))
    for key, name in (("per_s", "SOCKS5 sequential handshakes (/s)"), ("p50_us", "SOCKS5 CONNECT latency p50 (us)"),
                      ("p99_us", "SOCKS5 CONNECT latency p99 (us)")):
        rows.append((name, {c: run.hs[socks5_label(c)][key] if socks5_label(c) in run.hs else None for c in COLUMNS}))
    udp = {c: run.udp[c]["per_s"] if c in run.udp else None for c in COLUMNS}
    udp["microsocks"] = "no UDP"
    rows.append(("SOCKS5 UDP datagrams/s through an association (32 in flight, 64 B)", udp))
    return rows


def socks5_label(column):
    """The label of a column's SOCKS5 measurements: microsocks (SOCKS5 only) and direct as they are."""
    return column if column in ("direct", "microsocks") else f"{column}-socks5"


def table_comparison(run):
    head = "| metric | " + " | ".join(COLUMNS) + " | socks4d / direct | socks4d / danted | socks4d / microsocks |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 4)]
    for name, vals in comparison_rows(run):
        s = vals.get("socks4d")
        s = s if not isinstance(s, str) else None

        def r(c):
            o = vals.get(c)
            return fmt(ratio(s, o if not isinstance(o, str) else None), "x")

        cells = [fmt(vals.get(c)) for c in COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {r('direct')} | {r('danted')} | {r('microsocks')} |")
    return lines


def table_memory(run):
    big = run.idle_big
    lines = [
        f"| server | idle RSS (MiB) | processes | 1,000 relays: RSS (MiB) | KiB/relay | after close (MiB) "
        f"| {big:,} relays: RSS (MiB) | KiB/relay | PSS KiB/relay | after close (MiB) | relays up at {big:,} |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in SERVERS:
        idle = run.rss.get(f"{s}:idle")
        if not idle:
            lines.append(f"| {s} | n/a |" + " n/a |" * 9)
            continue
        cells = [fmt(mib(idle["rss_kib"])), str(idle["processes"])]
        for n in (1000, big):
            loaded = run.rss.get(f"{s}@{n}:loaded")
            closed = run.rss.get(f"{s}@{n}:closed")
            hold = run.hold.get(f"{s}@{n}")
            procs = f" ({loaded['processes']} procs)" if loaded and loaded["processes"] > 1 else ""
            cells.append(fmt(mib(loaded["rss_kib"])) + procs if loaded else "n/a")
            cells.append(fmt(run.per_relay_kib(s, n)))
            if n == big:
                pss = None
                if loaded and hold and hold["relayed"]:
                    pss = (loaded["pss_kib"] - idle["pss_kib"]) / hold["relayed"]
                cells.append(fmt(pss))
            cells.append(fmt(mib(closed["rss_kib"])) if closed else "n/a")
        hold = run.hold.get(f"{s}@{big}")
        if hold:
            up = f"{hold['relayed']:,} of {hold['wanted']:,}"
            if hold.get("first_error"):
                up += f" (first error: {hold['first_error']})"
        else:
            up = "n/a"
        cells.append(up)
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def targets(run):
    """(name, measured text, passed) per project target, for socks4d."""
    out = []

    def tp_targets(kind, get):
        for streams in (1, 4):
            s, d, dir_ = get("socks4d", streams), get("danted", streams), get("direct", streams)
            label = f"{kind} {streams} stream{'s' if streams > 1 else ''}"
            rd, rx = ratio(s, d), ratio(s, dir_)
            out.append((f"{label}: socks4d >= {TP_VS_DANTED}x danted", fmt(rd, "x"),
                        rd is not None and rd >= TP_VS_DANTED))
            out.append((f"{label}: socks4d >= {TP_VS_DIRECT}x direct", fmt(rx, "x"),
                        rx is not None and rx >= TP_VS_DIRECT))

    tp_targets("throughput loadgen", run.throughput)
    tp_targets("throughput iperf3+shim", lambda c, n: run.iperf.get((c, n)))
    rate = {c: run.hs[c]["per_s"] if c in run.hs else None for c in COLUMNS}
    r = ratio(rate["socks4d"], rate["danted"])
    out.append((f"handshakes/s: socks4d >= {HS_VS_DANTED}x danted", fmt(r, "x"), r is not None and r >= HS_VS_DANTED))
    r = ratio(rate["socks4d"], rate["microsocks"])
    out.append((f"handshakes/s: socks4d >= {HS_VS_MICROSOCKS}x microsocks", fmt(r, "x"),
                r is not None and r >= HS_VS_MICROSOCKS))
    pairs = run.metrics_pairs()
    r = statistics.median(pairs) if pairs else None
    check = run.metrics_check
    counted = check is not None and check["counted"] == check["expected"]
    note = "" if counted else f" (counted {check['counted'] if check else '?'} of {check['expected'] if check else '?'})"
    out.append((f"handshakes/s: socks4d with metrics >= {METRICS_ON_VS_OFF}x without (median of pairs)",
                fmt(r, "x") + note,
                r is not None and r >= METRICS_ON_VS_OFF and counted))
    rate5 = {c: run.hs[socks5_label(c)]["per_s"] if socks5_label(c) in run.hs else None for c in COLUMNS}
    r = ratio(rate5["socks4d"], rate5["danted"])
    out.append((f"SOCKS5 handshakes/s: socks4d >= {HS5_VS_DANTED}x danted", fmt(r, "x"),
                r is not None and r >= HS5_VS_DANTED))
    r = ratio(rate5["socks4d"], rate5["microsocks"])
    out.append((f"SOCKS5 handshakes/s: socks4d >= {HS5_VS_MICROSOCKS}x microsocks", fmt(r, "x"),
                r is not None and r >= HS5_VS_MICROSOCKS))
    for streams in (1, 4):
        label = f"SOCKS5 throughput {streams} stream{'s' if streams > 1 else ''}"
        s5, s4, d5 = (run.throughput(x, streams) for x in ("socks4d-socks5", "socks4d", "danted-socks5"))
        r = ratio(s5, s4)
        out.append((f"{label}: socks4d >= {TP5_VS_TP4}x its SOCKS4", fmt(r, "x"), r is not None and r >= TP5_VS_TP4))
        r = ratio(s5, d5)
        out.append((f"{label}: socks4d >= {TP_VS_DANTED}x danted", fmt(r, "x"), r is not None and r >= TP_VS_DANTED))
    big = run.idle_big
    k = run.per_relay_kib("socks4d", big)
    hold = run.hold.get(f"socks4d@{big}")
    all_up = hold is not None and hold["relayed"] == hold["wanted"]
    note = "" if all_up else " (not all relays came up)"
    out.append((f"socks4d RSS per idle relay at {big:,} <= {KIB_PER_RELAY:g} KiB", fmt(k, " KiB") + note,
                k is not None and k <= KIB_PER_RELAY and all_up))
    for n in (1000, big):
        idle, loaded, closed = (run.rss.get(f"socks4d{x}") for x in (":idle", f"@{n}:loaded", f"@{n}:closed"))
        if idle and loaded and closed:
            grown = loaded["rss_kib"] - idle["rss_kib"]
            kept = closed["rss_kib"] - idle["rss_kib"]
            ok = kept <= max(RETAINED_SHARE * grown, RETAINED_SLACK_KIB)
            text = f"idle {fmt(mib(idle['rss_kib']))} -> {fmt(mib(loaded['rss_kib']))} -> {fmt(mib(closed['rss_kib']))} MiB"
        else:
            ok, text = False, "n/a"
        out.append((f"socks4d RSS back near idle after {n:,} relays close", text, ok))
    ns = run.shim_overhead_ns()
    text = fmt(ns, " ns") + (" (below the noise)" if ns is not None and ns <= 0 else "")
    out.append((f"shim overhead on a direct connect < {SHIM_NS:g} ns", text, ns is not None and ns < SHIM_NS))
    r = ratio(run.handshake_rate("hs-supervisor"), run.handshake_rate("hs-shim"))
    out.append((f"handshakes/s: supervisor >= {SUP_HS_VS_SHIM}x shim", fmt(r, "x"), r is not None and r >= SUP_HS_VS_SHIM))
    for streams in (1, 4):
        r = ratio(run.iperf.get(("supervised", streams)), run.iperf.get(("socks4d", streams)))
        out.append((f"relay throughput {streams} stream{'s' if streams > 1 else ''} (iperf3 via socks4d): "
                    f"supervisor >= {SUP_TP_VS_SHIM}x shim", fmt(r, "x"), r is not None and r >= SUP_TP_VS_SHIM))
    return out


def metrics_section(run):
    """socks4d with `metrics` set against socks4d without, same handshakes, same rounds."""
    off, on = run.hs.get("socks4d"), run.hs.get("socks4d-metrics")
    if not off or not on:
        return ["Not measured (socks4d with metrics did not run)."]
    check = run.metrics_check or {}
    return [
        "Two socks4d processes with bench/socks4d.toml, one with `metrics = \"127.0.0.1:0\"` added; their",
        "sequential CONNECT handshakes interleaved in the same rounds (best round each). Afterwards the",
        "metrics one's `/metrics` was scraped: every handshake, warm-up included, must be one granted",
        "CONNECT session counted.",
        "",
        "| socks4d | handshakes/s | p50 (us) | p99 (us) |",
        "|---|---|---|---|",
        f"| metrics off | {fmt(off['per_s'])} | {fmt(off['p50_us'])} | {fmt(off['p99_us'])} |",
        f"| metrics on | {fmt(on['per_s'])} | {fmt(on['p50_us'])} | {fmt(on['p99_us'])} |",
        f"| on / off | {fmt(ratio(on['per_s'], off['per_s']), 'x')} | | |",
        "",
        f"Back-to-back pairs of 2,000 handshakes, alternating which goes first (the rounds above drift with",
        f"the machine's load by more than the 3 % looked for): on/off per pair "
        f"{', '.join(fmt(x, 'x') for x in run.metrics_pairs()) or 'n/a'}; median "
        f"{fmt(statistics.median(run.metrics_pairs()) if run.metrics_pairs() else None, 'x')} (the target's figure).",
        "",
        f"Sessions counted: {check.get('counted', '?')} of {check.get('expected', '?')} handshakes.",
    ]


def supervisor_section(run):
    """The seccomp supervisor against the shim, same program, same proxy, same run."""
    hs_shim, hs_sup = run.handshake_rate("hs-shim"), run.handshake_rate("hs-supervisor")
    lines = ["| metric | shim (LD_PRELOAD) | supervisor (seccomp) | supervisor / shim |", "|---|---|---|---|"]
    lines.append(f"| proxied connects/s (connect_loop through socks4d) | {fmt(hs_shim)} | {fmt(hs_sup)} | "
                 f"{fmt(ratio(hs_sup, hs_shim), 'x')} |")
    for streams in (1, 4):
        a, b = run.iperf.get(("socks4d", streams)), run.iperf.get(("supervised", streams))
        lines.append(f"| iperf3 via socks4d, {streams} stream{'s' if streams > 1 else ''} (Gbit/s) | {fmt(a)} | "
                     f"{fmt(b)} | {fmt(ratio(b, a), 'x')} |")
    plain = min(run.loop["plain"]) if run.loop.get("plain") else None
    sup = min(run.loop["supervised"]) if run.loop.get("supervised") else None
    eis_plain = min(run.eisconn["plain"]) if run.eisconn.get("plain") else None
    eis_sup = min(run.eisconn["supervised"]) if run.eisconn.get("supervised") else None
    return lines + [
        "",
        f"A connect that goes direct (loopback) costs {fmt(plain, ' ns')} plain and {fmt(sup, ' ns')} under the "
        f"supervisor (socket + connect + close, fastest run's median): **{fmt(run.supervisor_overhead_ns(), ' ns')} "
        f"more** (one notification round trip; the kernel then makes the call). A connect() failing with EISCONN "
        f"on a direct socket: {fmt(eis_plain, ' ns')} plain, {fmt(eis_sup, ' ns')} supervised.",
    ]


def chart(run, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 10))
    m = run.meta
    fig.suptitle(f"socks4d vs danted vs microsocks, loopback, {m.get('cores', '?')} cores, "
                 f"{m.get('date', '?')}, git {m.get('git', '?')}, load avg {m.get('load_start', '?')}", fontsize=13)

    def bars(ax, groups, columns, get, ylabel, title, log=False):
        width = 0.8 / len(columns)
        top = 0
        for i, c in enumerate(columns):
            xs, ys = [], []
            for g, (gname, key) in enumerate(groups):
                v = get(c, key)
                if isinstance(v, (int, float)):
                    xs.append(g + (i - (len(columns) - 1) / 2) * width)
                    ys.append(v)
            top = max([top] + ys)
            b = ax.bar(xs, ys, width, label=c, color=COLORS[c])
            ax.bar_label(b, labels=[fmt(y) for y in ys], fontsize=7, padding=1)
        ax.set_xticks(range(len(groups)), [g for g, _ in groups])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
            if top > 0:
                ax.set_ylim(top=top * 3)
        elif top > 0:
            ax.set_ylim(top=top * 1.1)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)

    groups = [("1 stream\nloadgen", ("tp", 1)), ("4 streams\nloadgen", ("tp", 4)),
              ("1 stream\niperf3 + shim", ("ip", 1)), ("4 streams\niperf3 + shim", ("ip", 4))]
    bars(axes[0][0], groups, COLUMNS,
         lambda c, k: run.throughput(c, k[1]) if k[0] == "tp" else run.iperf.get((c, k[1])),
         "Gbit/s", "Relay throughput (higher is better)")

    ax = axes[0][1]
    names = [c for c in COLUMNS if c in run.hs]
    vals = [run.hs[c]["per_s"] for c in names]
    b = ax.bar(names, vals, color=[COLORS[c] for c in names])
    ax.bar_label(b, labels=[f"{v:,.0f}/s\np50 {run.hs[c]['p50_us']:.0f} us\np99 {run.hs[c]['p99_us']:.0f} us"
                            for c, v in zip(names, vals)], fontsize=8, padding=2)
    ax.set_ylim(top=max(vals + [1]) * 1.3)
    ax.set_ylabel("CONNECT handshakes per second")
    ax.set_title("Sequential CONNECT handshakes (higher is better)")
    ax.grid(axis="y", alpha=0.3)

    big = run.idle_big
    groups = [("idle", ":idle"), ("1,000 relays", "@1000:loaded"), ("1,000 closed", "@1000:closed"),
              (f"{big:,} relays", f"@{big}:loaded"), (f"{big:,} closed", f"@{big}:closed")]
    bars(axes[1][0], groups, SERVERS,
         lambda c, k: mib(run.rss[c + k]["rss_kib"]) if c + k in run.rss else None,
         "MiB (sum of RSS over all server processes, log)", "Server memory with idle relays (lower is better)",
         log=True)

    groups = [("1,000 relays", 1000), (f"{big:,} relays", big)]
    ax = axes[1][1]
    bars(ax, groups, SERVERS, lambda c, n: run.per_relay_kib(c, n), "KiB of RSS per idle relay (log)",
         "Server RSS per idle relayed connection (lower is better)", log=True)
    ax.axhline(KIB_PER_RELAY, color="black", linestyle="--", linewidth=1)
    ax.text(-0.45, KIB_PER_RELAY, f"socks4d target {KIB_PER_RELAY:g} KiB", va="bottom", ha="left", fontsize=8)
    ax.set_ylim(bottom=1)
    ns = run.shim_overhead_ns()
    ax.set_xlabel(f"libsocks4.so cost on a direct loopback connect: {fmt(ns, ' ns')} (target < {SHIM_NS:g} ns)")

    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)


def main():
    src, md_path, png_path = sys.argv[1:4]
    run = Run(load(src))
    m = run.meta
    verdicts = targets(run)
    comp = table_comparison(run)
    mem = table_memory(run)
    tgt = ["| target | measured | result |", "|---|---|---|"]
    tgt += [f"| {name} | {text} | {'PASS' if ok else 'FAIL'} |" for name, text, ok in verdicts]
    ns = run.shim_overhead_ns()
    plain = min(run.loop["plain"]) if run.loop.get("plain") else None
    shim = min(run.loop["shim"]) if run.loop.get("shim") else None

    md = [
        "# Benchmark results",
        "",
        "Written by `scripts/bench` (do not edit by hand; rerun it). One run, every column measured",
        "in the same run on the same machine, so the ratios are what count: the machine is shared.",
        "",
        f"- date: {m.get('date', '?')}, git {m.get('git', '?')}",
        f"- machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('mem_gib', '?')} GiB, "
        f"{m.get('os', '?')}, kernel {m.get('kernel', '?')}",
        f"- peers: danted {m.get('danted', '?')} (SOCKS4 and SOCKS5, `-N 1`, errors-only log), microsocks "
        f"{m.get('microsocks', '?')} (SOCKS5 only), iperf3 {m.get('iperf3', '?')}; {m.get('rustc', '?')}",
        f"- load average (1 min) at start and end of the run: {m.get('load_start', '?')}, {m.get('load_end', '?')} "
        f"(other work on the machine; {m.get('cores', '?')} cores); run took {m.get('took_s', '?')} s",
        f"- throughput: {m.get('seconds', '?')} s per point, best of {m.get('rounds', 2)} interleaved rounds (loadgen and iperf3); "
        f"handshakes: {m.get('handshakes', '?')} sequential after 200 warm-up, best of {m.get('rounds', 2)} interleaved rounds; memory: sum over the "
        f"server's process tree; `ulimit -n` {m.get('fd_limit', '?')}",
        "",
        "![chart](results.png)",
        "",
        "## Comparison",
        "",
        *comp,
        "",
        "SOCKS5 rows: the same servers spoken to in SOCKS5 (no authentication; socks4d and danted on the",
        "same port as their SOCKS4), microsocks as in its other rows. UDP: `loadgen udp`, 64-byte datagrams",
        "to a UDP echo through one association, 32 in flight, answers counted per second (a lost datagram is",
        "replaced after 50 ms); direct is the echo without a proxy.",
        "",
        "## Memory with idle relayed connections",
        "",
        "RSS summed over every process of the server (danted forks); KiB/relay = (RSS loaded - RSS idle) / relays",
        "up. PSS shares each shared page among the processes that map it, so it is fairer to danted's forks.",
        "Kernel socket buffers are not in RSS for any server.",
        "",
        *mem,
        "",
        "## Shim cost on a connect that goes direct",
        "",
        f"`bench/connect_loop.c`: socket + connect + close to a loopback listener, {len(run.loop.get('plain', []))} runs "
        f"of {run.loop_n:,} per variant, alternating; the fastest run's median per variant (per-run medians on this shared VM "
        f"are bimodal, ~21 or ~27 us, by what else the host does): without LD_PRELOAD {fmt(plain, ' ns')}, with "
        f"libsocks4.so (default SOCKS4_DIRECT: loopback goes direct) {fmt(shim, ' ns')}: "
        f"**{fmt(ns, ' ns')} per connect**. Per-run medians, plain: {', '.join(fmt(v) for v in run.loop.get('plain', []))}; "
        f"shim: {', '.join(fmt(v) for v in run.loop.get('shim', []))}.",
        "",
        f"The user-space path alone (connect() on a connected socket, failing with EISCONN, 200,000 calls per run, "
        f"fastest run): {fmt(min(run.eisconn['plain']) if run.eisconn.get('plain') else None, ' ns')} without and "
        f"{fmt(min(run.eisconn['shim']) if run.eisconn.get('shim') else None, ' ns')} with the shim: "
        f"{fmt(run.eisconn_overhead_ns(), ' ns')}.",
        "",
        "## Seccomp supervisor against the shim",
        "",
        "The same programs under `socks4-run --supervise` and under `LD_PRELOAD=libsocks4.so`, through socks4d,",
        "interleaved in one run. Relayed data never passes through the supervisor; only the calls it must see do.",
        "",
        *supervisor_section(run),
        "",
        "## Metrics on and off",
        "",
        *metrics_section(run),
        "",
        "## Targets",
        "",
        *tgt,
        "",
    ]
    if run.idle_big < 10000:
        md += [f"The large idle point is {run.idle_big:,}, not 10,000: the hard `ulimit -n` here is "
               f"{m.get('fd_limit', '?')} and 10,000 relays need 20,000+ descriptors in the server "
               "(no CAP_SYS_RESOURCE to raise it).", ""]
    with open(md_path, "w") as f:
        f.write("\n".join(md))
    try:
        chart(run, png_path)
    except Exception as e:  # the table is the result; a chart failure must not hide it
        print(f"report: chart not drawn: {e}", file=sys.stderr)

    print()
    print("\n".join(comp))
    print()
    print("\n".join(mem))
    print()
    print(f"shim cost on a direct connect: {fmt(ns, ' ns')} (plain {fmt(plain, ' ns')}, shim {fmt(shim, ' ns')})")
    print()
    for name, text, ok in verdicts:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {text}")
    print(f"\nwrote {md_path} and {png_path}")
    return 0 if all(ok for _, _, ok in verdicts) else 3


if __name__ == "__main__":
    sys.exit(main())
