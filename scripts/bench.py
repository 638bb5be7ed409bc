#!/usr/bin/env python3
"""The benchmark suite behind scripts/bench: runs every workload against otpd and, when given,
astrond (alternating the two, run after run), keeps each run's figures in
bench/results.json of the cargo target folder (target/, or $CARGO_TARGET_DIR), and writes the tables (medians with their spread) between the
bench markers of docs/performance.md and the plots into docs/img/.

Workloads, all driven by the same load tool (otp-load, from the target folder's release/):
  md-flood     37-byte datagrams, 100 per write, 10 receivers     messages routed per second
  md-fanout    the same with 5 receivers per channel              deliveries per second
  md-rtt       one datagram in flight, unloaded                   round-trip percentiles
  md-scaling   md-flood with 10..160 receivers (subscriptions)    server CPU per message
  ss           creates and zone-broadcast field updates           per second, bytes per object
  db           Database role on SQLite: creates, durable writes   per second, latency
  clients      N clients in zones of 50 at 1 Hz (N swept)          delivery latency, CPU, memory
"""

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Cargo's target folder: $CARGO_TARGET_DIR (a relative one from the current folder, as cargo
# reads it), else target/ in the repository.
TARGET = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target").resolve()
LOAD = TARGET / "release/otp-load"
OTPD = TARGET / "release/otpd"
LOAD_DC = ROOT / "otp-load/load.dc"
OBJECTS_DC = ROOT / "tests/dc/objects.dc"
# Each day's medians of the key figures, for the before-and-after plot (docs/img/bench-history.png):
# a run given --history-label adds its own.
HISTORY = ROOT / "docs/bench-history.json"
BEGIN = "<!-- bench:begin (written by scripts/bench; edits here are overwritten) -->"
END = "<!-- bench:end -->"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.1)
    return False


class Server:
    """One otpd or astrond process with a generated configuration."""

    def __init__(self, kind, binary, config_text, port, tmp, name):
        self.kind, self.port = kind, port
        suffix = ".ron" if kind == "otpd" else ".yml"
        path = Path(tmp) / f"{name}{suffix}"
        path.write_text(config_text)
        self.log = open(Path(tmp) / f"{name}.log", "w")
        if kind == "otpd":
            cmd = [str(binary), "--cluster", str(path), "--loglevel", "warning"]
        else:
            cmd = [str(binary), "--loglevel", "warning", str(path)]
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT)
        if not wait_port(port):
            self.stop()
            raise RuntimeError(f"{kind} did not listen on {port} (log {self.log.name})")

    @property
    def pid(self):
        return self.proc.pid

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def md_config(kind, port):
    if kind == "otpd":
        return f'(messagedirector: (bind: Some("127.0.0.1:{port}")))\n'
    return f"messagedirector:\n    bind: 127.0.0.1:{port}\n"


def ss_config(kind, port):
    if kind == "otpd":
        return (f'(pin_cores: false, dc_files: ["{OBJECTS_DC}"], messagedirector: '
                f'(bind: Some("127.0.0.1:{port}")), roles: [StateServer(control: 100100)])\n')
    return (f"messagedirector:\n    bind: 127.0.0.1:{port}\ngeneral:\n    dc_files:\n"
            f"        - {OBJECTS_DC}\nroles:\n    - type: stateserver\n      control: 100100\n")


def clients_config(kind, md, ca, cores=0):
    if kind == "otpd":
        return f"""(
    pin_cores: false,
    cores: {cores},
    dc_files: ["{LOAD_DC}"],
    uberdogs: [(id: 4665, class: "LoadLogin", anonymous: true)],
    messagedirector: (bind: Some("127.0.0.1:{md}"), idle_spin_us: 0),
    roles: [
        StateServer(control: 100100),
        ClientAgent((bind: "127.0.0.1:{ca}", version: "bench", channels: (min: 1000000, max: 1999999),
                     add_interest: "enabled", limits: (max_connections_per_address: 0))),
    ],
)
"""
    return f"""messagedirector:
    bind: 127.0.0.1:{md}
general:
    dc_files:
        - {LOAD_DC}
uberdogs:
    - id: 4665
      class: LoadLogin
      anonymous: true
roles:
    - type: stateserver
      control: 100100
    - type: clientagent
      bind: 127.0.0.1:{ca}
      version: "bench"
      channels:
          min: 1000000
          max: 1999999
      client:
          add_interest: enabled
"""


def run_load(args, timeout=600):
    """Runs otp-load; returns (exit code, stdout)."""
    cmd = [str(LOAD)] + [str(a) for a in args]
    log("    $ otp-load " + " ".join(str(a) for a in args))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, ""
    if p.returncode != 0:
        log(f"    otp-load exited {p.returncode}: {p.stderr.strip()[-400:]}")
    return p.returncode, p.stdout


def last_json(out):
    for line in reversed(out.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                pass
    return None


def num(pattern, text):
    m = re.search(pattern, text)
    return float(m.group(1)) if m else None


# ---- workloads: each returns a dict of figures for one run against one server --------------

def w_flood(server, fanout, receivers, messages):
    code, out = run_load(["flood", "--addr", f"127.0.0.1:{server.port}", "--receivers", receivers,
                          "--fanout", fanout, "--messages", messages, "--size", 37, "--batch", 100,
                          "--pid", server.pid, "--json"])
    j = last_json(out) or {}
    return {"ok": code == 0, "routed_per_s": j.get("routed_per_s_median"),
            "deliveries_per_s": j.get("deliveries_per_s_median"),
            "cpu_us_per_msg": j.get("md_cpu_us_per_msg"), "lost": j.get("lost")}


def w_rtt(server, count):
    code, out = run_load(["pingpong", "--addr", f"127.0.0.1:{server.port}", "--count", count,
                          "--json"])
    j = last_json(out) or {}
    return {"ok": code == 0, **{k: j.get(k) for k in ("p50_us", "p90_us", "p99_us", "p999_us", "max_us")}}


def w_ss(server, objects, updates):
    code, out = run_load(["objects", "--dc", OBJECTS_DC, "--addr", f"127.0.0.1:{server.port}",
                          "--objects", objects, "--updates", updates, "--pid", server.pid])
    return {"ok": code == 0,
            "creates_per_s": num(r"= (\d+) creates/s", out),
            "updates_per_s": num(r"= (\d+) field updates/s", out),
            "bytes_per_object": num(r"= (\d+) bytes per live object", out)}


def w_db(port, requests):
    code, out = run_load(["db", "--dc", OBJECTS_DC, "--addr", f"127.0.0.1:{port}",
                          "--requests", requests, "--window", 256])
    r = {"ok": code == 0}
    for line in out.splitlines():
        m = re.match(r"(\w[\w ]*?): \d+ in [\d.]+ s = (\d+)/s; latency ms p50 ([\d.]+) p99 ([\d.]+)", line.strip())
        if m:
            key = m.group(1).strip().replace(" ", "_").lower()
            r[f"{key}_per_s"] = float(m.group(2))
            r[f"{key}_p99_ms"] = float(m.group(4))
    return r


def w_clients(server, ca, md, clients, duration, warmup):
    code, out = run_load(["clients", "--md", f"127.0.0.1:{md}", "--ca", f"127.0.0.1:{ca}",
                          "--dc", LOAD_DC, "--version", "bench", "--clients", clients,
                          "--zone-size", 50, "--rate", 1, "--duration", duration,
                          "--warmup", warmup, "--pid", server.pid, "--json"], timeout=900)
    j = last_json(out) or {}
    keys = ("held", "ejected", "deliveries_per_s", "lost", "p50_ms", "p90_ms", "p99_ms",
            "p999_ms", "max_ms", "rss_per_idle_client_kib", "server_cpu_pct", "load_cpu_pct",
            "softirq_cpu_pct", "login_p99_ms")
    return {"ok": code == 0, "clients": clients, **{k: j.get(k) for k in keys}}


# ---- the suite ------------------------------------------------------------------------------

def servers_of(args):
    s = [("otpd", OTPD)]
    if args.astrond:
        s.append(("astrond", Path(args.astrond)))
    return s


def suite(args, tmp):
    results = []  # {"workload", "server", "run", "params", "figures"}

    def record(workload, server, run, params, figures):
        results.append({"workload": workload, "server": server, "run": run,
                        "params": params, "figures": figures})
        log(f"    {workload} {server} run {run}: {json.dumps(figures)}")

    only = set(args.only.split(",")) if args.only else None
    want = lambda w: only is None or w in only
    servers = servers_of(args)
    messages = 300_000 if args.quick else 1_000_000

    if want("md"):
        log("## MessageDirector: flood, fan-out, round trips, subscriptions")
        running = {}
        for i, (kind, binary) in enumerate(servers):
            port = 7291 + i
            running[kind] = Server(kind, binary, md_config(kind, port), port, tmp, f"md-{kind}")
        time.sleep(0.5)
        try:
            for run in range(1, args.runs + 1):
                for kind, _ in servers:  # alternating: otpd, astrond, otpd, astrond, ...
                    s = running[kind]
                    record("md-flood", kind, run, {"receivers": 10, "fanout": 1},
                           w_flood(s, 1, 10, messages))
                    record("md-fanout", kind, run, {"receivers": 10, "fanout": 5},
                           w_flood(s, 5, 10, messages))
                    record("md-rtt", kind, run, {"count": 20000},
                           w_rtt(s, 5000 if args.quick else 20000))
                    for receivers in (10, 20, 40, 80, 160):
                        record("md-scaling", kind, run, {"receivers": receivers},
                               w_flood(s, 1, receivers, messages))
        finally:
            for s in running.values():
                s.stop()

    if want("ss"):
        log("## StateServer: creates and zone-broadcast updates")
        objects = 100_000 if args.quick else 500_000
        for run in range(1, args.runs + 1):
            for i, (kind, binary) in enumerate(servers):
                port = 7495 + i  # a fresh server per run: memory counts this run's objects only
                s = Server(kind, binary, ss_config(kind, port), port, tmp, f"ss-{kind}-{run}")
                time.sleep(0.3)
                try:
                    record("ss", kind, run, {"objects": objects, "updates": objects},
                           w_ss(s, objects, objects))
                finally:
                    s.stop()

    if want("db"):
        log("## Database role on SQLite (astrond's database backends differ: otpd only)")
        requests = 10_000 if args.quick else 50_000
        for run in range(1, args.runs + 1):
            port = 7697
            data = Path(tmp) / f"db-{run}"
            conf = (f'(pin_cores: false, dc_files: ["{OBJECTS_DC}"], messagedirector: '
                    f'(bind: Some("127.0.0.1:{port}")), roles: [Database(control: 4003, '
                    f'generate: (min: 1000000, max: 99999999), backend: Sqlite(directory: "{data}"))])\n')
            s = Server("otpd", OTPD, conf, port, tmp, f"db-{run}")
            time.sleep(0.3)
            try:
                record("db", "otpd", run, {"requests": requests}, w_db(port, requests))
            finally:
                s.stop()

    if want("clients"):
        log("## ClientAgent: clients in zones of 50 at 1 Hz")
        sweep = [int(x) for x in args.clients.split(",")]
        duration, warmup = (5, 3) if args.quick else (10, 5)
        # otpd with all its cores, otpd with the core counts of --otpd-cores, astrond.
        variants = [("otpd", OTPD, 0)]
        variants += [(f"otpd (cores: {c})", OTPD, c) for c in args.otpd_cores]
        variants += [(k, b, 0) for k, b in servers if k != "otpd"]
        for run in range(1, args.client_runs + 1):
            for n in sweep:
                for i, (name, binary, cores) in enumerate(variants):
                    kind = "otpd" if name.startswith("otpd") else name
                    md, ca = 7591 + 2 * i, 7592 + 2 * i
                    s = Server(kind, binary, clients_config(kind, md, ca, cores), ca, tmp,
                               f"clients-{i}-{n}-{run}")
                    try:
                        record("clients", name, run, {"clients": n},
                               w_clients(s, ca, md, n, duration, warmup))
                    finally:
                        s.stop()
                    time.sleep(1)  # let the kernel reap the sockets
    return results


# ---- the report -----------------------------------------------------------------------------

def server_names(results):
    """Every server name in the results: otpd first, its variants, astrond last."""
    names = []
    for r in results:
        if r["server"] not in names:
            names.append(r["server"])
    return sorted(names, key=lambda s: (s == "astrond", s != "otpd", s))


def med(values):
    v = [x for x in values if isinstance(x, (int, float))]
    if not v:
        return None, None, None
    return statistics.median(v), min(v), max(v)


def fmt(x, unit=""):
    if x is None:
        return "-"
    if unit == "#":
        return f"{x:,.0f}"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f} M{unit}"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.0f} k{unit}"
    if abs(x) >= 100:
        return f"{x:.0f}{unit}"
    return f"{x:.2f}{unit}"


def cell(values, unit=""):
    m, lo, hi = med(values)
    if m is None:
        return "-"
    if len([x for x in values if x is not None]) == 1 or lo == hi:
        return fmt(m, unit)
    bare = "#" if unit == "#" else ""
    return f"{fmt(m, unit)} ({fmt(lo, bare)}–{fmt(hi, bare)})"


def figures(results, workload, server, key, params=None):
    return [r["figures"].get(key) for r in results
            if r["workload"] == workload and r["server"] == server
            and (params is None or all(r["params"].get(k) == v for k, v in params.items()))]


def shown(argv):
    """The command line as the report shows it: file paths (which name folders of the machine
    that ran it, outside the repository) are replaced by PATH."""
    out = []
    for i, a in enumerate(argv):
        name = a.split("=", 1)[0]
        if name in PATH_OPTIONS and "=" in a:
            out.append(name + "=PATH")
        elif i > 0 and argv[i - 1] in PATH_OPTIONS:
            out.append("PATH")
        else:
            out.append(a)
    return " ".join(out)


PATH_OPTIONS = ("--astrond", "--results", "--from-results")


def report(results, args, plots, argv, meta):
    servers = server_names(results)
    runs = max((r["run"] for r in results), default=0)
    lines = [BEGIN, "",
             f"Written by `scripts/bench {shown(argv)}` on "
             f"{meta.get('date', '?')}, {meta.get('cpus', '?')} CPUs "
             f"({meta.get('cpu', '?')}), otpd at {meta.get('rev', '?')}. Each cell: the median of {runs} run(s), "
             "with the lowest and highest in brackets when they differ; the servers ran "
             "alternately, with the load generator on the same machine.", ""]
    head = "| workload | " + " | ".join(servers) + (" | otpd vs astrond |" if "astrond" in servers else "") + " target |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]

    notes = set()

    def row(name, workload, key, unit="", params=None, target="", higher=True):
        vals = {s: figures(results, workload, s, key, params) for s in servers}
        if not any(any(v is not None for v in vs) for vs in vals.values()):
            return
        cells = [cell(vals[s], unit) for s in servers]
        if workload == "clients" and key != "held":
            for i, s in enumerate(servers):
                held = med(figures(results, "clients", s, "held", params))[0]
                if held is not None and held < params["clients"]:
                    cells[i] += " †"
                    notes.add("† this server held fewer clients than were started (the rest were "
                              "ejected): its figures are for the clients it kept, not comparable.")
        ratio = ""
        if "astrond" in servers:
            a, o = med(vals["astrond"])[0], med(vals["otpd"])[0]
            if a and o:
                r = o / a
                gain = r if higher else 1 / r
                word = "better" if gain > 1.05 else "worse" if gain < 0.95 else "same"
                ratio = f" {r:.2f}× ({word}) |"
            else:
                ratio = " - |"
        lines.append(f"| {name} | " + " | ".join(cells) + f" |{ratio} {target} |")

    row("MD flood, routed msg/s", "md-flood", "routed_per_s", "/s", target="≥ 3 M/s and ≥ 3× astrond")
    row("MD flood, server CPU µs per msg", "md-flood", "cpu_us_per_msg", "", higher=False)
    row("MD 5-way fan-out, deliveries/s", "md-fanout", "deliveries_per_s", "/s", target="≥ 10 M/s")
    row("MD round trip p50, µs", "md-rtt", "p50_us", higher=False)
    row("MD round trip p99, µs", "md-rtt", "p99_us", target="< 100 µs", higher=False)
    row("SS creates/s", "ss", "creates_per_s", "/s")
    row("SS zone-broadcast updates/s", "ss", "updates_per_s", "/s")
    row("SS bytes per live object", "ss", "bytes_per_object", higher=False)
    for key, label in (("creates_per_s", "DB (SQLite) creates/s"),
                       ("durable_field_writes_per_s", "DB (SQLite) durable field writes/s"),
                       ("durable_field_writes_p99_ms", "DB (SQLite) write p99, ms"),
                       ("get_all_per_s", "DB (SQLite) GET_ALL/s")):
        row(label, "db", key, "" if key.endswith("_ms") else "/s", higher=not key.endswith("_ms"))
    sweep = sorted({r["params"]["clients"] for r in results if r["workload"] == "clients"})
    for n in sweep:
        p = {"clients": n}
        target = "p99 < 50 ms" if n == 10000 else ""
        row(f"{n} clients: held", "clients", "held", "#", params=p, target="all" if n == 10000 else "")
        row(f"{n} clients: delivery p99, ms", "clients", "p99_ms", params=p, target=target, higher=False)
        row(f"{n} clients: deliveries/s", "clients", "deliveries_per_s", "/s", params=p)
        row(f"{n} clients: server CPU, % of a core", "clients", "server_cpu_pct", params=p, higher=False)
        row(f"{n} clients: KiB per idle client", "clients", "rss_per_idle_client_kib", params=p,
            target="< 64 KiB" if n == 10000 else "", higher=False)
    lines.append("")
    for note in sorted(notes):
        lines += [note, ""]
    lines += scaling(results, servers)
    for title, path in plots:
        lines += [f"![{title}]({path.relative_to(ROOT / 'docs')})", ""]
    lines.append(END)
    return "\n".join(lines)


def scaling(results, servers):
    """How CPU grows with the load: the ratio for each doubling (at most 2.0 = linear)."""
    out = []
    for s in servers:
        pts = []
        for n in sorted({r["params"]["clients"] for r in results if r["workload"] == "clients"}):
            m = med(figures(results, "clients", s, "server_cpu_pct", {"clients": n}))[0]
            if m:
                pts.append((n, m))
        if len(pts) >= 2:
            steps = ", ".join(f"{a[0]:,} → {b[0]:,} clients: CPU × {b[1] / a[1]:.2f} for load × {b[0] / a[0]:.1f}"
                              for a, b in zip(pts, pts[1:]))
            out += [f"Scaling, {s}, clients: {steps}.", ""]
        pts = []
        for n in sorted({r["params"]["receivers"] for r in results if r["workload"] == "md-scaling"}):
            m = med(figures(results, "md-scaling", s, "cpu_us_per_msg", {"receivers": n}))[0]
            if m:
                pts.append((n, m))
        if len(pts) >= 2:
            steps = ", ".join(f"{n}: {c:.3f}" for n, c in pts)
            out += [f"Scaling, {s}, MD: server CPU µs per routed message by subscribed receivers "
                    f"(flat = CPU per second linear in the message rate, whatever the subscriptions): {steps}.", ""]
    return out


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def git_rev():
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


def pyplot():
    """matplotlib's pyplot drawing to files, or None (with a note) when it is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        log("matplotlib is missing: no plots (scripts/bench installs it in the target folder's bench-venv)")
        return None


def plot(results, outdir):
    """PNG plots; returns [(title, path)]. Needs matplotlib (scripts/bench makes a venv)."""
    plt = pyplot()
    if plt is None:
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    servers = server_names(results)
    palette = ["tab:blue", "tab:green", "tab:purple", "tab:brown"]
    colours = {s: palette[i % len(palette)] for i, s in enumerate(x for x in servers if x != "astrond")}
    colours["astrond"] = "tab:orange"

    def series(workload, server, xkey, ykey):
        xs = sorted({r["params"][xkey] for r in results if r["workload"] == workload})
        pts = []
        for x in xs:
            if workload == "clients":
                held = med(figures(results, workload, server, "held", {xkey: x}))[0]
                if held is not None and held < x:
                    continue  # it lost clients: its figures are not comparable (see the table)
            m, lo, hi = med(figures(results, workload, server, ykey, {xkey: x}))
            if m is not None:
                pts.append((x, m, lo, hi))
        return pts

    def save(fig, name, title):
        path = outdir / name
        fig.tight_layout()
        fig.savefig(path, dpi=90)
        plt.close(fig)
        made.append((title, path))

    def errbar(ax, pts, label, colour, style="-o"):
        if not pts:
            return
        xs, ms = [p[0] for p in pts], [p[1] for p in pts]
        lo = [p[1] - p[2] for p in pts]
        hi = [p[3] - p[1] for p in pts]
        ax.errorbar(xs, ms, yerr=[lo, hi], fmt=style, color=colour, label=label, capsize=3)

    # MessageDirector: throughput and CPU per message against subscriptions.
    if any(r["workload"] == "md-scaling" for r in results):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for s in servers:
            errbar(a1, series("md-scaling", s, "receivers", "routed_per_s"), s, colours[s])
            errbar(a2, series("md-scaling", s, "receivers", "cpu_us_per_msg"), s, colours[s])
        a1.set(xscale="log", xlabel="receivers (subscribed channels)", ylabel="routed messages/s",
               title="MD flood throughput")
        a2.set(xscale="log", xlabel="receivers (subscribed channels)", ylabel="server CPU µs per message",
               title="MD cost per message (flat = linear scaling)")
        for a in (a1, a2):
            a.grid(True, alpha=0.3)
            a.legend()
        save(fig, "bench-md.png", "MessageDirector throughput and CPU per message against subscriptions")

    # Round trips: percentiles.
    if any(r["workload"] == "md-rtt" for r in results):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        keys = ["p50_us", "p90_us", "p99_us", "p999_us"]
        width = 0.8 / max(1, len(servers))
        for i, s in enumerate(servers):
            ms = [med(figures(results, "md-rtt", s, k))[0] or 0 for k in keys]
            ax.bar([j + i * width for j in range(len(keys))], ms, width, label=s, color=colours[s])
        ax.set_xticks([j + width * (len(servers) - 1) / 2 for j in range(len(keys))])
        ax.set_xticklabels(["p50", "p90", "p99", "p99.9"])
        ax.set(ylabel="µs", title="MD round trip, unloaded")
        ax.legend()
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "bench-rtt.png", "MessageDirector round-trip percentiles")

    # Clients: latency percentiles, and CPU against the number of clients.
    if any(r["workload"] == "clients" for r in results):
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
        for s in servers:
            errbar(a1, series("clients", s, "clients", "p50_ms"), f"{s} p50", colours[s], "--o")
            errbar(a1, series("clients", s, "clients", "p99_ms"), f"{s} p99", colours[s], "-s")
            errbar(a2, series("clients", s, "clients", "server_cpu_pct"), f"{s} server CPU", colours[s])
        otpd_cpu = series("clients", "otpd", "clients", "server_cpu_pct")
        if otpd_cpu:
            x0, y0 = otpd_cpu[0][0], otpd_cpu[0][1]
            xs = [p[0] for p in otpd_cpu]
            a2.plot(xs, [y0 * x / x0 for x in xs], ":", color="grey", label="linear from the first point")
        a1.axhline(50, color="red", lw=0.8, ls=":", label="target p99 50 ms")
        a1.set(yscale="log", xlabel="clients (zones of 50, 1 Hz each)", ylabel="delivery latency, ms",
               title="ClientAgent delivery latency\n(runs where a server lost clients left out)")
        a2.set(xlabel="clients (zones of 50, 1 Hz each)", ylabel="% of one core",
               title="ClientAgent CPU against load")
        for a in (a1, a2):
            a.grid(True, alpha=0.3)
            a.legend(fontsize=8)
        save(fig, "bench-clients.png", "ClientAgent latency and CPU against clients")
    return made


# The figures the history keeps: (workload, figure) and, for the client sweep, p99 and held.
HISTORY_KEYS = (("md-flood", "routed_per_s"), ("md-fanout", "deliveries_per_s"), ("md-rtt", "p99_us"),
                ("ss", "creates_per_s"), ("ss", "updates_per_s"), ("ss", "bytes_per_object"))


def history_entry(results, meta, label):
    """This run's medians of the history's figures, per server."""
    medians = {}
    for s in server_names(results):
        m = {}
        for workload, key in HISTORY_KEYS:
            v = med(figures(results, workload, s, key))[0]
            if v is not None:
                m[f"{workload}.{key}"] = v
        for n in sorted({r["params"]["clients"] for r in results if r["workload"] == "clients"}):
            for key in ("held", "p99_ms"):
                v = med(figures(results, "clients", s, key, {"clients": n}))[0]
                if v is not None:
                    m[f"clients.{n}.{key}"] = v
        medians[s] = m
    return {"date": meta.get("date"), "rev": meta.get("rev"), "label": label, "medians": medians}


def add_history(entry):
    """Adds (or replaces, for the same revision and label) an entry of docs/bench-history.json."""
    history = json.loads(HISTORY.read_text()) if HISTORY.exists() else []
    history = [h for h in history if (h.get("rev"), h.get("label")) != (entry["rev"], entry["label"])]
    history.append(entry)
    HISTORY.write_text(json.dumps(history, indent=1) + "\n")
    return history


def plot_history(history, outdir):
    """docs/img/bench-history.png: client p99 against clients for every entry (where otpd held
    every client), astrond's of the newest entry, and otpd's rate over astrond's per entry."""
    plt = pyplot() if history else None
    if plt is None:
        return None
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.5))
    colours = ["tab:grey", "tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:cyan"]

    def sweep(m):
        sizes = sorted({int(k.split(".")[1]) for k in m if k.startswith("clients.")})
        return [(n, m[f"clients.{n}.p99_ms"]) for n in sizes
                if f"clients.{n}.p99_ms" in m and m.get(f"clients.{n}.held", 0) >= n]

    for i, h in enumerate(history):
        pts = sweep(h["medians"].get("otpd", {}))
        if pts:
            a1.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=colours[i % len(colours)],
                    label=f"otpd {h['date']}: {h['label']}")
    pts = sweep(history[-1]["medians"].get("astrond", {}))
    if pts:
        a1.plot([p[0] for p in pts], [p[1] for p in pts], "--s", color="tab:orange",
                label=f"astrond {history[-1]['date']} (where it held every client)")
    first = history[0]["medians"].get("otpd", {})
    halves = [(n, first[f"clients.{n}.p99_ms"] / 2) for n in (5000, 10000) if f"clients.{n}.p99_ms" in first]
    if halves:
        a1.plot([p[0] for p in halves], [p[1] for p in halves], "rv", ms=9,
                label=f"half of {history[0]['date']} (issue 18's targets)")
    a1.set(xscale="log", yscale="log", xlabel="clients (zones of 50, 1 Hz each)",
           ylabel="delivery p99, ms", title="Client delivery p99, medians of each suite run")
    a1.set_xticks([1250, 2500, 5000, 10000], ["1,250", "2,500", "5,000", "10,000"])
    a1.tick_params(axis="x", which="minor", labelbottom=False)
    ratios = (("md-flood.routed_per_s", "MD flood"), ("md-fanout.deliveries_per_s", "MD fan-out"),
              ("ss.creates_per_s", "SS creates"), ("ss.updates_per_s", "SS updates"))
    width = 0.8 / len(history)
    for i, h in enumerate(history):
        o, a = h["medians"].get("otpd", {}), h["medians"].get("astrond", {})
        ys = [o[k] / a[k] if o.get(k) and a.get(k) else 0 for k, _ in ratios]
        a2.bar([j + i * width for j in range(len(ratios))], ys, width, color=colours[i % len(colours)],
               label=f"{h['date']} ({h['rev']})")
    a2.axhline(10, color="red", lw=0.8, ls=":", label="10× (issue 18's SS target)")
    a2.set_xticks([j + width * (len(history) - 1) / 2 for j in range(len(ratios))], [r[1] for r in ratios])
    a2.set(ylabel="otpd ÷ astrond, same run", title="otpd's rate over astrond's, each suite run")
    a1.grid(True, alpha=0.3)
    a1.legend(fontsize=7, loc="lower right")
    a2.grid(True, alpha=0.3)
    a2.legend(fontsize=7)
    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "bench-history.png"
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_doc(text):
    doc = ROOT / "docs/performance.md"
    current = doc.read_text() if doc.exists() else "# Performance\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        new = head + text + tail
    else:
        new = current.rstrip("\n") + "\n\n## Benchmark suite (`scripts/bench`)\n\n" + text + "\n"
    doc.write_text(new)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--astrond", help="an astrond binary to run the same workloads against")
    ap.add_argument("--runs", type=int, default=3, help="runs of each MD, SS and DB workload (default 3)")
    ap.add_argument("--client-runs", type=int, default=1, help="runs of each client workload (default 1)")
    ap.add_argument("--clients", default="1250,2500,5000,10000",
                    help="client counts of the client sweep (default 1250,2500,5000,10000)")
    ap.add_argument("--only", help="comma-separated subset of md,ss,db,clients")
    ap.add_argument("--otpd-cores", type=lambda v: [int(x) for x in v.split(",") if x],
                    default=[], help="also run the client sweep on otpd with these core counts (e.g. 1)")
    ap.add_argument("--quick", action="store_true", help="smaller workloads (a smoke test, not figures)")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/performance.md or docs/img")
    ap.add_argument("--from-results", help="only redo the report and plots from a results.json")
    ap.add_argument("--history-label",
                    help="add this run's medians to docs/bench-history.json under this label "
                         "(the before-and-after plot docs/img/bench-history.png draws every entry)")
    ap.add_argument("--results", default=str(TARGET / "bench/results.json"),
                    help="where every run's figures go (default bench/results.json in the "
                         "cargo target folder)")
    args = ap.parse_args()

    Path(args.results).resolve().parent.mkdir(parents=True, exist_ok=True)
    if args.from_results:
        saved = json.loads(Path(args.from_results).read_text())
        results, argv, meta = saved["results"], saved.get("argv", []), saved.get("meta", {})
    else:
        argv = sys.argv[1:]
        meta = {"date": time.strftime("%Y-%m-%d", time.gmtime()), "cpus": os.cpu_count(),
                "cpu": cpu_model(), "rev": git_rev()}
        with tempfile.TemporaryDirectory() as tmp:
            results = suite(args, tmp)
        Path(args.results).write_text(json.dumps({"argv": argv, "meta": meta, "results": results}, indent=1))
        log(f"raw figures: {args.results}")
    failed = [r for r in results if not r["figures"].get("ok")]
    plots = [] if args.no_doc else plot(results, ROOT / "docs/img")
    text = report(results, args, plots, argv, meta)
    print(text)
    if not args.no_doc:
        if args.history_label and not args.quick:
            add_history(history_entry(results, meta, args.history_label))
        if HISTORY.exists() and plot_history(json.loads(HISTORY.read_text()), ROOT / "docs/img"):
            log("before-and-after plot: docs/img/bench-history.png")
        write_doc(text)
        log("tables written to docs/performance.md" + (", plots to docs/img/" if plots else ""))
    if failed:
        log(f"{len(failed)} run(s) failed: " + ", ".join(f"{r['workload']}/{r['server']}#{r['run']}" for r in failed))
    # A failed otpd run fails the suite; astrond's failures are part of its figures.
    return 1 if any(r["server"] == "otpd" for r in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
