#!/usr/bin/env python3
"""rusd against etcd on this machine, side by side, with the same client (`rusd bench`).

Each round starts etcd (Debian's etcd-server, 3.4.23) and rusd with fresh data directories in
the same file system and default durability (both fsync their log before acknowledging), runs
every workload against one then the other (the order alternates per round), and records
throughput, latency percentiles, CPU seconds of server and client, and the server's peak RSS.
A last phase loads 1M keys into each and measures peak RSS, on-disk size, a count-with-limit
range over the whole keyspace, and the time from start to the first answered read after a
restart. The report is the median over rounds, with rusd/etcd ratios, as markdown.

    python3 bench/compare.py                  # 3 rounds, full sizes (about 25 minutes)
    python3 bench/compare.py --rounds 1 --quick   # a smoke run (about 2 minutes)

Only 127.0.0.1 is used; every load is bounded by --total and --duration.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its waited-for children."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    # fields[0] is state (field 3): utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / ticks


def peak_rss_mib(pid):
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


# Extra `rusd serve` flags (`--rusd-arg`), e.g. `--worker-threads=1`.
RUSD_ARGS = []


class Server:
    """One etcd or rusd process on random 127.0.0.1 ports."""

    def __init__(self, kind, binary, data_dir):
        self.kind, self.binary, self.data_dir = kind, binary, data_dir
        self.client_port, self.peer_port = free_port(), free_port()
        self.proc = None

    @property
    def endpoint(self):
        return f"127.0.0.1:{self.client_port}"

    @property
    def endpoints(self):
        """The client endpoints `bench` sends to (one here; a cluster has several)."""
        return [self.endpoint]

    @property
    def pids(self):
        """The server processes whose CPU `bench` counts."""
        return [self.proc.pid]

    def start(self):
        url = f"http://{self.endpoint}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            "--name", "bench",
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", url,
            "--advertise-client-urls", url,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"bench={peer}",
            # 1M keys of 256 bytes exceed neither, but the default quota is 2 GiB for both.
            "--quota-backend-bytes", str(8 * 1024**3),
        ]
        if self.kind == "rusd":
            args += RUSD_ARGS
        log = open(Path(self.data_dir).parent / f"{self.kind}.log", "ab")
        started = time.monotonic()
        self.proc = subprocess.Popen(args, stdout=log, stderr=log)
        return started

    def wait_first_read(self, started, timeout=120):
        """Seconds from `started` until a linearizable range answers (HTTP gateway)."""
        req = json.dumps({"key": "Zm9v"}).encode()  # "foo"
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} exited with {self.proc.returncode}")
            try:
                r = urllib.request.urlopen(
                    urllib.request.Request(
                        f"http://{self.endpoint}/v3/kv/range", data=req, method="POST"
                    ),
                    timeout=1,
                )
                if r.status == 200:
                    return time.monotonic() - started
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"{self.kind} did not answer within {timeout} s")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench(rusd, server, args, timeout):
    """Runs `rusd bench --json` against `server` (anything with `endpoints` and `pids`, e.g. a
    `Server`); returns its result with CPU seconds (the server's: summed over its `pids`)."""
    cmd = [rusd, "bench", "--endpoints", ",".join(server.endpoints), "--json"] + args
    s0 = sum(cpu_seconds(pid) for pid in server.pids)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # The client's CPU: read from /proc just before it is reaped.
    client_cpu = 0.0
    deadline = t0 + timeout
    while p.poll() is None and time.monotonic() < deadline:
        client_cpu = max(client_cpu, cpu_seconds(p.pid))
        time.sleep(0.05)
    if p.poll() is None:
        p.kill()
    out, err = p.communicate()
    wall = time.monotonic() - t0
    try:
        res = json.loads(out)
    except json.JSONDecodeError:
        raise RuntimeError(f"bench {' '.join(args)} failed: {err.decode()[-2000:]}")
    res["server_cpu_s"] = sum(cpu_seconds(pid) for pid in server.pids) - s0
    res["client_cpu_s"] = client_cpu
    res["wall_s"] = wall
    return res


def workloads(quick):
    n = 2000 if quick else 30000
    n1 = 300 if quick else 2000
    watch_puts = 200 if quick else 2000
    many = ["--conns", "8", "--clients", "64"]
    one = ["--conns", "1", "--clients", "1"]
    put = ["--key-size", "16", "--val-size", "256", "--key-space-size", "100000"]
    return [
        ("put, 1 client", one + ["--total", str(n1), "put"] + put),
        ("put, 64 clients, 8 conns", many + ["--total", str(n), "put"] + put),
        ("txn-put, 64 clients, 8 conns", many + ["--total", str(n), "txn-put"] + put),
        ("range 1 key linearizable, 1 client",
         one + ["--total", str(n1), "range", "foo", "--consistency", "l"]),
        ("range 1 key linearizable, 64 clients",
         many + ["--total", str(n), "range", "foo", "--consistency", "l"]),
        ("range 1 key serializable, 64 clients",
         many + ["--total", str(n), "range", "foo", "--consistency", "s"]),
        ("range 100 keys, 64 clients",
         many + ["--total", str(n // 2), "range", "r/", "r0", "--consistency", "l"]),
        ("watch, 1000 watchers (10 streams x 100)",
         ["--conns", "10", "--clients", "10", "--total", str(watch_puts), "watch",
          "--streams", "10", "--watch-per-stream", "100", "--put-total", str(watch_puts),
          "--put-rate", "200", "--key-size", "16", "--val-size", "256"]),
    ]


def seed(rusd, server):
    """The keys the range workloads read: `foo` and r/000..r/099."""
    bench(rusd, server, ["--total", "1", "put", "--prefix", "foo", "--key-size", "3",
                         "--key-space-size", "1", "--val-size", "256"], 60)
    bench(rusd, server, ["--total", "100", "put", "--prefix", "r/", "--sequential-keys",
                         "--key-space-size", "100", "--key-size", "5", "--val-size", "256"], 60)


def run_round(rusd_bin, etcd_bin, order, quick, results, tmp):
    for kind in order:
        binary = rusd_bin if kind == "rusd" else etcd_bin
        data = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp)) / "data"
        srv = Server(kind, binary, data)
        started = srv.start()
        try:
            srv.wait_first_read(started)
            seed(rusd_bin, srv)
            for name, args in workloads(quick):
                r = bench(rusd_bin, srv, args + ["--duration", "120s"], 300)
                results.setdefault(name, {}).setdefault(kind, []).append(r)
                print(f"  {kind:4} {name}: {r.get('rps', 0):.0f}/s", file=sys.stderr)
            results.setdefault("peak RSS, workloads (MiB)", {}).setdefault(kind, []).append(
                peak_rss_mib(srv.proc.pid))
        finally:
            srv.stop()
            shutil.rmtree(data.parent, ignore_errors=True)


def run_load(rusd_bin, etcd_bin, order, quick, results, tmp):
    keys = 20000 if quick else 1_000_000
    for kind in order:
        binary = rusd_bin if kind == "rusd" else etcd_bin
        data = Path(tempfile.mkdtemp(prefix=f"{kind}-", dir=tmp)) / "data"
        srv = Server(kind, binary, data)
        started = srv.start()
        try:
            srv.wait_first_read(started)
            load = bench(rusd_bin, srv, ["--conns", "8", "--clients", "64", "--total", str(keys),
                                         "put", "--sequential-keys", "--key-space-size",
                                         str(keys), "--key-size", "16", "--val-size", "256"],
                         3600)
            results.setdefault(f"load {keys} keys, 64 clients", {}).setdefault(kind, []).append(load)
            # etcd walks the whole range to count it: 100-key pages (with count) over every loaded key
            # (sequential keys are zero-padded decimals, so ["0", ":") holds them all).
            r = bench(rusd_bin, srv, ["--conns", "8", "--clients", "8", "--total", "200",
                                      "--duration", "60s", "range", "0", ":", "--limit", "100"],
                      300)
            results.setdefault(f"range limit 100 with count over {keys} keys, 8 clients",
                               {}).setdefault(kind, []).append(r)
            results.setdefault(f"peak RSS, {keys} keys (MiB)", {}).setdefault(kind, []).append(
                peak_rss_mib(srv.proc.pid))
            srv.stop()
            results.setdefault(f"on-disk size, {keys} keys (MiB)", {}).setdefault(
                kind, []).append(dir_bytes(data) / 1024**2)
            started = srv.start()
            results.setdefault(f"restart to first read, {keys} keys (s)", {}).setdefault(
                kind, []).append(srv.wait_first_read(started, timeout=600))
            results.setdefault(f"peak RSS after restart + 1 read, {keys} keys (MiB)",
                               {}).setdefault(kind, []).append(peak_rss_mib(srv.proc.pid))
        finally:
            srv.stop()
            shutil.rmtree(data.parent, ignore_errors=True)


def machine_description(etcd):
    return (f"{os.cpu_count()} CPUs, "
            f"{subprocess.run(['uname', '-sr'], capture_output=True, text=True).stdout.strip()}, "
            f"etcd {subprocess.run([etcd, '--version'], capture_output=True, text=True).stdout.split()[2]}, "
            f"load at start {os.getloadavg()[0]:.1f}")


def med(xs):
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def fmt(x, digits=0):
    if x != x:
        return "-"
    return f"{x:,.{digits}f}"


def report(results, args, machine):
    lines = [
        "Latencies in ms; for watch the rate is events/s and the latency is from a put being "
        "sent to its event arriving on each watcher.",
        "",
        f"Rounds: {args.rounds} ({'quick' if args.quick else 'full'} sizes); medians over "
        "rounds; etcd and rusd alternate first. Client: `rusd bench` for both.",
        "",
        f"rusd's extra flags: {' '.join(args.rusd_arg) or 'none'}.",
        "",
        f"Machine: {machine}",
        "",
        "| workload | etcd req/s | rusd req/s | ratio | etcd p50 / p99 ms | rusd p50 / p99 ms "
        "| server CPU s etcd / rusd | client CPU s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    scalar = []
    for name, by in results.items():
        e, r = by.get("etcd", []), by.get("rusd", [])
        if e and isinstance(e[0], dict):
            def m(rs, *path):
                vals = []
                for x in rs:
                    for p in path:
                        x = x.get(p, float("nan")) if isinstance(x, dict) else float("nan")
                    vals.append(x)
                return med(vals)
            # For watch the headline latency is the event latency (put sent -> event received
            # on each watcher) and the rate is events per second.
            pe = (m(e, "latency_us", "p50"), m(e, "latency_us", "p99"))
            pr = (m(r, "latency_us", "p50"), m(r, "latency_us", "p99"))
            er, rr = m(e, "rps"), m(r, "rps")
            errs = sum(sum(x.get("errors", {}).values()) for x in e + r)
            lines.append(
                f"| {name}{' (errors: %d)' % errs if errs else ''} | {fmt(er)} | {fmt(rr)} | "
                f"{fmt(rr / er if er else float('nan'), 2)}x | "
                f"{fmt(pe[0] / 1000, 2)} / {fmt(pe[1] / 1000, 2)} | "
                f"{fmt(pr[0] / 1000, 2)} / {fmt(pr[1] / 1000, 2)} | "
                f"{fmt(m(e, 'server_cpu_s'), 1)} / {fmt(m(r, 'server_cpu_s'), 1)} | "
                f"{fmt(m(e + r, 'client_cpu_s'), 1)} |")
        else:
            scalar.append((name, med(e), med(r)))
    lines += ["", "| measure | etcd | rusd | ratio rusd/etcd |", "|---|---|---|---|"]
    for name, e, r in scalar:
        lines.append(f"| {name} | {fmt(e, 2)} | {fmt(r, 2)} | {fmt(r / e if e else float('nan'), 2)}x |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd")
    ap.add_argument("--rusd", default=str(ROOT / "target/release/rusd"))
    ap.add_argument("--no-load", action="store_true", help="skip the 1M-key phase")
    ap.add_argument("--out", default=str(ROOT / "target/bench/compare.md"))
    ap.add_argument("--tmp", default=None, help="where data directories go (default: /tmp)")
    ap.add_argument("--rusd-arg", action="append", default=[],
                    help="an extra flag for `rusd serve` (repeatable), e.g. --rusd-arg=--worker-threads=1")
    args = ap.parse_args()
    RUSD_ARGS.extend(args.rusd_arg)
    if not Path(args.rusd).exists() or args.rusd == str(ROOT / "target/release/rusd"):
        subprocess.run(["cargo", "build", "--release", "-p", "rusd"], cwd=ROOT, check=True)
    if not Path(args.etcd).exists():
        sys.exit(f"no etcd at {args.etcd}: apt-get install -y etcd-server")
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="rusd-compare-"))
    tmp.mkdir(parents=True, exist_ok=True)
    machine = machine_description(args.etcd)
    results = {}
    try:
        for i in range(args.rounds):
            order = ["etcd", "rusd"] if i % 2 == 0 else ["rusd", "etcd"]
            print(f"round {i + 1}/{args.rounds} ({' then '.join(order)})", file=sys.stderr)
            run_round(args.rusd, args.etcd, order, args.quick, results, tmp)
            if not args.no_load:
                run_load(args.rusd, args.etcd, order, args.quick, results, tmp)
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    md = report(results, args, machine)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1))
    print(md)


if __name__ == "__main__":
    main()
