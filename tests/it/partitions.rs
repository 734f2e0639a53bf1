//! The partition count is recorded in Redis on first use; a process configured with
//! another count refuses to start, and one with no count set uses the recorded one. A
//! starting process loads the queue's scripts into the store; a script the store does
//! not hold is sent with its source.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use zenrelay::app::Gateway;

use crate::support::{
    binary, config, gateway_toml, masters_of, resp_command, shared_cluster, spawn_sim, RedisServer,
};

#[tokio::test]
async fn a_process_with_another_partition_count_refuses_to_start() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let text = gateway_toml(&redis.url(), "parts", &sim, &["acme"], "");
    // The first process records its count (4, in gateway_toml).
    let first = Gateway::build(config(&text))
        .await
        .expect("first process starts");
    assert_eq!(
        redis
            .command(&["HGET", "parts:meta", "partitions"])
            .as_deref(),
        Some("$1\r\n4\r\n")
    );
    // Another in-process gateway with the same count starts.
    Gateway::build(config(&text))
        .await
        .expect("same count starts");
    // One with another count does not, and says why.
    let other = text.replace("partitions = 4", "partitions = 8");
    let err = Gateway::build(config(&other))
        .await
        .err()
        .expect("another count is refused")
        .to_string();
    for part in ["redis.partitions", "8", "4"] {
        assert!(err.contains(part), "{part:?} missing from: {err}");
    }
    // Nor does a `zenrelay serve` process: it exits with the message.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(other.as_bytes()).unwrap();
    let mut child = Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(file.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "zenrelay serve kept running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("redis.partitions is 8") && stderr.contains("with 4 partitions"),
        "{stderr}"
    );
    drop(first);
}

#[tokio::test]
async fn a_process_without_a_count_uses_the_recorded_one() {
    let redis = RedisServer::start();
    let sim = spawn_sim(&["acme"], 1000, 60).await;
    let text = gateway_toml(&redis.url(), "adopt", &sim, &["acme"], "");
    let unset = text.replace("partitions = 4\n", "");
    assert!(!config(&unset).redis.partitions_set);
    // A new store gets the default, recorded by the first process.
    let fresh = text
        .replace("partitions = 4\n", "")
        .replace("\"adopt\"", "\"fresh\"");
    let first = crate::support::spawn_gateway(config(&fresh)).await;
    let api = crate::support::Api::from(&first);
    let id = api
        .accept("acme", &serde_json::json!({"app_id": 1, "event": "e"}))
        .await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    assert_eq!(
        redis
            .command(&["HGET", "fresh:meta", "partitions"])
            .as_deref(),
        Some(format!("$2\r\n{}\r\n", zenrelay::config::DEFAULT_PARTITIONS).as_str())
    );
    first.shutdown().await;
    // A store written with 4 partitions keeps them for a process that sets none.
    let writer = crate::support::spawn_gateway(config(&text)).await;
    crate::support::Api::from(&writer)
        .accept("acme", &serde_json::json!({"app_id": 1, "event": "e"}))
        .await;
    writer.shutdown().await;
    let gw = crate::support::spawn_gateway(config(&unset)).await;
    let api = crate::support::Api::from(&gw);
    let id = api
        .accept("acme", &serde_json::json!({"app_id": 1, "event": "after"}))
        .await;
    api.wait_status(&id, "delivered", Duration::from_secs(10))
        .await;
    assert_eq!(
        redis
            .command(&["HGET", "adopt:meta", "partitions"])
            .as_deref(),
        Some("$1\r\n4\r\n")
    );
    assert_eq!(sim.received("acme").len(), 3);
    gw.shutdown().await;
}

#[tokio::test]
async fn the_embedded_store_refuses_a_queue_with_another_partition_count() {
    use zenrelay::queue::redis::HELPERS;
    use zenrelay::queue::{Queue, QueueError};

    let mut config = zenrelay::config::Config::default();
    config.redis.url = "memory://".into();
    config.redis.key_prefix = "parts".into();
    config.redis.partitions = 4;
    let first = zenrelay::app::memory_queue(&config);
    first
        .check_deployment()
        .await
        .expect("the first records its count");
    // The same store, as another process with the same and with another count sees it.
    first
        .sibling(4, HELPERS)
        .check_deployment()
        .await
        .expect("same count starts");
    let other = first.sibling(8, HELPERS);
    let err = other.check_deployment().await.unwrap_err();
    assert!(matches!(err, QueueError::Mismatch(_)), "{err}");
    let text = err.to_string();
    for part in ["redis.partitions is 8", "with 4 partitions", "parts:meta"] {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    // Nor does it use the store for anything else.
    assert!(matches!(
        other.claim(0, 1).await,
        Err(QueueError::Mismatch(_))
    ));
    assert!(matches!(other.stats().await, Err(QueueError::Mismatch(_))));
}

#[tokio::test]
async fn the_recorded_count_is_read_from_the_store() {
    let redis = RedisServer::start();
    let mut config = zenrelay::config::Config::default();
    config.redis.url = redis.url().into();
    let count = |prefix: &str| {
        let mut config = config.clone();
        config.redis.key_prefix = prefix.to_string();
        async move {
            zenrelay::app::queue_for(&config)
                .expect("queue builds")
                .recorded_partitions()
                .await
                .expect("Redis answers")
        }
    };
    // A new store: none.
    assert_eq!(count("new").await, None);
    // A store that recorded its count.
    redis.command(&["HSET", "rec:meta", "partitions", "8"]);
    assert_eq!(count("rec").await, Some(8));
    // Data of the release before counts were recorded: that release's default.
    redis.command(&["SADD", "old:{p3}:accounts", "acme"]);
    assert_eq!(
        count("old").await,
        Some(zenrelay::queue::layout::UNRECORDED_PARTITIONS)
    );
}

/// Whether the Redis at `port` holds the library `name` (a script's: see `Script`).
fn holds_script(port: u16, name: &str) -> bool {
    resp_command(port, &["FUNCTION", "LIST", "LIBRARYNAME", name])
        .is_some_and(|reply| reply.contains(name))
}

#[tokio::test]
async fn a_starting_process_loads_the_queue_scripts_into_every_master() {
    use zenrelay::queue::cluster::ClusterQueue;
    use zenrelay::queue::Queue;
    // A lease of its own gives the claim script (whose text holds the process's settings)
    // a name no other test's process loads.
    let lease_ms = 60_000 + u64::from(uuid::Uuid::now_v7().as_u128() as u16);
    let mut settings = zenrelay::config::Config::default();
    settings.delivery.lease_ms = Some(lease_ms);
    settings.redis.key_prefix = format!("loads-{lease_ms}");

    let redis = RedisServer::start();
    settings.redis.url = redis.url().into();
    let queue = zenrelay::app::redis_queue(&settings).expect("queue builds");
    let scripts: Vec<String> = queue
        .scripts()
        .iter()
        .map(|(_, s)| s.name().to_string())
        .collect();
    assert!(!scripts.iter().any(|name| holds_script(redis.port, name)));
    queue.check_deployment().await.expect("the store is fine");
    for (name, script) in queue.scripts() {
        assert!(holds_script(redis.port, script.name()), "{name} not loaded");
    }

    let urls = shared_cluster();
    settings.redis.cluster_nodes = urls.iter().cloned().map(Into::into).collect();
    let queue =
        ClusterQueue::new(zenrelay::app::redis_queue_config(&settings)).expect("queue builds");
    let masters = masters_of(&urls);
    assert_eq!(masters.len(), 3);
    let claim = queue
        .scripts()
        .into_iter()
        .find_map(|(name, script)| (name == "claim").then(|| script.clone()))
        .expect("a claim script");
    assert!(!masters.iter().any(|&port| holds_script(port, claim.name())));
    queue.check_deployment().await.expect("the cluster is fine");
    for &port in &masters {
        for (name, script) in queue.scripts() {
            assert!(
                holds_script(port, script.name()),
                "{name} not loaded on {port}"
            );
        }
    }

    // Masters that lose the claim's library (its name is this test's alone) get it again
    // at the next claim, which then succeeds.
    for &port in &masters {
        assert_eq!(
            resp_command(port, &["FUNCTION", "DELETE", claim.name()]).as_deref(),
            Some("+OK\r\n")
        );
    }
    deliver_one(&queue, "after-the-loss").await;
    for &port in &masters {
        assert!(
            holds_script(port, claim.name()),
            "claim not loaded again on {port}"
        );
    }
}

/// A store that has lost the queue's functions (`FUNCTION FLUSH`, as after a restart
/// without persistence) gets each library again at its first call, which then succeeds.
#[tokio::test]
async fn functions_the_store_lost_are_loaded_again() {
    let redis = RedisServer::start();
    let queue = started_queue(redis.url()).await;
    deliver_one(&queue, "first").await;
    assert_eq!(
        resp_command(redis.port, &["FUNCTION", "FLUSH"]).as_deref(),
        Some("+OK\r\n")
    );
    for (name, script) in queue.scripts() {
        assert!(
            !holds_script(redis.port, script.name()),
            "{name} still held"
        );
    }
    deliver_one(&queue, "second").await;
    for (name, script) in queue.scripts() {
        if DELIVERY_SCRIPTS.contains(&name) {
            assert!(holds_script(redis.port, script.name()), "{name} not loaded");
        }
    }
}

/// A store that refuses functions and `SCRIPT LOAD` (here, to the gateway's user, by its
/// ACL, as a Redis before 7.0 refuses `FUNCTION`) lets the process start with a warning,
/// and the queue works: the scripts run as plain scripts, each sent with its source at
/// its first call, as it is again once the store has lost them (`SCRIPT FLUSH`).
#[tokio::test]
async fn a_store_that_refuses_functions_runs_the_plain_scripts() {
    let redis = RedisServer::start();
    let acl = [
        "ACL",
        "SETUSER",
        "gateway",
        "on",
        ">secret",
        "~*",
        "&*",
        "+@all",
        "-function",
        "-fcall",
        "-script|load",
    ];
    assert_eq!(resp_command(redis.port, &acl).as_deref(), Some("+OK\r\n"));
    // (a store that refuses the loads is not an error)
    let queue = started_queue(format!("redis://gateway:secret@127.0.0.1:{}/0", redis.port)).await;
    for (name, script) in queue.scripts() {
        assert!(
            !holds_script(redis.port, script.name()),
            "{name} was loaded"
        );
        assert!(!holds_plain(redis.port, script.sha()), "{name} was loaded");
    }

    deliver_one(&queue, "first").await;
    for (name, script) in queue.scripts() {
        if DELIVERY_SCRIPTS.contains(&name) {
            assert!(holds_plain(redis.port, script.sha()), "{name} not sent");
        }
    }
    assert_eq!(
        resp_command(redis.port, &["SCRIPT", "FLUSH"]).as_deref(),
        Some("+OK\r\n")
    );
    deliver_one(&queue, "second").await;
}

/// A Redis that refuses writes (here out of memory) still answers the queue's reads: its
/// scripts that write nothing are functions without writes, which Redis runs then.
#[tokio::test]
async fn a_store_that_refuses_writes_still_answers_the_reads() {
    use zenrelay::domain::EventId;
    use zenrelay::queue::Queue;

    let redis = RedisServer::start();
    let queue = started_queue(redis.url()).await;
    deliver_one(&queue, "before").await;
    let some = EventId::new(0);
    assert_eq!(
        resp_command(redis.port, &["CONFIG", "SET", "maxmemory", "1"]).as_deref(),
        Some("+OK\r\n")
    );
    queue.stats().await.expect("stats while writes are refused");
    assert!(queue.event(&some).await.expect("an event read").is_none());
    queue
        .dead_letters("acme", 0, 10)
        .await
        .expect("dead letters read");
    assert_eq!(
        resp_command(redis.port, &["CONFIG", "SET", "maxmemory", "0"]).as_deref(),
        Some("+OK\r\n")
    );
}

/// A queue of two partitions on the Redis at `url`, started as a process starts it (its
/// deployment checked, its scripts loaded).
async fn started_queue(url: String) -> zenrelay::queue::redis::RedisQueue {
    use zenrelay::queue::Queue;
    let mut settings = zenrelay::config::Config::default();
    settings.redis.url = url.into();
    settings.redis.partitions = 2;
    let queue = zenrelay::app::redis_queue(&settings).expect("queue builds");
    queue.check_deployment().await.expect("the process starts");
    queue
}

/// The scripts a delivery runs (`deliver_one`).
const DELIVERY_SCRIPTS: [&str; 3] = ["enqueue", "claim", "complete"];

/// Whether the Redis at `port` holds the plain script of digest `sha`.
fn holds_plain(port: u16, sha: &str) -> bool {
    resp_command(port, &["SCRIPT", "EXISTS", sha]).as_deref() == Some("*1\r\n:1\r\n")
}

/// Stores an event named `name` for one account, claims it and records its success.
async fn deliver_one(queue: &impl zenrelay::queue::Queue, name: &str) {
    use zenrelay::domain::{partition_of, EventId};
    use zenrelay::queue::{Completion, EnqueueBatch, Outcome, RateLimit};
    let account = "acme";
    let id = EventId::new(partition_of(account, queue.partitions()));
    let out = queue
        .enqueue(EnqueueBatch {
            account: account.into(),
            limit: RateLimit {
                limit: 100,
                window_ms: 60_000,
            },
            max_depth: 1000,
            idempotency_ttl_secs: 60,
            events: vec![crate::support::plain_event(id, name)],
        })
        .await
        .expect("stored");
    let id = crate::support::stored(&out[0]);
    let claimed = queue
        .claim(id.partition(), 10)
        .await
        .expect("claimed")
        .items;
    assert_eq!(claimed.len(), 1);
    let ok = Outcome::Delivered { status: 200 };
    queue
        .complete(&[Completion::of(&claimed[0], ok)])
        .await
        .expect("completed");
    let record = queue.event(&id).await.expect("read").expect("the event");
    assert_eq!(record.status, "delivered");
}
