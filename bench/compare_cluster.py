#!/usr/bin/env python3
"""Three-member rusd and etcd clusters on this machine, side by side, with the same client.

Each round starts a 3-member etcd cluster (Debian's etcd-server, 3.4.23) and a 3-member rusd
cluster, one kind at a time (the order alternates per round), every member on random
127.0.0.1 ports with a fresh data directory in the same file system and default durability and
timing (heartbeat 100 ms, election 1 s for both). Once every member answers and they agree on a
leader, `rusd bench --endpoints <the three client endpoints> --json` runs each workload. The
endpoints are passed followers first and the leader last, so a single-connection load goes to a
follower (as two clients in three would) and 8 connections spread 3/3/2 with 2 on the leader;
one extra single-client put goes to the leader alone, to show the cost of forwarding.
Recorded per workload: throughput, latency percentiles, the servers' CPU seconds (summed over
the three members, and per member), the client's CPU seconds; per member the peak RSS.
The report is the median over rounds, with rusd/etcd ratios, as markdown (and the raw results
as JSON next to it).

    python3 bench/compare_cluster.py                     # 3 rounds, full sizes (~3 minutes)
    python3 bench/compare_cluster.py --quick --rounds 1  # a smoke run (~20 s)

Only 127.0.0.1 is used; every load is bounded by --total and --duration. Helpers (ports, CPU
and RSS from /proc, the bench runner, the seed keys, formatting) come from bench/compare.py.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

sys.dont_write_bytecode = True  # no bench/__pycache__ in the tree
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402
    ROOT,
    RUSD_ARGS,
    bench,
    cpu_seconds,
    fmt,
    free_port,
    machine_description,
    med,
    peak_rss_mib,
    seed,
)

MEMBERS = 3


def builds_running():
    """Names of other processes that distort measurements on a small machine: cargo, rustc,
    nextest (and the tests it runs), go (etcd's e2e suite). By /proc/*/comm, not command lines."""
    names = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        if (comm.startswith(("cargo", "rustc")) or "nextest" in comm or comm == "go"
                or comm.endswith(".test")):
            names.append(comm)
    return sorted(names)


def wait_quiet(limit):
    """Waits up to `limit` seconds (polling every 30 s) until `builds_running` is empty."""
    deadline = time.monotonic() + limit
    while True:
        busy = builds_running()
        if not busy or time.monotonic() >= deadline:
            return busy
        print(f"  waiting for a quiet machine: {', '.join(busy)}", file=sys.stderr)
        time.sleep(30)


def _post(endpoint, path, body, timeout=1):
    req = urllib.request.Request(f"http://{endpoint}{path}", data=json.dumps(body).encode(),
                                 method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"{}")


class Cluster:
    """Three etcd or rusd members on 127.0.0.1, random ports, one data directory each."""

    def __init__(self, kind, binary, tmp):
        self.kind, self.binary = kind, binary
        self.dir = Path(tempfile.mkdtemp(prefix=f"{kind}-cluster-", dir=tmp))
        self.names = [f"{kind}{i}" for i in range(MEMBERS)]
        self.client_ports = [free_port() for _ in range(MEMBERS)]
        self.peer_ports = [free_port() for _ in range(MEMBERS)]
        if len(set(self.client_ports + self.peer_ports)) != 2 * MEMBERS:
            raise RuntimeError("free_port returned a port twice; try again")
        self.procs = [None] * MEMBERS
        self.logs = [self.dir / f"{n}.log" for n in self.names]
        # The index of the leader (set by wait_ready); the endpoints list the leader last.
        self.leader = None

    @property
    def member_endpoints(self):
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    @property
    def endpoints(self):
        """Client endpoints for `bench`: followers first, the leader last."""
        eps = self.member_endpoints
        if self.leader is None:
            return eps
        return [e for i, e in enumerate(eps) if i != self.leader] + [eps[self.leader]]

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def start(self):
        peers = [f"http://127.0.0.1:{p}" for p in self.peer_ports]
        initial = ",".join(f"{n}={u}" for n, u in zip(self.names, peers))
        token = f"bench-{self.kind}-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        for i, name in enumerate(self.names):
            url = f"http://{self.member_endpoints[i]}"
            args = [
                self.binary,
                "--name", name,
                "--data-dir", str(self.dir / f"{name}.data"),
                "--listen-client-urls", url,
                "--advertise-client-urls", url,
                "--listen-peer-urls", peers[i],
                "--initial-advertise-peer-urls", peers[i],
                "--initial-cluster", initial,
                "--initial-cluster-token", token,
                "--initial-cluster-state", "new",
            ]
            if self.kind == "rusd":
                args += RUSD_ARGS
            log = open(self.logs[i], "ab")
            self.procs[i] = subprocess.Popen(args, stdout=log, stderr=log,
                                             stdin=subprocess.DEVNULL)
            log.close()
        return started

    def status(self, i):
        """(member id, leader id) from member i's Maintenance.Status (HTTP gateway)."""
        s = _post(self.member_endpoints[i], "/v3/maintenance/status", {})
        return int(s.get("header", {}).get("member_id", 0)), int(s.get("leader", 0))

    def current_leader(self):
        """The leader's index as the members see it, or None if they disagree or have none."""
        ids, leaders = [], set()
        for i in range(MEMBERS):
            try:
                member, leader = self.status(i)
            except (OSError, ValueError):
                return None
            ids.append(member)
            leaders.add(leader)
        if len(leaders) != 1 or 0 in leaders:
            return None
        (leader,) = leaders
        return ids.index(leader) if leader in ids else None

    def wait_ready(self, started, timeout=120):
        """Waits until every member answers a status and a linearizable range and all name the
        same leader; returns the seconds since `started`."""
        deadline = started + timeout
        while time.monotonic() < deadline:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    raise RuntimeError(f"{self.names[i]} exited with {p.returncode}:\n"
                                       + self.log_tail(i))
            leader = self.current_leader()
            if leader is not None:
                try:
                    for ep in self.member_endpoints:
                        _post(ep, "/v3/kv/range", {"key": "Zm9v"}, timeout=2)  # "foo"
                    self.leader = leader
                    return time.monotonic() - started
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError(f"{self.kind} cluster not ready within {timeout} s:\n"
                           + "\n".join(self.log_tail(i) for i in range(MEMBERS)))

    def log_tail(self, i, n=20):
        try:
            lines = self.logs[i].read_text(errors="replace").splitlines()[-n:]
        except OSError:
            lines = []
        return f"--- {self.logs[i]}\n" + "\n".join(lines)

    def stop(self):
        live = [p for p in self.procs if p and p.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        for p in live:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


class LeaderOnly:
    """A cluster seen through its leader's endpoint alone (CPU still counted on all members)."""

    def __init__(self, cluster):
        self.endpoints = [cluster.member_endpoints[cluster.leader]]
        self.pids = cluster.pids


def workloads(quick):
    n = 2000 if quick else 30000
    n1 = 300 if quick else 2000
    many = ["--conns", "8", "--clients", "64"]
    one = ["--conns", "1", "--clients", "1"]
    put = ["--key-size", "16", "--val-size", "256", "--key-space-size", "100000"]
    return [
        ("put, 64 clients, 8 conns", many + ["--total", str(n), "put"] + put),
        ("put, 1 client", one + ["--total", str(n1), "put"] + put),
        # The same to the leader only: the difference is the follower's forwarding.
        ("put, 1 client, leader only", ["--leader-only"] + one + ["--total", str(n1), "put"] + put),
        ("txn-put, 64 clients, 8 conns", many + ["--total", str(n), "txn-put"] + put),
        ("range 1 key linearizable, 64 clients",
         many + ["--total", str(n), "range", "foo", "--consistency", "l"]),
        ("range 1 key linearizable, 1 client",
         one + ["--total", str(n1), "range", "foo", "--consistency", "l"]),
        ("range 1 key serializable, 64 clients",
         many + ["--total", str(n), "range", "foo", "--consistency", "s"]),
    ]


def cluster_bench(rusd, cluster, args, timeout):
    """`compare.bench` against the cluster, plus per-member CPU and the leader before/after."""
    pids = cluster.pids
    before = [cpu_seconds(p) for p in pids]
    leader = cluster.leader
    target = cluster
    if args[0] == "--leader-only":
        args = args[1:]
        target = LeaderOnly(cluster)
    busy = set(builds_running())
    r = bench(rusd, target, args, timeout)
    busy |= set(builds_running())
    r["builds_running"] = sorted(busy)
    r["server_cpu_s_each"] = [cpu_seconds(p) - b for p, b in zip(pids, before)]
    r["leader"] = leader
    after = cluster.current_leader()
    r["leader_after"] = after
    if after != leader:
        print(f"  {cluster.kind}: leader changed from {leader} to {after}", file=sys.stderr)
        if after is not None:
            cluster.leader = after
    return r


def run_round(rusd_bin, etcd_bin, order, quick, results, tmp, duration, quiet_wait):
    for kind in order:
        binary = rusd_bin if kind == "rusd" else etcd_bin
        if quiet_wait:
            busy = wait_quiet(quiet_wait)
            if busy:
                print(f"  still busy after {quiet_wait} s: {', '.join(busy)}", file=sys.stderr)
        cluster = Cluster(kind, binary, tmp)
        ok = False
        try:
            started = cluster.start()
            ready = cluster.wait_ready(started)
            results.setdefault("start to ready: all 3 answer, one leader (s)", {}).setdefault(
                kind, []).append(ready)
            print(f"  {kind:4} ready in {ready:.2f} s, leader {cluster.names[cluster.leader]}",
                  file=sys.stderr)
            seed(rusd_bin, cluster)
            for name, args in workloads(quick):
                r = cluster_bench(rusd_bin, cluster, args + ["--duration", duration], 300)
                results.setdefault(name, {}).setdefault(kind, []).append(r)
                errs = r.get("errors", {})
                print(f"  {kind:4} {name}: {r.get('rps', 0):.0f}/s"
                      f"{' errors ' + json.dumps(errs) if errs else ''}"
                      f"{' (builds running)' if r['builds_running'] else ''}", file=sys.stderr)
            rss = [peak_rss_mib(p) for p in cluster.pids]
            lead = cluster.leader
            results.setdefault("peak RSS, leader (MiB)", {}).setdefault(kind, []).append(
                rss[lead])
            results.setdefault("peak RSS, largest follower (MiB)", {}).setdefault(
                kind, []).append(max(x for i, x in enumerate(rss) if i != lead))
            results.setdefault("peak RSS, sum of 3 members (MiB)", {}).setdefault(
                kind, []).append(sum(rss))
            results.setdefault("_rss_each", {}).setdefault(kind, []).append(
                {"leader": lead, "mib": rss})
            ok = True
        finally:
            cluster.stop()
            if not ok:
                print("\n".join(cluster.log_tail(i) for i in range(MEMBERS)), file=sys.stderr)
            shutil.rmtree(cluster.dir, ignore_errors=True)


def _m(rs, *path):
    vals = []
    for x in rs:
        for p in path:
            x = x.get(p, float("nan")) if isinstance(x, dict) else float("nan")
        vals.append(x)
    return med(vals)


def _ratio(r, e, digits=2):
    return f"{fmt(r / e if e else float('nan'), digits)}x"


def _errors(rs):
    total = {}
    for x in rs:
        for code, n in x.get("errors", {}).items():
            total[code] = total.get(code, 0) + n
    return total


def report(results, args, machine, command):
    workloads_, scalars = [], []
    for n, by in results.items():
        if n.startswith("_"):
            continue
        first = (by.get("etcd") or by.get("rusd") or [None])[0]
        (workloads_ if isinstance(first, dict) else scalars).append((n, by))
    lines = [
        f"Command: `{command}`",
        "",
        f"Rounds: {args.rounds} ({'quick' if args.quick else 'full'} sizes); medians over "
        "rounds; etcd and rusd alternate first. Client: `rusd bench` for both, endpoints "
        "followers first, leader last.",
        "",
        f"Machine: {machine}",
        "",
        "Latencies in ms. Server CPU is user+system seconds summed over the 3 members during "
        "the workload; client CPU is the bench client's.",
        "",
        "| workload | etcd req/s | rusd req/s | ratio | etcd p50 / p99 ms | rusd p50 / p99 ms "
        "| p99 ratio | server CPU s etcd / rusd | client CPU s etcd / rusd |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, by in workloads_:
        e, r = by.get("etcd", []), by.get("rusd", [])
        er, rr = _m(e, "rps"), _m(r, "rps")
        pe = (_m(e, "latency_us", "p50"), _m(e, "latency_us", "p99"))
        pr = (_m(r, "latency_us", "p50"), _m(r, "latency_us", "p99"))
        errs = sum(_errors(e + r).values())
        lines.append(
            f"| {name}{' (errors: %d)' % errs if errs else ''} | {fmt(er)} | {fmt(rr)} | "
            f"{_ratio(rr, er)} | {fmt(pe[0] / 1000, 2)} / {fmt(pe[1] / 1000, 2)} | "
            f"{fmt(pr[0] / 1000, 2)} / {fmt(pr[1] / 1000, 2)} | {_ratio(pr[1], pe[1])} | "
            f"{fmt(_m(e, 'server_cpu_s'), 1)} / {fmt(_m(r, 'server_cpu_s'), 1)} | "
            f"{fmt(_m(e, 'client_cpu_s'), 1)} / {fmt(_m(r, 'client_cpu_s'), 1)} |")

    lines += [
        "",
        "Where the CPU goes (medians over rounds): server CPU per successful request, the "
        "leader's share of the servers' CPU, and how busy the two cores were "
        "((server + client CPU s) / (the bench process's wall s x 2)).",
        "",
        "| workload | server CPU us/req etcd / rusd | leader share etcd / rusd "
        "| client CPU us/req etcd / rusd | cores busy etcd / rusd |",
        "|---|---|---|---|---|",
    ]

    def per_req(rs, field):
        return med([x.get(field, float("nan")) / x["ok"] * 1e6 if x.get("ok") else float("nan")
                    for x in rs])

    def leader_share(rs):
        vals = []
        for x in rs:
            each, lead = x.get("server_cpu_s_each"), x.get("leader")
            if each and lead is not None and sum(each) > 0:
                vals.append(each[lead] / sum(each))
        return med(vals)

    def busy(rs):
        return med([(x.get("server_cpu_s", 0) + x.get("client_cpu_s", 0))
                    / x["wall_s"] / 2 for x in rs])

    for name, by in workloads_:
        e, r = by.get("etcd", []), by.get("rusd", [])
        lines.append(
            f"| {name} | {fmt(per_req(e, 'server_cpu_s'))} / {fmt(per_req(r, 'server_cpu_s'))} "
            f"| {fmt(100 * leader_share(e))}% / {fmt(100 * leader_share(r))}% "
            f"| {fmt(per_req(e, 'client_cpu_s'))} / {fmt(per_req(r, 'client_cpu_s'))} "
            f"| {fmt(100 * busy(e))}% / {fmt(100 * busy(r))}% |")

    lines += ["", "| workload | etcd req/s per round | rusd req/s per round |", "|---|---|---|"]
    for name, by in workloads_:
        lines.append(f"| {name} | {', '.join(fmt(x.get('rps', 0)) for x in by.get('etcd', []))} "
                     f"| {', '.join(fmt(x.get('rps', 0)) for x in by.get('rusd', []))} |")

    odd = []
    for name, by in workloads_:
        for kind in ("etcd", "rusd"):
            errs = _errors(by.get(kind, []))
            if errs:
                odd.append(f"* {name}, {kind}: failed requests by code "
                           f"{', '.join(f'{c} {n}' for c, n in sorted(errs.items()))}")
            changes = sum(1 for x in by.get(kind, []) if x.get("leader_after") != x.get("leader"))
            if changes:
                odd.append(f"* {name}, {kind}: the leader changed (or was not agreed on) "
                           f"during {changes} of {len(by.get(kind, []))} runs")
            builds = sum(1 for x in by.get(kind, []) if x.get("builds_running"))
            if builds:
                odd.append(f"* {name}, {kind}: cargo/rustc/nextest/go processes were running "
                           f"during {builds} of {len(by.get(kind, []))} runs")
    if odd:
        lines += ["", "Errors, leader changes, other load:", ""] + odd

    lines += ["", "| measure | etcd | rusd | ratio rusd/etcd |", "|---|---|---|---|"]
    for name, by in scalars:
        e, r = med(by.get("etcd", [])), med(by.get("rusd", []))
        lines.append(f"| {name} | {fmt(e, 2)} | {fmt(r, 2)} | {_ratio(r, e)} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--etcd", default=shutil.which("etcd") or "/usr/bin/etcd")
    ap.add_argument("--rusd", default=None,
                    help="the rusd binary (default: target/release/rusd, built first)")
    ap.add_argument("--duration", default=None,
                    help="time bound of each load (default 60s, 20s with --quick)")
    ap.add_argument("--quiet-wait", type=int, default=0, metavar="SECONDS",
                    help="before each cluster, wait up to this long for no cargo, rustc, "
                         "nextest or go process to be running (0: do not wait)")
    ap.add_argument("--out", default=str(ROOT / "target/bench/compare-cluster.md"))
    ap.add_argument("--tmp", default=None, help="where data directories go (default: /tmp)")
    ap.add_argument("--rusd-arg", action="append", default=[],
                    help="an extra flag for every rusd member (repeatable), e.g. "
                    "--rusd-arg=--worker-threads=1")
    args = ap.parse_args()
    RUSD_ARGS.extend(args.rusd_arg)
    command = " ".join(["python3", "bench/compare_cluster.py"] + sys.argv[1:])
    if args.rusd is None:
        args.rusd = str(ROOT / "target/release/rusd")
        subprocess.run(["cargo", "build", "--release", "-p", "rusd"], cwd=ROOT, check=True)
    if not Path(args.rusd).exists():
        sys.exit(f"no rusd at {args.rusd}")
    if not Path(args.etcd).exists():
        sys.exit(f"no etcd at {args.etcd}: apt-get install -y etcd-server etcd-client")
    duration = args.duration or ("20s" if args.quick else "60s")
    tmp = Path(args.tmp or tempfile.mkdtemp(prefix="rusd-compare-cluster-"))
    tmp.mkdir(parents=True, exist_ok=True)
    machine = machine_description(args.etcd)
    loads = []
    results = {}
    try:
        for i in range(args.rounds):
            order = ["etcd", "rusd"] if i % 2 == 0 else ["rusd", "etcd"]
            loads.append(round(os.getloadavg()[0], 2))
            print(f"round {i + 1}/{args.rounds} ({' then '.join(order)}), "
                  f"load {loads[-1]}", file=sys.stderr)
            run_round(args.rusd, args.etcd, order, args.quick, results, tmp, duration,
                      args.quiet_wait)
    finally:
        if not args.tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    loads.append(round(os.getloadavg()[0], 2))
    machine += f"; 1-minute load at each round's start and at the end: {loads}"
    md = report(results, args, machine, command)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(md)
    Path(args.out).with_suffix(".json").write_text(
        json.dumps({"command": command, "machine": machine, "results": results}, indent=1))
    print(md)


if __name__ == "__main__":
    main()
