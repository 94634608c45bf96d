//! etcdctl 3.4.23 (`ETCDCTL_API=3`) against a real etcd 3.4.23 and against rusd, with the same
//! scripted commands: outputs (stdout, stderr, exit status) must match after normalizing what
//! legitimately differs between two clusters.
//!
//! Normalized (each also documented where it happens):
//! * endpoints, member and cluster ids (hex and decimal), `raft_term`, and lease ids (the
//!   server chooses them: mapped to `<LEASE1>`, `<LEASE2>`, ... in grant order);
//! * etcdctl's own client-side log lines (`{"level":...}` on stderr: timestamps, client uuids);
//! * timings ("took = ..."), `endpoint status` version ("3.4.23" vs rusd's "3.5.17"), db sizes,
//!   raft indexes; `endpoint hashkv` hash values (each server hashes its own storage encoding);
//!   `snapshot status` hash / size / key count (the bbolt file rusd writes is not byte-identical);
//! * lock / election keys carry a session lease id: 13-16-hex-digit tokens become `<ID>`.

mod common;
mod real_etcd;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Rusd;
use real_etcd::{Etcd, ETCDCTL};

/// What one etcdctl run printed.
#[derive(Clone, Debug, PartialEq)]
struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ctl_command(endpoint: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(ETCDCTL);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .arg("--dial-timeout=5s")
        .arg("--command-timeout=10s")
        .args(args);
    cmd
}

/// Waits for `child` at most `limit`, then kills it; returns what it printed.
fn finish(mut child: Child, limit: Duration) -> Out {
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let code = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        code,
        stdout: String::from_utf8_lossy(&out_t.join().expect("stdout reader")).into_owned(),
        stderr: String::from_utf8_lossy(&err_t.join().expect("stderr reader")).into_owned(),
    }
}

/// Runs etcdctl to completion (30 s at most), feeding `stdin`.
fn run(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Out {
    let mut child = ctl_command(endpoint, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("etcdctl stdin");
    }
    drop(input);
    finish(child, Duration::from_secs(30))
}

/// Starts etcdctl in the background (for watch, elect, lock, make-mirror).
fn spawn(endpoint: &str, args: &[&str]) -> Child {
    ctl_command(endpoint, args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn etcdctl")
}

/// One server under test and what is specific to it.
struct Side {
    endpoint: String,
    /// Text replacements that make this server's output comparable, longest first.
    ids: Vec<(String, String)>,
    /// Lease ids in grant order.
    leases: Vec<i64>,
}

impl Side {
    fn new(endpoint: String) -> Side {
        // The member and cluster ids, from a write's JSON header.
        let out = run(&endpoint, &["put", "__probe", "", "-w", "json"], None);
        let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("put json");
        let h = &v["header"];
        let (member, cluster) = (
            h["member_id"].as_u64().expect("member_id"),
            h["cluster_id"].as_u64().expect("cluster_id"),
        );
        let del = run(&endpoint, &["del", "__probe"], None);
        assert_eq!(del.stdout.trim(), "1");
        let mut s = Side {
            endpoint,
            ids: Vec::new(),
            leases: Vec::new(),
        };
        s.ids.push((format!("{member:x}"), "<MEMBER>".into()));
        s.ids.push((member.to_string(), "<MEMBER>".into()));
        s.ids.push((format!("{cluster:x}"), "<CLUSTER>".into()));
        s.ids.push((cluster.to_string(), "<CLUSTER>".into()));
        s.ids.push((s.endpoint.clone(), "<EP>".into()));
        s
    }

    fn add_lease(&mut self, id: i64) {
        self.leases.push(id);
        let n = self.leases.len();
        self.ids.push((format!("{id:016x}"), format!("<LEASE{n}>")));
        self.ids.push((format!("{id:x}"), format!("<LEASE{n}>")));
        self.ids.push((id.to_string(), format!("<LEASE{n}>")));
        self.ids
            .sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    }

    fn normalize(&self, text: &str) -> String {
        let mut lines = Vec::new();
        for line in text.lines() {
            if line.starts_with("{\"level\":") {
                continue; // etcdctl's client-side log (timestamps, client uuids)
            }
            let mut line = norm_json_line(line);
            for (from, to) in &self.ids {
                line = line.replace(from.as_str(), to);
            }
            if let Some(i) = line.find("took = ") {
                line.truncate(i + "took = ".len());
                line.push_str("<T>");
            }
            for key in ["\"RaftTerm\" : ", "\"raft_term\":"] {
                if let Some(i) = line.find(key) {
                    let rest: String = line[i + key.len()..]
                        .chars()
                        .skip_while(char::is_ascii_digit)
                        .collect();
                    line = format!("{}<TERM>{rest}", &line[..i + key.len()]);
                }
            }
            lines.push(line);
        }
        lines.join("\n")
    }
}

/// In a JSON line: `raft_term` of headers becomes 0, `took` and raft/db status numbers are
/// blanked (they differ by design).
fn norm_json_line(line: &str) -> String {
    let Ok(mut v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    if !(v.is_object() || v.is_array()) {
        return line.to_string();
    }
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    match k.as_str() {
                        "raft_term" | "raftTerm" | "raftIndex" | "raftAppliedIndex" | "dbSize"
                        | "dbSizeInUse" | "took" | "version" | "hash" => {
                            *x = serde_json::Value::String(format!("<{k}>"));
                        }
                        _ => walk(x),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v.to_string()
}

/// Both servers, and a log of what ran (printed on a mismatch).
struct Pair {
    etcd: Side,
    rusd: Side,
    tmp: tempfile::TempDir,
    log: Vec<String>,
    _etcd: Etcd,
    _rusd: Rusd,
}

impl Pair {
    fn start() -> Pair {
        let e = std::thread::spawn(|| Etcd::start(&[]));
        let r = Rusd::start(&[]);
        let e = e.join().expect("etcd start");
        Pair {
            etcd: Side::new(e.endpoint.clone()),
            rusd: Side::new(r.endpoint.clone()),
            tmp: tempfile::tempdir().expect("tempdir"),
            log: Vec::new(),
            _etcd: e,
            _rusd: r,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn fail(&self, what: &str, e: &dyn std::fmt::Debug, r: &dyn std::fmt::Debug) -> ! {
        let from = self.log.len().saturating_sub(15);
        panic!(
            "etcd/rusd etcdctl mismatch in `{what}`\n--- etcd:\n{e:#?}\n--- rusd:\n{r:#?}\n--- before:\n  {}",
            self.log[from..].join("\n  ")
        );
    }

    /// Runs `args` on both (with `{ID}` in an argument replaced by each side's lease `n`:
    /// `{L1}`, `{L2}`...) and compares normalized outputs with `fix` applied; returns etcd's.
    fn same_with(
        &mut self,
        args: &[&str],
        stdin: Option<&str>,
        fix: &dyn Fn(&str) -> String,
    ) -> Out {
        let subst = |side: &Side| -> Vec<String> {
            args.iter()
                .map(|a| {
                    let mut a = a.to_string();
                    for (i, id) in side.leases.iter().enumerate() {
                        a = a.replace(&format!("{{L{}}}", i + 1), &format!("{id:x}"));
                    }
                    a
                })
                .collect()
        };
        let (ea, ra) = (subst(&self.etcd), subst(&self.rusd));
        let ea: Vec<&str> = ea.iter().map(String::as_str).collect();
        let ra: Vec<&str> = ra.iter().map(String::as_str).collect();
        let e = run(&self.etcd.endpoint, &ea, stdin);
        let r = run(&self.rusd.endpoint, &ra, stdin);
        self.compare(&args.join(" "), &e, &r, fix);
        e
    }

    fn compare(&mut self, what: &str, e: &Out, r: &Out, fix: &dyn Fn(&str) -> String) {
        self.log.push(what.to_string());
        let n = |side: &Side, o: &Out| Out {
            code: o.code,
            stdout: fix(&side.normalize(&o.stdout)),
            stderr: fix(&side.normalize(&o.stderr)),
        };
        let (ne, nr) = (n(&self.etcd, e), n(&self.rusd, r));
        if ne != nr {
            self.fail(what, &ne, &nr);
        }
    }

    fn same(&mut self, args: &[&str]) -> Out {
        self.same_with(args, None, &|s| s.to_string())
    }

    fn same_stdin(&mut self, args: &[&str], stdin: &str) -> Out {
        self.same_with(args, Some(stdin), &|s| s.to_string())
    }

    /// `lease grant`: compares (ids mapped) and remembers both ids.
    fn grant(&mut self, ttl: &str) {
        let e = run(&self.etcd.endpoint, &["lease", "grant", ttl], None);
        let r = run(&self.rusd.endpoint, &["lease", "grant", ttl], None);
        let id = |o: &Out| {
            let hex = o.stdout.split_whitespace().nth(1).expect("lease id");
            i64::from_str_radix(hex, 16).expect("hex lease id")
        };
        self.etcd.add_lease(id(&e));
        self.rusd.add_lease(id(&r));
        self.compare(&format!("lease grant {ttl}"), &e, &r, &|s| s.to_string());
    }
}

fn skip() -> bool {
    if real_etcd::available() {
        return false;
    }
    eprintln!("skipped: {} or {} missing", real_etcd::ETCD, ETCDCTL);
    true
}

/// An etcdctl `-w table` as rows of trimmed cells (borders dropped), with the cells of the
/// named columns replaced by `<X>` (column widths follow the contents, so they are not kept).
fn table(s: &str, blank: &[&str]) -> String {
    let mut header: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for line in s.lines().filter(|l| l.starts_with('|')) {
        let mut cells: Vec<String> = line
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        if header.is_empty() {
            header = cells.clone();
        } else {
            for (i, name) in header.iter().enumerate() {
                if blank.contains(&name.as_str()) {
                    if let Some(c) = cells.get_mut(i) {
                        *c = "<X>".into();
                    }
                }
            }
        }
        rows.push(cells.join(" | "));
    }
    rows.join("\n")
}

/// Hex tokens of 13-16 digits (session lease ids in lock / election keys) become `<ID>`.
fn hex_ids(s: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        // etcd prints lease ids with %x: leading zeros dropped, so 13 to 16 digits.
        if (13..=16).contains(&word.len()) && word.chars().all(|c| c.is_ascii_hexdigit()) {
            out.push_str("<ID>");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[test]
fn put_get_del() {
    if skip() {
        return;
    }
    let mut p = Pair::start();
    for (k, v) in [
        ("a", "1"),
        ("a/b", "2"),
        ("a/c", "3"),
        ("b", "4"),
        ("a", "5"),
        ("c", ""),
        ("d", "x y z"),
    ] {
        p.same(&["put", k, v]);
    }
    p.same(&["put", "a", "6", "--prev-kv"]);
    p.same(&["put", "a", "7", "--prev-kv", "-w", "json"]);
    p.same(&["put", "new", "1", "--prev-kv"]);
    p.same(&["put", "a", "--ignore-value"]);
    p.same(&["put", "missing", "--ignore-value"]);
    p.same(&["put", "a", "8", "--ignore-lease"]);
    p.same(&["put", "missing", "8", "--ignore-lease"]);
    p.same(&["put", "a", "v", "--lease=1234abcd"]);
    p.same(&["put", "", "v"]);
    p.same(&["put", "onlykey"]);
    p.grant("600");
    p.same(&["put", "leased", "v", "--lease={L1}"]);
    p.same(&["put", "leased", "w", "--ignore-lease", "-w", "json"]);

    for fmt in ["simple", "json", "fields"] {
        p.same(&["get", "a", "-w", fmt]);
        p.same(&["get", "a", "--prefix", "-w", fmt]);
        p.same(&["get", "leased", "-w", fmt]);
        p.same(&["get", "nothing", "-w", fmt]);
    }
    p.same(&["get", "a", "z"]);
    p.same(&["get", "b", "--from-key"]);
    p.same(&["get", "", "--from-key", "--keys-only"]);
    p.same(&["get", "", "--prefix", "--print-value-only"]);
    p.same(&["get", "a", "--prefix", "--count-only", "-w", "json"]);
    p.same(&["get", "a", "--prefix", "--limit=2"]);
    p.same(&["get", "a", "--prefix", "--limit=2", "-w", "json"]);
    for rev in ["1", "2", "4", "9", "100"] {
        p.same(&["get", "a", "--prefix", &format!("--rev={rev}")]);
    }
    for sort in ["CREATE", "KEY", "MODIFY", "VALUE", "VERSION"] {
        for order in ["ASCEND", "DESCEND"] {
            p.same(&["get", "", "--from-key", "--sort-by", sort, "--order", order]);
        }
    }
    p.same(&["get", "", "--from-key", "--order", "DESCEND", "--limit=3"]);
    p.same(&["get", "", "--from-key", "--sort-by", "BOGUS"]);
    p.same(&["get", "a", "--consistency=s"]);
    p.same(&["get", "a", "--prefix", "--hex"]);
    p.same(&["get", "", "--prefix", "--keys-only", "-w", "json"]);

    // -w protobuf: the raw RangeResponse; compared with the header's ids stripped.
    let bytes = |ep: &str| {
        ctl_command(ep, &["get", "a", "--prefix", "-w", "protobuf"])
            .output()
            .expect("etcdctl")
            .stdout
    };
    let (e, r) = (bytes(&p.etcd.endpoint), bytes(&p.rusd.endpoint));
    assert!(!e.is_empty());
    assert_eq!(
        strip_header_ids(&e),
        strip_header_ids(&r),
        "get -w protobuf (header ids stripped)"
    );

    p.same(&["del", "nothing"]);
    p.same(&["del", "a", "--prev-kv"]);
    p.same(&["del", "a", "--prefix", "--prev-kv", "-w", "json"]);
    p.same(&["del", "c", "--from-key"]);
    p.same(&["del", "b", "c"]);
    p.same(&["del", ""]);
    p.same(&["get", "", "--from-key", "-w", "json"]);
}

/// A RangeResponse's encoding without `header.cluster_id`, `member_id`, `raft_term` (fields 1,
/// 2, 4 of field 1); etcdctl `-w protobuf` prints the raw message.
fn strip_header_ids(b: &[u8]) -> Vec<u8> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let x = *b.get(*i)?;
            *i += 1;
            v |= u64::from(x & 0x7f) << shift;
            if x < 0x80 {
                return Some(v);
            }
        }
        None
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let Some(tag) = varint(b, &mut i) else {
            return b.to_vec();
        };
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => {
                if varint(b, &mut i).is_none() {
                    return b.to_vec();
                }
            }
            2 => {
                let Some(len) = varint(b, &mut i) else {
                    return b.to_vec();
                };
                let end = i + len as usize;
                if end > b.len() {
                    return b.to_vec();
                }
                if field == 1 {
                    // The header: keep only the revision (field 3).
                    let inner = &b[i..end];
                    let mut j = 0;
                    let mut kept = Vec::new();
                    while j < inner.len() {
                        let s = j;
                        let Some(t) = varint(inner, &mut j) else {
                            break;
                        };
                        if varint(inner, &mut j).is_none() {
                            break;
                        }
                        if t >> 3 == 3 {
                            kept.extend_from_slice(&inner[s..j]);
                        }
                    }
                    out.push(b'H');
                    out.extend_from_slice(&kept);
                    i = end;
                    continue;
                }
                i = end;
            }
            _ => return b.to_vec(),
        }
        out.extend_from_slice(&b[start..i]);
    }
    out
}

#[test]
fn txn_and_compaction() {
    if skip() {
        return;
    }
    let mut p = Pair::start();
    p.same(&["put", "k", "v1"]);
    p.same(&["put", "k2", "x"]);
    // etcdctl txn reads compares, then success ops, then failure ops, separated by blank lines.
    for (script, json) in [
        (
            "mod(\"k\") > \"0\"\n\nput k v2\nget k\n\nput k v3\n\n",
            false,
        ),
        (
            "value(\"k\") = \"nope\"\n\nput k v4\n\nget k --prefix\ndel k2 --prev-kv\n\n",
            true,
        ),
        (
            "version(\"missing\") = \"0\"\ncreate(\"k\") > \"1\"\n\nput missing 1\n\n\n",
            false,
        ),
        // (etcdctl 3.4 panics on any `lease("k") = ...` compare: not usable here.)
        // No compares: a first blank line; then success ops, a blank line, failure ops.
        ("\nput a 1\nput a 2\n\n\n", false),
        ("\n\nput a 1\nput a 2\n\n", false),
        ("\nput b 1\n\nput b 2\n\n", true),
        ("\n\nput b 3\n\n", true),
        ("mod(\"k\") > \"zz\"\n\nput b 1\n\n\n", false),
        ("bogus(\"k\") > \"1\"\n\nput b 1\n\n\n", false),
        (
            "\nget \"\" --from-key\ndel a --prefix --prev-kv\n\n\n",
            true,
        ),
    ] {
        if json {
            p.same_stdin(&["txn", "-w", "json"], script);
        } else {
            p.same_stdin(&["txn"], script);
        }
    }
    p.same(&["get", "", "--from-key", "-w", "json"]);
    for i in 0..5 {
        p.same(&["put", "c", &i.to_string()]);
    }
    p.same(&["compaction", "4"]);
    p.same(&["compaction", "4"]);
    p.same(&["compaction", "3"]);
    p.same(&["compaction", "1000"]);
    p.same(&["compaction", "6", "--physical"]);
    p.same(&["get", "c", "--rev=5"]);
    p.same(&["get", "c", "--rev=6", "-w", "json"]);
    p.same(&["compaction", "x"]);
}

#[test]
fn watch() {
    if skip() {
        return;
    }
    let mut p = Pair::start();
    p.same(&["put", "w/a", "1"]);
    p.same(&["put", "w/b", "1"]);
    // Revision 5 now (the probe put and delete made 2 and 3). Watchers that print headers
    // start at the next revision: they are live on both servers, one response per revision
    // (catching up from history, a server may batch revisions into one response as it likes).
    let watch_args: &[&[&str]] = &[
        &["watch", "w/", "--prefix", "--rev=1"],
        &["watch", "w/a", "--prev-kv", "--rev=1"],
        &["watch", "w/a", "--prev-kv", "--rev=6"],
        &["watch", "w/", "--prefix", "-w", "json", "--rev=6"],
        &["watch", "w/a", "w/c", "--rev=6", "-w", "fields"],
    ];
    let started: Vec<(Child, Child)> = watch_args
        .iter()
        .map(|a| (spawn(&p.etcd.endpoint, a), spawn(&p.rusd.endpoint, a)))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    p.same(&["put", "w/a", "2"]);
    p.same_stdin(&["txn"], "\nput w/a 3\nput w/b 3\nput w/c 3\n\n\n");
    p.same(&["del", "w/", "--prefix"]);
    p.same(&["put", "w/a", "4"]);
    p.same(&["put", "other", "x"]);
    std::thread::sleep(Duration::from_millis(2000));
    for ((e, r), args) in started.into_iter().zip(watch_args) {
        let (e, r) = (finish(e, Duration::ZERO), finish(r, Duration::ZERO));
        assert!(e.stdout.lines().count() >= 3, "etcd saw events: {e:?}");
        p.compare(&args.join(" "), &e, &r, &|s| s.to_string());
    }
    // A compacted start: the watch is canceled (etcdctl prints the reason and exits).
    p.same(&["compaction", "5"]);
    let e = finish(
        spawn(&p.etcd.endpoint, &["watch", "w/a", "--rev=2"]),
        Duration::from_secs(5),
    );
    let r = finish(
        spawn(&p.rusd.endpoint, &["watch", "w/a", "--rev=2"]),
        Duration::from_secs(5),
    );
    p.compare("watch w/a --rev=2 (compacted)", &e, &r, &|s| s.to_string());
    // Interactive watch: commands on stdin.
    // One watch per session: two would interleave in no defined order.
    let script = "watch w/ --prefix --rev=5\n";
    let mut outs = Vec::new();
    for ep in [p.etcd.endpoint.clone(), p.rusd.endpoint.clone()] {
        let mut child = ctl_command(&ep, &["watch", "-i"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(script.as_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(1500));
        drop(input);
        outs.push(finish(child, Duration::from_secs(2)));
    }
    let (e, r) = (outs.remove(0), outs.remove(0));
    p.compare("watch -i", &e, &r, &|s| s.to_string());
}

#[test]
fn lease_commands() {
    if skip() {
        return;
    }
    let mut p = Pair::start();
    p.grant("600");
    p.grant("1000");
    p.same(&["put", "l/a", "1", "--lease={L1}"]);
    p.same(&["put", "l/b", "1", "--lease={L1}"]);
    // Remaining TTL counts down in real time: ±1 s on the "remaining" number. etcd lists
    // the attached keys in Go map order (random), so they are sorted before comparing.
    let ttl = |s: &str| {
        s.lines()
            .map(|l| {
                let l = match l.find("remaining(") {
                    Some(i) => format!(
                        "{}remaining(<N>s){}",
                        &l[..i],
                        l[i..].split_once("s)").map_or("", |x| x.1)
                    ),
                    None => l.to_string(),
                };
                match l.split_once("attached keys([") {
                    Some((head, rest)) => {
                        let (keys, tail) = rest.split_once("])").unwrap_or((rest, ""));
                        let mut keys: Vec<&str> = keys.split(' ').collect();
                        keys.sort_unstable();
                        format!("{head}attached keys([{}]){tail}", keys.join(" "))
                    }
                    None => l,
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    p.same_with(&["lease", "timetolive", "{L1}"], None, &ttl);
    p.same_with(&["lease", "timetolive", "{L1}", "--keys"], None, &ttl);
    let json_ttl = |s: &str| {
        let mut v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
        if v.get("ttl").is_some() {
            v["ttl"] = serde_json::Value::from(0);
        }
        if let Some(keys) = v.get_mut("keys").and_then(|k| k.as_array_mut()) {
            keys.sort_by_key(|k| k.to_string());
        }
        v.to_string()
    };
    p.same_with(
        &["lease", "timetolive", "{L1}", "--keys", "-w", "json"],
        None,
        &json_ttl,
    );
    p.same(&["lease", "timetolive", "abcdef"]);
    p.same(&["lease", "timetolive", "zz"]);
    // The lease list is in map order: sorted before comparing.
    let sorted = |s: &str| {
        let mut lines: Vec<&str> = s.lines().collect();
        lines.sort_unstable();
        lines.join("\n")
    };
    p.same_with(&["lease", "list"], None, &sorted);
    p.same(&["lease", "keep-alive", "--once", "{L2}"]);
    p.same(&["lease", "keep-alive", "--once", "abcdef"]);
    p.same(&["lease", "revoke", "{L1}"]);
    p.same(&["lease", "revoke", "{L1}"]);
    p.same(&["lease", "revoke", "abcdef"]);
    p.same(&["get", "l/", "--prefix"]);
    p.same_with(&["lease", "list"], None, &sorted);
    p.same(&["lease", "grant", "9000000001"]);
    p.same(&["lease", "grant", "x"]);
}

#[test]
fn cluster_and_maintenance_commands() {
    if skip() {
        return;
    }
    let mut p = Pair::start();
    p.same(&["put", "m", "1"]);
    p.same(&["version"]);
    // URLs differ by setup: rusd's harness advertises no peer URL (etcd's default
    // localhost:2380 shows) and advertises its client URL with port 0.
    let peer = |s: &str| {
        s.split(", ")
            .map(|f| if f.starts_with("http://") { "<URL>" } else { f })
            .collect::<Vec<_>>()
            .join(", ")
    };
    p.same_with(&["member", "list"], None, &peer);
    let peer_json = |s: &str| {
        let mut v: serde_json::Value = serde_json::from_str(s).unwrap_or_default();
        if let Some(m) = v.get_mut("members").and_then(|m| m.as_array_mut()) {
            for m in m {
                m["peerURLs"] = serde_json::Value::from("<URL>");
                m["clientURLs"] = serde_json::Value::from("<URL>");
            }
        }
        v.to_string()
    };
    p.same_with(&["member", "list", "-w", "json"], None, &peer_json);
    // endpoint status: version, db size, raft term and indexes differ by design.
    let status = |s: &str| {
        s.lines()
            .map(|l| {
                let mut f: Vec<&str> = l.split(", ").collect();
                if f.len() >= 9 {
                    for i in [2, 3, 6, 7, 8] {
                        f[i] = "<X>";
                    }
                }
                f.join(", ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    p.same_with(&["endpoint", "status"], None, &status);
    p.same(&["endpoint", "status", "-w", "json"]);
    p.same_with(&["endpoint", "status", "-w", "table"], None, &|s| {
        table(
            s,
            &[
                "VERSION",
                "DB SIZE",
                "RAFT TERM",
                "RAFT INDEX",
                "RAFT APPLIED INDEX",
            ],
        )
    });
    p.same_with(&["member", "list", "-w", "table"], None, &|s| {
        table(s, &["PEER ADDRS", "CLIENT ADDRS"])
    });
    p.same_with(&["endpoint", "health", "-w", "table"], None, &|s| {
        table(s, &["TOOK"])
    });
    p.same(&["endpoint", "health"]);
    p.same(&["endpoint", "health", "-w", "json"]);
    let hash = |s: &str| match s.rsplit_once(", ") {
        Some((ep, _)) => format!("{ep}, <HASH>"),
        None => s.to_string(),
    };
    p.same_with(&["endpoint", "hashkv"], None, &hash);
    p.same(&["endpoint", "hashkv", "-w", "json"]);
    p.same(&["alarm", "list"]);
    p.same(&["alarm", "disarm"]);
    p.same(&["defrag"]);
    p.same(&["get", "m"]);
    // move-leader: to itself, and to a member that does not exist.
    let own = |side: &Side| side.ids[0].0.clone();
    let (eid, rid) = (own(&p.etcd), own(&p.rusd));
    let e = run(&p.etcd.endpoint, &["move-leader", &eid], None);
    let r = run(&p.rusd.endpoint, &["move-leader", &rid], None);
    p.compare("move-leader <self>", &e, &r, &|s| s.to_string());
    p.same(&["move-leader", "1234"]);

    // snapshot save, then etcdctl's own reader on the file.
    let (ef, rf) = (p.path("etcd.db"), p.path("rusd.db"));
    let e = run(
        &p.etcd.endpoint,
        &["snapshot", "save", ef.to_str().expect("path")],
        None,
    );
    let r = run(
        &p.rusd.endpoint,
        &["snapshot", "save", rf.to_str().expect("path")],
        None,
    );
    let tmp = p.tmp.path().to_str().expect("path").to_string();
    let path = move |s: &str| {
        s.replace(&tmp, "<TMP>")
            .replace("etcd.db", "X.db")
            .replace("rusd.db", "X.db")
    };
    p.compare("snapshot save", &e, &r, &path);
    let status_of = |f: &Path| {
        let o = run(
            "127.0.0.1:1",
            &[
                "snapshot",
                "status",
                f.to_str().expect("path"),
                "-w",
                "json",
            ],
            None,
        );
        let v: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap_or_default();
        (o.code, v.get("revision").cloned(), o.stderr)
    };
    let (es, rs) = (status_of(&ef), status_of(&rf));
    assert_eq!(es.0, Some(0), "etcd snapshot status: {es:?}");
    assert_eq!(
        rs.0, es.0,
        "rusd snapshot status (etcdctl reads the file): {rs:?}"
    );
    assert_eq!(rs.1, es.1, "snapshot revision");
}

#[test]
fn lock_elect_and_mirror() {
    if skip() {
        return;
    }
    let mut p = Pair::start();
    // lock with a command: runs it while holding the lock (key and revision in the env).
    let held = p.same_with(
        &["lock", "L", "--", "sh", "-c", "echo held $ETCD_LOCK_KEY"],
        None,
        &hex_ids,
    );
    assert!(held.stdout.starts_with("held L/"), "{held:?}");
    // A held lock blocks a second locker until the first is gone (killed: its session lease
    // expires, 3 s).
    let holders: Vec<Child> = [&p.etcd.endpoint, &p.rusd.endpoint]
        .iter()
        .map(|ep| spawn(ep, &["lock", "L2", "--ttl=3"]))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let waiters: Vec<Child> = [&p.etcd.endpoint, &p.rusd.endpoint]
        .iter()
        .map(|ep| spawn(ep, &["lock", "L2", "--", "echo", "second"]))
        .collect();
    std::thread::sleep(Duration::from_millis(1000));
    let mut outs: Vec<Out> = holders
        .into_iter()
        .map(|c| finish(c, Duration::ZERO))
        .collect();
    outs.extend(
        waiters
            .into_iter()
            .map(|c| finish(c, Duration::from_secs(15))),
    );
    assert!(outs[0].stdout.starts_with("L2/"), "{:?}", outs[0]);
    assert_eq!(outs[2].stdout.trim(), "second", "{:?}", outs[2]);
    p.compare("lock L2 (holder)", &outs[0], &outs[1], &hex_ids);
    p.compare(
        "lock L2 (waiter, after the holder died)",
        &outs[2],
        &outs[3],
        &hex_ids,
    );

    // elect: the first candidate wins and prints its key and value; an observer sees it.
    let leaders: Vec<Child> = [&p.etcd.endpoint, &p.rusd.endpoint]
        .iter()
        .map(|ep| spawn(ep, &["elect", "E", "first"]))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let observers: Vec<Child> = [&p.etcd.endpoint, &p.rusd.endpoint]
        .iter()
        .map(|ep| spawn(ep, &["elect", "-l", "E"]))
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let outs: Vec<Out> = leaders
        .into_iter()
        .chain(observers)
        .map(|c| finish(c, Duration::ZERO))
        .collect();
    assert!(outs[0].stdout.contains("first"), "{:?}", outs[0]);
    assert!(outs[2].stdout.contains("first"), "{:?}", outs[2]);
    p.compare("elect E first", &outs[0], &outs[1], &hex_ids);
    p.compare("elect -l E", &outs[2], &outs[3], &hex_ids);

    // make-mirror into a fresh rusd each: existing keys, then live updates.
    for (k, v) in [("m/a", "1"), ("m/b", "2"), ("n/c", "3")] {
        p.same(&["put", k, v]);
    }
    let dests = [Rusd::start(&[]), Rusd::start(&[])];
    let mirrors: Vec<Child> = [&p.etcd.endpoint, &p.rusd.endpoint]
        .iter()
        .zip(&dests)
        .map(|(src, dest)| spawn(src, &["make-mirror", "--prefix=m/", &dest.endpoint]))
        .collect();
    std::thread::sleep(Duration::from_millis(2000));
    p.same(&["put", "m/c", "4"]);
    p.same(&["del", "m/a"]);
    std::thread::sleep(Duration::from_millis(2000));
    let outs: Vec<Out> = mirrors
        .into_iter()
        .map(|c| finish(c, Duration::ZERO))
        .collect();
    p.compare("make-mirror", &outs[0], &outs[1], &|s| s.to_string());
    let dump = |d: &Rusd| {
        let o = run(&d.endpoint, &["get", "", "--from-key", "-w", "json"], None);
        let mut v: serde_json::Value = serde_json::from_str(o.stdout.trim()).expect("json");
        v["header"] = serde_json::Value::Null;
        v
    };
    let (e, r) = (dump(&dests[0]), dump(&dests[1]));
    assert_eq!(e, r, "mirrored data");
    assert_eq!(e["count"], 2, "{e}");
}

#[test]
#[ignore = "open: rusd answers Unimplemented \"rusd: auth is not supported yet\" to the Auth service"]
fn auth_commands() {
    if skip() {
        return;
    }
    let mut p = Pair::start();
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "u1:pw1"],
        &["user", "add", "u1:pw1"],
        &["role", "add", "r1"],
        &["role", "add", "r1"],
        &["role", "grant-permission", "r1", "readwrite", "k1"],
        &["role", "grant-permission", "r1", "read", "p/", "--prefix"],
        &["role", "grant-permission", "r1", "write", "f", "--from-key"],
        &["user", "grant-role", "u1", "r1"],
        &["user", "grant-role", "u1", "nope"],
        &["user", "list"],
        &["role", "list"],
        &["user", "get", "u1"],
        &["user", "get", "u1", "-w", "json"],
        &["role", "get", "r1"],
        &["role", "get", "nope"],
        &["auth", "enable"],
        &["user", "grant-role", "root", "root"],
        &["auth", "enable"],
        &["put", "k1", "v"],
        &["--user=u1:pw1", "put", "k1", "v"],
        &["--user=u1:pw1", "get", "k1"],
        &["--user=u1:pw1", "put", "k2", "v"],
        &["--user=u1:pw1", "get", "p/x"],
        &["--user=u1:pw1", "put", "p/x", "v"],
        &["--user=u1:pw1", "put", "fz", "v"],
        &["--user=u1:wrong", "get", "k1"],
        &["--user=nobody:pw", "get", "k1"],
        &["--user=root:rootpw", "get", "", "--from-key"],
        &[
            "--user=root:rootpw",
            "role",
            "revoke-permission",
            "r1",
            "k1",
        ],
        &["--user=u1:pw1", "get", "k1"],
        &["--user=root:rootpw", "user", "revoke-role", "u1", "r1"],
        &[
            "--user=root:rootpw",
            "user",
            "passwd",
            "u1",
            "--interactive=false",
        ],
        &["--user=root:rootpw", "user", "delete", "u1"],
        &["--user=root:rootpw", "role", "delete", "r1"],
        &["--user=root:rootpw", "user", "list"],
        &["--user=root:rootpw", "auth", "disable"],
        &["auth", "disable"],
        &["get", "k1"],
    ] {
        let stdin = args.contains(&"passwd").then_some("newpw\n");
        p.same_with(args, stdin, &|s| s.to_string());
    }
}
