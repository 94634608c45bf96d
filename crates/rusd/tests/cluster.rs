//! Clusters of real rusd processes on 127.0.0.1: replication, leader failure, an isolated
//! follower, membership changes, leader transfer, catching up from a snapshot.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{free_port, Cluster};
use etcd_client::{Error, GetOptions, MemberAddOptions, WatchOptions};

/// etcd 3.4.23 sends "not enough started members" with code Unknown (checked against it).
const UNKNOWN: i32 = 2;
const UNAVAILABLE: i32 = 14;
const NOT_ENOUGH_STARTED: &str =
    "etcdserver: re-configuration failed due to not enough started members";
const UNHEALTHY: &str = "etcdserver: unhealthy cluster";

fn status(e: Error) -> (i32, String) {
    match e {
        Error::GRpcStatus(s) => (s.code() as i32, s.message().to_string()),
        other => panic!("expected a gRPC status, got {other:?}"),
    }
}

/// Runs a membership change (an expression yielding its future) again while it is refused as
/// "unhealthy cluster", for up to 20 s: with `--strict-reconfig-check` (the default) the
/// leader takes changes only once it has been connected to the voting members for 5 s (etcd's
/// health interval), so not at once after a start, a restart or a join.
macro_rules! when_healthy {
    ($call:expr) => {{
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match $call.await {
                Err(e)
                    if e.to_string().contains("unhealthy cluster") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                other => break other,
            }
        }
    }};
}

/// Puts `key`, retrying while the cluster has no leader (bounded: 20 s).
async fn put_retrying(c: &mut etcd_client::Client, key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match c.put(key, value, None).await {
            Ok(r) => return r.header().map(|h| h.revision()).unwrap_or(0),
            Err(e) => {
                assert!(Instant::now() < deadline, "put {key} kept failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Waits until member `m` serves `key` = `value` from its own state (serializable).
async fn wait_local_value(cluster: &Cluster, m: usize, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut c = cluster.members[m].client().await;
    loop {
        if let Ok(r) = c
            .get(key, Some(GetOptions::new().with_serializable()))
            .await
        {
            if r.kvs().first().map(|kv| kv.value()) == Some(value.as_bytes()) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "member {m} never served {key}={value}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_survive_leader_kill_and_catch_up() {
    let mut cluster = Cluster::start(3, &[]);
    // A write through every member (followers forward to the leader) is visible on every
    // member, linearizably.
    for i in 0..3 {
        let mut c = cluster.members[i].client().await;
        c.put(format!("k{i}"), format!("v{i}"), None)
            .await
            .expect("put");
    }
    for i in 0..3 {
        let mut c = cluster.members[i].client().await;
        let r = c
            .get("k", Some(GetOptions::new().with_prefix()))
            .await
            .expect("get");
        assert_eq!(r.kvs().len(), 3, "member {i}");
        assert_eq!(r.header().expect("header").revision(), 4);
    }
    let members = cluster.members[1]
        .client()
        .await
        .member_list()
        .await
        .expect("member list");
    assert_eq!(members.members().len(), 3);
    for m in members.members() {
        assert!(!m.name().is_empty(), "every member published its name");
        assert_eq!(m.client_urls().len(), 1);
        assert!(!m.is_learner());
    }

    // The leader dies; the others elect a new one and keep accepting writes.
    let leader = cluster.leader().await;
    cluster.members[leader].kill9();
    let survivor = (leader + 1) % 3;
    let mut c = cluster.members[survivor].client().await;
    let mut last = 0;
    for n in 0..20 {
        last = put_retrying(&mut c, &format!("after/{n}"), &n.to_string()).await;
    }
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    // The survivor saw at least two leaders: the first one and the new one.
    let endpoint = cluster.members[survivor].endpoint();
    assert!(metric(&endpoint, "etcd_server_leader_changes_seen_total") >= 2);

    // The old leader comes back as a follower and catches up.
    cluster.members[leader].restart();
    wait_local_value(&cluster, leader, "after/19", "19").await;
    let mut c = cluster.members[leader].client().await;
    let r = c.get("after/19", None).await.expect("linearizable get");
    assert!(r.header().expect("header").revision() >= last);
}

/// `unix://` peer URLs: members listen for and dial each other on Unix sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_with_unix_socket_peer_urls_replicate() {
    let mut cluster = Cluster::start_with_peer_scheme(3, "unix", &[]);
    let mut c = cluster.members[1].client().await;
    c.put("over-unix", "1", None).await.expect("put");
    for i in 0..3 {
        wait_local_value(&cluster, i, "over-unix", "1").await;
    }
    let members = c.member_list().await.expect("member list");
    for m in members.members() {
        assert!(
            m.peer_urls()[0].starts_with("unix://"),
            "{:?}",
            m.peer_urls()
        );
    }
    // A killed member's socket is replaced when it starts again, and it catches up.
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    cluster.members[follower].kill9();
    c = cluster.members[leader].client().await;
    c.put("while-down", "2", None).await.expect("put");
    cluster.members[follower].restart();
    wait_local_value(&cluster, follower, "while-down", "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_follower_cannot_serve_linearizable_reads_and_rejoins() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    cluster.members[follower].partition(true);
    let mut c = cluster.members[leader].client().await;
    for n in 0..10 {
        put_retrying(&mut c, &format!("p/{n}"), &n.to_string()).await;
    }
    // The majority goes on; the cut-off member cannot confirm a read index.
    let mut isolated = cluster.members[follower].client().await;
    let started = Instant::now();
    let read = isolated.get("p/9", None).await;
    assert!(
        read.is_err(),
        "a linearizable read on an isolated member: {read:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    // A serializable read answers from its (stale) state.
    let stale = isolated
        .get("p/9", Some(GetOptions::new().with_serializable()))
        .await
        .expect("serializable get");
    assert!(stale.kvs().is_empty());

    cluster.members[follower].partition(false);
    wait_local_value(&cluster, follower, "p/9", "9").await;
    let r = isolated
        .get("p/", Some(GetOptions::new().with_prefix()))
        .await;
    assert_eq!(r.expect("get after healing").kvs().len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_removed_added_and_promoted() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    let victim_id = cluster.id_of(victim).await;
    let mut c = cluster.members[leader].client().await;

    // Remove a follower: two members remain and still have a quorum.
    let removed = when_healthy!(c.member_remove(victim_id)).expect("member remove");
    assert_eq!(removed.members().len(), 2);
    cluster.members[victim].kill9();
    put_retrying(&mut c, "after-remove", "1").await;
    let err = c.member_remove(victim_id).await.expect_err("removed twice");
    assert!(err.to_string().contains("member not found"), "{err}");

    // The removed member's peer URL can be added again: a new member (new id, fresh data).
    let old_port = cluster.members[victim].peer_port;
    let readded = c
        .member_add([format!("http://127.0.0.1:{old_port}")], None)
        .await
        .expect("re-add the removed member's URL");
    let readded_id = readded.member().expect("member").id();
    assert_ne!(readded_id, victim_id);
    let again = cluster.join("readded", old_port);
    wait_local_value(&cluster, again, "after-remove", "1").await;
    assert_eq!(cluster.id_of(again).await, readded_id);
    when_healthy!(c.member_remove(readded_id)).expect("remove it again");
    cluster.members[again].kill9();

    // A learner joins, catches up, and is promoted.
    let port = free_port();
    let added = c
        .member_add(
            [format!("http://127.0.0.1:{port}")],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect("member add --learner");
    let learner_id = added.member().expect("member").id();
    assert!(added.member().expect("member").is_learner());
    let second = c
        .member_add(
            [format!("http://127.0.0.1:{}", free_port())],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .expect_err("a second learner");
    assert!(
        second.to_string().contains("too many learner members"),
        "{second}"
    );
    let dup = c
        .member_add([format!("http://127.0.0.1:{port}")], None)
        .await
        .expect_err("the same peer URL again");
    assert!(
        dup.to_string().contains("Peer URLs already exists"),
        "{dup}"
    );

    let l = cluster.join("learner", port);
    wait_local_value(&cluster, l, "after-remove", "1").await;
    let list = c.member_list().await.expect("member list");
    let me = list
        .members()
        .iter()
        .find(|m| m.id() == learner_id)
        .expect("learner listed");
    assert!(me.is_learner());
    assert_eq!(me.name(), "learner", "the learner published its name");
    // A learner serves serializable reads only (etcd's rule).
    let mut on_learner = cluster.members[l].client().await;
    for err in [
        on_learner.get("after-remove", None).await.map(|_| ()),
        on_learner.put("x", "y", None).await.map(|_| ()),
    ] {
        let err = err.expect_err("a learner refuses it");
        assert!(
            err.to_string().contains("rpc not supported for learner"),
            "{err}"
        );
    }
    let promote = loop {
        match c.member_promote(learner_id).await {
            Err(e) if e.to_string().contains("in sync with leader") => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            other => break other,
        }
    };
    promote.expect("member promote");
    // Once the promotion reaches it, the former learner serves writes (forwarded).
    put_retrying(&mut on_learner, "x", "y").await;
    let list = c.member_list().await.expect("member list");
    assert!(list.members().iter().all(|m| !m.is_learner()));
    assert_eq!(list.members().len(), 3);
    let again = c
        .member_promote(learner_id)
        .await
        .expect_err("promote a voter");
    assert!(
        again
            .to_string()
            .contains("can only promote a learner member"),
        "{again}"
    );

    // A voter added before it starts does not count towards the quorum until it caught up.
    let port = free_port();
    let added = when_healthy!(c.member_add([format!("http://127.0.0.1:{port}")], None))
        .expect("member add");
    assert!(!added.member().expect("member").is_learner());
    put_retrying(&mut c, "before-join", "1").await;
    let j = cluster.join("late", port);
    wait_local_value(&cluster, j, "before-join", "1").await;
    let list = c.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 4);
    assert!(list
        .members()
        .iter()
        .all(|m| !m.is_learner() && !m.name().is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_to_another_member() {
    let cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let target = (leader + 2) % 3;
    let target_id = cluster.id_of(target).await;

    let mut follower = cluster.members[target].client().await;
    let err = follower
        .move_leader(target_id)
        .await
        .expect_err("move-leader on a follower");
    assert!(err.to_string().contains("not leader"), "{err}");
    let mut c = cluster.members[leader].client().await;
    let err = c.move_leader(0xdead).await.expect_err("unknown transferee");
    assert!(err.to_string().contains("bad leader transferee"), "{err}");

    c.move_leader(target_id).await.expect("move-leader");
    assert_eq!(cluster.leader().await, target);
    // Writes go on through the old leader, now a follower.
    put_retrying(&mut c, "moved", "1").await;
    wait_local_value(&cluster, target, "moved", "1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_lose_two_and_keep_writing_but_not_three() {
    let mut cluster = Cluster::start(5, &[]);
    let leader = cluster.leader().await;
    cluster.members[leader].kill9();
    cluster.members[(leader + 1) % 5].kill9();
    let alive = (leader + 2) % 5;
    let mut c = cluster.members[alive].client().await;
    put_retrying(&mut c, "two-down", "1").await;
    for i in 0..5 {
        if cluster.members[i].is_running() {
            wait_local_value(&cluster, i, "two-down", "1").await;
        }
    }
    cluster.members[(leader + 3) % 5].kill9();
    // Two of five: no quorum, so a write cannot commit.
    let write = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(15), c.put("three-down", "1", None)).await
    });
    // Meanwhile its member counts it as pending (or, once it gave up, as failed).
    let endpoint = cluster.members[alive].endpoint();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut counted = false;
    while !counted && Instant::now() < deadline {
        counted = metric(&endpoint, "etcd_server_proposals_pending") >= 1
            || metric(&endpoint, "etcd_server_proposals_failed_total") >= 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = write.await.expect("join");
    assert!(
        !matches!(r, Ok(Ok(_))),
        "a write committed without a quorum: {r:?}"
    );
    assert!(counted, "the stuck write was neither pending nor failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_behind_the_purged_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start(3, &["--snapshot-count", "20"]);
    let leader = cluster.leader().await;
    let lagging = (leader + 1) % 3;
    let down = (leader + 2) % 3;
    // A watcher on the lagging member stays open through the snapshot install.
    let mut l = cluster.members[lagging].client().await;
    let start = l
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("h")
        .revision()
        + 1;
    let mut events = l
        .watch(
            "s/",
            Some(WatchOptions::new().with_prefix().with_start_revision(start)),
        )
        .await
        .expect("watch");
    cluster.members[lagging].partition(true);
    let mut c = cluster.members[leader].client().await;
    // One request per entry: 400 entries, snapshots every 20, the log keeps 100 behind one.
    for n in 0..400 {
        put_retrying(&mut c, &format!("s/{n:03}"), &n.to_string()).await;
    }
    cluster.members[lagging].partition(false);
    wait_local_value(&cluster, lagging, "s/399", "399").await;
    let all = l
        .get(
            "s/",
            Some(GetOptions::new().with_prefix().with_serializable()),
        )
        .await
        .expect("get");
    assert_eq!(all.kvs().len(), 400);
    let log = cluster.members[lagging].log.lock().expect("log").join("\n");
    assert!(
        log.contains("installed a snapshot from the leader"),
        "the lagging member was not caught up by a snapshot"
    );
    // The watcher saw every put, in order, across the install.
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen.len() < 400 && Instant::now() < deadline {
        let Ok(Ok(Some(resp))) =
            tokio::time::timeout(Duration::from_secs(5), events.message()).await
        else {
            break;
        };
        for e in resp.events() {
            let kv = e.kv().expect("kv");
            seen.push((kv.key_str().expect("utf8").to_string(), kv.mod_revision()));
        }
    }
    assert_eq!(seen.len(), 400, "watch events across the snapshot install");
    for (n, (key, revision)) in seen.iter().enumerate() {
        assert_eq!(key, &format!("s/{n:03}"));
        assert_eq!(*revision, start + n as i64);
    }
    // A member down through all of it catches up too, and everyone keeps following.
    cluster.members[down].kill9();
    for n in 0..100 {
        put_retrying(&mut c, &format!("t/{n:03}"), "x").await;
    }
    cluster.members[down].restart();
    put_retrying(&mut c, "s/after", "x").await;
    wait_local_value(&cluster, lagging, "s/after", "x").await;
    wait_local_value(&cluster, down, "s/after", "x").await;

    // A new member joins from a snapshot: the log it would need was purged long ago.
    let port = free_port();
    when_healthy!(c.member_add([format!("http://127.0.0.1:{port}")], None)).expect("member add");
    let j = cluster.join("joiner", port);
    wait_local_value(&cluster, j, "s/after", "x").await;
    let log = cluster.members[j].log.lock().expect("log").join("\n");
    assert!(
        log.contains("installed a snapshot from the leader"),
        "the new member did not start from a snapshot"
    );
    let mut on_joiner = cluster.members[j].client().await;
    let all = on_joiner
        .get(
            "s/",
            Some(GetOptions::new().with_prefix().with_count_only()),
        )
        .await
        .expect("linearizable count on the new member");
    assert_eq!(all.count(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_live_on_the_leader_and_survive_its_failure() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let mut f = cluster.members[follower].client().await;
    let lease = f.lease_grant(10, None).await.expect("grant").id();
    f.put(
        "leased",
        "v",
        Some(etcd_client::PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put with lease");
    // Keep-alives and TTL queries on a follower are answered by the leader.
    let (mut keeper, mut acks) = f.lease_keep_alive(lease).await.expect("keep alive");
    keeper.keep_alive().await.expect("send");
    let ack = acks.message().await.expect("ack").expect("ack");
    assert_eq!(ack.ttl(), 10);
    let ttl = f.lease_time_to_live(lease, None).await.expect("ttl").ttl();
    assert!((8..=10).contains(&ttl), "{ttl}");

    // The leader dies: the new one gives the lease a full TTL again, and it keeps working.
    cluster.members[leader].kill9();
    let _ = cluster.leader().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let ttl = loop {
        match f.lease_time_to_live(lease, None).await {
            Ok(r) => break r.ttl(),
            Err(e) => {
                assert!(Instant::now() < deadline, "ttl after failover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert!(ttl > 0, "the lease survived the leader: {ttl}");
    f.lease_revoke(lease).await.expect("revoke");
    let gone = f.get("leased", None).await.expect("get");
    assert!(gone.kvs().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_can_be_removed_and_stops() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let leader_id = cluster.id_of(leader).await;
    let follower = (leader + 1) % 3;
    let mut c = cluster.members[follower].client().await;
    let removed = when_healthy!(c.member_remove(leader_id)).expect("remove the leader");
    assert_eq!(removed.members().len(), 2);
    assert!(removed.members().iter().all(|m| m.id() != leader_id));
    // The old leader stops by itself; the other two elect a leader and take writes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cluster.members[leader].has_exited() {
        assert!(Instant::now() < deadline, "the removed leader kept running");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    put_retrying(&mut c, "after-leader-removed", "1").await;
    let log = cluster.members[leader].log.lock().expect("log").join("\n");
    assert!(log.contains("permanently removed"), "{log}");
}

/// A client of member `m` whose calls may take up to 60 s (a change waiting for a quorum).
async fn patient_client(cluster: &Cluster, m: usize) -> etcd_client::Client {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(60));
    etcd_client::Client::connect([cluster.members[m].endpoint()], Some(options))
        .await
        .expect("connect")
}

/// `--strict-reconfig-check` (default on), etcd 3.4's arithmetic with 3 started voters and one
/// of them down: adding a voter keeps 3 of 4 started (a quorum), but the leader is not
/// connected to every voter: "unhealthy cluster" (learners too, in 3.4). Removing the live
/// follower keeps 2 of 2 started, but leaves 1 active of 2: "unhealthy cluster". Removing the
/// member that is down is allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_refuses_changes_with_a_member_down() {
    let mut cluster = Cluster::start(3, &[]);
    let leader = cluster.leader().await;
    let live = (leader + 1) % 3;
    let down = (leader + 2) % 3;
    let live_id = cluster.id_of(live).await;
    let down_id = cluster.id_of(down).await;
    let mut c = cluster.members[leader].client().await;
    let learner = || Some(MemberAddOptions::new().with_is_learner());

    // Healthy (once the leader has been connected to both others for 5 s): a learner comes
    // and goes.
    let added =
        when_healthy!(c.member_add([format!("http://127.0.0.1:{}", free_port())], learner()))
            .expect("add a learner to a healthy cluster");
    c.member_remove(added.member().expect("member").id())
        .await
        .expect("remove the learner");

    cluster.members[down].kill9();
    // The leader's next heartbeat (every 100 ms) to it fails.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Through the live follower (forwarded to the leader) and the leader itself.
    let mut f = cluster.members[live].client().await;
    let url = format!("http://127.0.0.1:{}", free_port());
    let err = f
        .member_add([url.clone()], None)
        .await
        .expect_err("add a voter with a member down");
    assert_eq!(status(err), (UNAVAILABLE, UNHEALTHY.into()));
    let err = c
        .member_add([url.clone()], None)
        .await
        .expect_err("add a voter with a member down");
    assert_eq!(status(err), (UNAVAILABLE, UNHEALTHY.into()));
    let err = c
        .member_add([url], learner())
        .await
        .expect_err("add a learner with a member down");
    assert_eq!(status(err), (UNAVAILABLE, UNHEALTHY.into()));
    let err = c
        .member_remove(live_id)
        .await
        .expect_err("remove the live follower with a member down");
    assert_eq!(status(err), (UNAVAILABLE, UNHEALTHY.into()));
    let list = c.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 3, "nothing changed");
    put_retrying(&mut c, "still-writable", "1").await;

    // A member that is down is not part of the active quorum: it may go.
    let removed = c
        .member_remove(down_id)
        .await
        .expect("remove the member that is down");
    assert_eq!(removed.members().len(), 2);
    put_retrying(&mut c, "after-removing-the-down-member", "1").await;
}

/// With `--strict-reconfig-check=false` the same calls go through. Adding a voter with a member
/// down is harmless in rusd (it stays a Raft learner until it has caught up). Removing the live
/// follower is accepted; openraft's joint consensus also needs a quorum of the new membership
/// (the leader and the member that is down), so it completes once that member is back (etcd
/// would complete it at once and be left without a quorum).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_strict_reconfig_check_changes_go_through_with_a_member_down() {
    let mut cluster = Cluster::start(3, &["--strict-reconfig-check=false"]);
    let leader = cluster.leader().await;
    let live = (leader + 1) % 3;
    let down = (leader + 2) % 3;
    let live_id = cluster.id_of(live).await;
    let mut c = cluster.members[leader].client().await;

    cluster.members[down].kill9();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut f = cluster.members[live].client().await;
    let added = f
        .member_add([format!("http://127.0.0.1:{}", free_port())], None)
        .await
        .expect("add a voter with a member down");
    assert!(!added.member().expect("member").is_learner());
    c.member_add(
        [format!("http://127.0.0.1:{}", free_port())],
        Some(MemberAddOptions::new().with_is_learner()),
    )
    .await
    .expect("add a learner with a member down");
    put_retrying(&mut c, "after-adds", "1").await;

    let mut patient = patient_client(&cluster, leader).await;
    let remove = tokio::spawn(async move { patient.member_remove(live_id).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.members[down].restart();
    let removed = tokio::time::timeout(Duration::from_secs(60), remove)
        .await
        .expect("the remove completed in time")
        .expect("task")
        .expect("remove the live follower with a member down");
    assert!(removed.members().iter().all(|m| m.id() != live_id));
    assert_eq!(
        removed.members().len(),
        4,
        "leader, down, and the two added"
    );
    put_retrying(&mut c, "after-remove", "1").await;
    wait_local_value(&cluster, down, "after-remove", "1").await;
}

/// `--strict-reconfig-check` counts members that have not started (published a name): a
/// single member may get a second one before it starts (etcd's exception for restoring a
/// cluster), but not a third voter (1 of 3 started); a learner is not counted, yet the leader
/// is not connected to the unstarted voter; removing the only started member would leave
/// none started. Without the check, the third voter is added.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_reconfig_check_counts_members_that_have_not_started() {
    let cluster = Cluster::start(1, &[]);
    let me = cluster.id_of(0).await;
    let mut c = cluster.members[0].client().await;
    let url = || format!("http://127.0.0.1:{}", free_port());
    let second = c
        .member_add([url()], None)
        .await
        .expect("a second member before it starts");
    let second_id = second.member().expect("member").id();
    let err = c
        .member_add([url()], None)
        .await
        .expect_err("a third voter before the second started");
    assert_eq!(status(err), (UNKNOWN, NOT_ENOUGH_STARTED.into()));
    let err = c
        .member_add([url()], Some(MemberAddOptions::new().with_is_learner()))
        .await
        .expect_err("a learner while a voter is not connected");
    assert_eq!(status(err), (UNAVAILABLE, UNHEALTHY.into()));
    let err = c
        .member_remove(me)
        .await
        .expect_err("remove the only started member");
    assert_eq!(status(err), (UNKNOWN, NOT_ENOUGH_STARTED.into()));
    let list = c.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 2, "nothing changed");
    // The unstarted member is down, so it may go; then a second one may come again.
    c.member_remove(second_id)
        .await
        .expect("remove the unstarted member");
    c.member_add([url()], None)
        .await
        .expect("a second member again");
    put_retrying(&mut c, "k", "v").await;

    let off = Cluster::start(1, &["--strict-reconfig-check=false"]);
    let mut c = off.members[0].client().await;
    for n in 0..2 {
        c.member_add([url()], None)
            .await
            .unwrap_or_else(|e| panic!("unstarted voter {n} without the check: {e}"));
    }
    let list = c.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 3);
    put_retrying(&mut c, "k", "v").await;
}

/// A value of the member's `/metrics`.
fn metric(endpoint: &str, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(endpoint).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in:\n{text}"))
}
