#!/usr/bin/env python3
"""Helpers of scripts/soak (standard library only).

  soak.py ai --md HOST:PORT --dc FILE --otpd BIN --seconds S --out DIR
      An AI on the StateServer host: keeps a population of DistributedTrolley objects under the
      district, creating, moving between zones and deleting them, and writes DistributedToon
      records to the database (DBSERVER_CREATE_OBJECT, acknowledged with a doid). At the end it
      reads every acknowledged write back and deletes its objects. Writes DIR/ai.json; exit 1 if
      an acknowledged write is lost or a request went unanswered.
  soak.py sample --hosts NAME=PID=METRICS_ADDR,... --every S --csv FILE --stop FILE
      Every S seconds until FILE exists: per host RSS, open descriptors and /metrics figures,
      one CSV row per host.
  soak.py check --csv FILE [--plot SVG]
      Fails (exit 1, naming the series) if a series grows without bound: the max of its last
      third above the max of its first third by more than 25 % plus a floor per series.
"""
import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import time
import urllib.request

CONTROL_ADD_CHANNEL = 9000
SS_CREATE = 2000
SS_DELETE_RAM = 2032
SS_SET_LOCATION = 2040
DB_CREATE = 3000
DB_CREATE_RESP = 3001
DB_GET_FIELD = 3010
DB_GET_FIELD_RESP = 3011

SS_CONTROL = 100100
DB_CONTROL = 4003
AI = 7000
DISTRICT = 200_000_000
FIRST_DOID = 60_000_000


def frame(body):
    return struct.pack("<H", len(body)) + body


def dg(recipients, sender, msgtype, payload=b""):
    b = struct.pack("<B", len(recipients))
    for r in recipients:
        b += struct.pack("<Q", r)
    return frame(b + struct.pack("<QH", sender, msgtype) + payload)


def control(msgtype, *args):
    return frame(struct.pack("<BQH", 1, 1, msgtype) + b"".join(struct.pack("<Q", a) for a in args))


def string(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


class Conn:
    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def recv(self, timeout):
        """The next datagram as (sender, msgtype, payload), or None after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if len(self.buf) >= 2:
                (n,) = struct.unpack_from("<H", self.buf)
                if len(self.buf) >= 2 + n:
                    body, self.buf = self.buf[2 : 2 + n], self.buf[2 + n :]
                    at = 1 + 8 * body[0]
                    sender, msgtype = struct.unpack_from("<QH", body, at)
                    return sender, msgtype, body[at + 10 :]
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.s.settimeout(left)
            try:
                chunk = self.s.recv(65536)
            except socket.timeout:
                return None
            if not chunk:
                raise ConnectionError("the MD closed the AI's connection")
            self.buf += chunk


def dc_ids(otpd, dc):
    """Class and field ids as otpd numbers them (`otpd dc fields`)."""
    out = subprocess.run([otpd, "dc", "fields", dc], capture_output=True, text=True, check=True).stdout
    classes, fields, current = {}, {}, None
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0] == "dclass":
            current = parts[2]
            classes[current] = int(parts[1])
        elif len(parts) >= 2 and current:
            fields[(current, parts[1])] = int(parts[0])
    return classes, fields


def ai(args):
    classes, fields = dc_ids(args.otpd, args.dc)
    trolley, toon = classes["DistributedTrolley"], classes["DistributedToon"]
    f_money = fields[("DistributedToon", "setMoney")]
    f_name = fields[("DistributedToon", "setName")]
    f_dna = fields[("DistributedToon", "setDNAString")]
    c = Conn(args.md)
    c.send(control(CONTROL_ADD_CHANNEL, AI))
    time.sleep(0.3)
    rng = random.Random(20)
    live = {}  # doid -> zone
    next_doid = FIRST_DOID
    made = deleted = moved = 0
    pending = {}  # context -> (money, sent at)
    acked = []  # (doid, context, money)
    failed = unanswered = 0
    ctx = 0
    end = time.monotonic() + args.seconds
    last = time.monotonic()

    def handle(m):
        nonlocal failed
        if m is None:
            return
        _, t, p = m
        if t == DB_CREATE_RESP:
            cx, doid = struct.unpack_from("<II", p)
            entry = pending.pop(cx, None)
            if entry is None:
                return
            if doid == 0:
                failed += 1
            else:
                acked.append((doid, cx, entry[0]))

    while time.monotonic() < end:
        # About 10 steps a second: objects made, moved and deleted; a database write.
        for _ in range(3):
            op = rng.random()
            if len(live) < 40 and (op < 0.45 or not live):
                doid = next_doid
                next_doid += 1
                zone = rng.choice((2000, 2100, 2200, 2300))
                c.send(dg([SS_CONTROL], AI, SS_CREATE,
                          struct.pack("<IIIH", doid, DISTRICT, zone, trolley) + string("off") + struct.pack("<h", 0)))
                live[doid] = zone
                made += 1
            elif op < 0.75:
                doid = rng.choice(list(live))
                zone = rng.choice((2000, 2100, 2200, 2300))
                c.send(dg([doid], AI, SS_SET_LOCATION, struct.pack("<II", DISTRICT, zone)))
                live[doid] = zone
                moved += 1
            else:
                doid = rng.choice(list(live))
                c.send(dg([doid], AI, SS_DELETE_RAM, struct.pack("<I", doid)))
                del live[doid]
                deleted += 1
        ctx += 1
        money = ctx % 30000
        payload = struct.pack("<IHH", ctx, toon, 3)
        payload += struct.pack("<H", f_name) + string(f"soak {ctx}")
        payload += struct.pack("<H", f_dna) + string("t\x00\x01\x00\x01\x00\x01\x00\x01\x00\x01\x00\x01\x00\x01")
        payload += struct.pack("<Hh", f_money, money)
        c.send(dg([DB_CONTROL], AI, DB_CREATE, payload))
        pending[ctx] = (money, time.monotonic())
        step_end = time.monotonic() + 0.1
        while time.monotonic() < step_end:
            handle(c.recv(max(0.0, step_end - time.monotonic())))
        now = time.monotonic()
        if now - last >= 10:
            last = now
            print(f"soak ai: {made} objects made, {moved} moves, {deleted} deleted, {len(live)} live; "
                  f"{len(acked)} writes acknowledged, {failed} failed, {len(pending)} waiting", flush=True)
    # Answers still on their way.
    deadline = time.monotonic() + 10
    while pending and time.monotonic() < deadline:
        handle(c.recv(0.5))
    unanswered = len(pending)
    # Every acknowledged write is read back.
    lost = []
    for i, (doid, cx, money) in enumerate(acked):
        c.send(dg([DB_CONTROL], AI, DB_GET_FIELD, struct.pack("<IIH", i, doid, f_money)))
        want = struct.pack("<IBHh", i, 1, f_money, money)
        while True:
            m = c.recv(10)
            if m is None:
                lost.append((doid, cx, "no answer"))
                break
            if m[1] == DB_GET_FIELD_RESP and struct.unpack_from("<I", m[2])[0] == i:
                if m[2] != want:
                    lost.append((doid, cx, m[2].hex()))
                break
    for doid in list(live):
        c.send(dg([doid], AI, SS_DELETE_RAM, struct.pack("<I", doid)))
        deleted += 1
    time.sleep(0.5)
    report = dict(objects_made=made, objects_moved=moved, objects_deleted=deleted,
                  writes_sent=ctx, writes_acknowledged=len(acked), writes_failed=failed,
                  writes_unanswered=unanswered, writes_lost=len(lost), lost=lost[:10])
    with open(os.path.join(args.out, "ai.json"), "w") as f:
        json.dump(report, f)
    print("soak ai:", json.dumps(report), flush=True)
    return 1 if lost or unanswered else 0


SERIES = {
    # name: (floor: growth always tolerated on top of 25 %)
    "rss_kb": 16 * 1024,
    "fds": 32,
    "stalled_batches": 2000,
    "subscribed_channels": 256,
    "objects": 256,
    "participants": 4,
    "clients": 0,  # driven by the churn: not a leak signal, sampled for the plot
}


def scrape(addr):
    try:
        with urllib.request.urlopen(f"http://{addr}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return None
    sums = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        key, value = line.rsplit(" ", 1)
        name = key.split("{", 1)[0]
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "otpd_role" and 'metric="objects"' in key:
            sums["objects"] = sums.get("objects", 0) + v
        elif name in ("otpd_stalled_batches", "otpd_subscribed_channels", "otpd_participants",
                      "otpd_clients", "otpd_upstream_connected"):
            short = name[len("otpd_"):]
            sums[short] = sums.get(short, 0) + v
    return sums


def sample(args):
    hosts = [h.split("=") for h in args.hosts.split(",")]
    t0 = time.monotonic()
    with open(args.csv, "w") as f:
        f.write("t_s,host,rss_kb,fds,stalled_batches,subscribed_channels,objects,participants,clients,upstream_connected\n")
        while not os.path.exists(args.stop):
            t = time.monotonic() - t0
            for name, pid, addr in hosts:
                try:
                    with open(f"/proc/{pid}/status") as s:
                        rss = next(int(l.split()[1]) for l in s if l.startswith("VmRSS:"))
                    fds = len(os.listdir(f"/proc/{pid}/fd"))
                except (OSError, StopIteration):
                    print(f"soak: {name} (pid {pid}) is gone", file=sys.stderr)
                    return 1
                m = scrape(addr) or {}
                f.write(f"{t:.1f},{name},{rss},{fds},{m.get('stalled_batches', '')},"
                        f"{m.get('subscribed_channels', '')},{m.get('objects', '')},"
                        f"{m.get('participants', '')},{m.get('clients', '')},"
                        f"{m.get('upstream_connected', '')}\n")
            f.flush()
            end = t0 + t + args.every
            while time.monotonic() < end and not os.path.exists(args.stop):
                time.sleep(0.2)
    return 0


def read_csv(path):
    rows = []
    with open(path) as f:
        head = f.readline().strip().split(",")
        for line in f:
            rows.append(dict(zip(head, line.strip().split(","))))
    return rows


def check(args):
    rows = read_csv(args.csv)
    hosts = sorted({r["host"] for r in rows})
    bad = []
    for h in hosts:
        hr = [r for r in rows if r["host"] == h]
        if len(hr) < 6:
            bad.append(f"{h}: only {len(hr)} samples")
            continue
        third = len(hr) // 3
        for s, floor in SERIES.items():
            if s == "clients":
                continue
            vals = [float(r[s]) for r in hr if r.get(s, "") != ""]
            if len(vals) < 6:
                continue
            first, last = max(vals[:third]), max(vals[-third:])
            verdict = "ok"
            if last > first * 1.25 + floor:
                verdict = "GROWS"
                bad.append(f"{h} {s}: max {first:g} in the first third, {last:g} in the last")
            print(f"  {h:8} {s:20} first third max {first:>10g}  last third max {last:>10g}  {verdict}")
        up = [r.get("upstream_connected", "") for r in hr]
        if h != "root" and any(u == "0" for u in up):
            bad.append(f"{h} upstream_connected: 0 in {sum(u == '0' for u in up)} samples")
    if args.plot:
        plot(rows, hosts, args.plot)
    if bad:
        print("soak: FAILED: " + "; ".join(bad), file=sys.stderr)
        return 1
    print("soak: no series grows")
    return 0


def plot(rows, hosts, path):
    """A small SVG: one panel per series, one line per host (no dependencies)."""
    series = ["rss_kb", "fds", "subscribed_channels", "objects", "participants", "clients"]
    colours = {"root": "#1f77b4", "ss-host": "#d62728", "ca-host": "#2ca02c"}
    w, h, pad = 360, 170, 40
    cols = 3
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{cols * w}" height="{((len(series) + cols - 1) // cols) * h + 30}" font-family="sans-serif" font-size="11">',
           '<rect width="100%" height="100%" fill="white"/>']
    tmax = max(float(r["t_s"]) for r in rows) or 1
    for i, s in enumerate(series):
        ox, oy = (i % cols) * w, (i // cols) * h + 30
        vals = [float(r[s]) for r in rows if r.get(s, "") != ""]
        vmax = max(vals) if vals else 1
        vmax = vmax or 1
        out.append(f'<text x="{ox + pad}" y="{oy + 12}" font-weight="bold">{s} (max {vmax:g})</text>')
        out.append(f'<rect x="{ox + pad}" y="{oy + 18}" width="{w - pad - 10}" height="{h - 48}" fill="none" stroke="#999"/>')
        for host in hosts:
            pts = []
            for r in rows:
                if r["host"] != host or r.get(s, "") == "":
                    continue
                x = ox + pad + (w - pad - 10) * float(r["t_s"]) / tmax
                y = oy + 18 + (h - 48) * (1 - float(r[s]) / vmax)
                pts.append(f"{x:.1f},{y:.1f}")
            if pts:
                out.append(f'<polyline fill="none" stroke="{colours.get(host, "#000")}" stroke-width="1.2" points="{" ".join(pts)}"/>')
        out.append(f'<text x="{ox + pad}" y="{oy + h - 18}">0 s</text><text x="{ox + w - 50}" y="{oy + h - 18}">{tmax:.0f} s</text>')
    x = 10
    for host in hosts:
        out.append(f'<text x="{x}" y="16" fill="{colours.get(host, "#000")}" font-weight="bold">{host}</text>')
        x += 80
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("ai")
    a.add_argument("--md", required=True)
    a.add_argument("--dc", required=True)
    a.add_argument("--otpd", required=True)
    a.add_argument("--seconds", type=float, required=True)
    a.add_argument("--out", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--hosts", required=True)
    s.add_argument("--every", type=float, default=5)
    s.add_argument("--csv", required=True)
    s.add_argument("--stop", required=True)
    c = sub.add_parser("check")
    c.add_argument("--csv", required=True)
    c.add_argument("--plot")
    args = p.parse_args()
    return {"ai": ai, "sample": sample, "check": check}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
