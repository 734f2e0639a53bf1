//! Slow, silent, idle and non-reading clients are cut off on every gateway listener (plain
//! and TLS), and a connection over `server.max_connections` gets a clear 503. The exact
//! clocks are unit-tested on a paused clock (`src/server/io.rs`); these tests check the
//! wiring on real sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// The limits of these tests: short, so a cut-off shows within seconds. Each cut-off is
/// checked to come no sooner than half its own timeout; the exact clocks are unit-tested.
const HEADER_TIMEOUT_MS: u64 = 600;
const KEEP_ALIVE_TIMEOUT_MS: u64 = 2000;
const BODY_TIMEOUT_MS: u64 = 1500;
const SEND_TIMEOUT_MS: u64 = 1000;

/// Longest a cut-off may take to show: the timeout plus room for a loaded machine.
const CUT_OFF_WITHIN: Duration = Duration::from_secs(5);

fn listener_toml(extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
header_timeout_ms = {HEADER_TIMEOUT_MS}
keep_alive_timeout_ms = {KEEP_ALIVE_TIMEOUT_MS}
body_timeout_ms = {BODY_TIMEOUT_MS}
send_timeout_ms = {SEND_TIMEOUT_MS}
{extra_server}

[redis]
url = "memory://"

[log]
level = "warn"

[[clients]]
name = "all"
key = "{KEY}"
accounts = ["*"]

[[accounts]]
id = "acme"
subdomain = "acme"
base_url = "http://127.0.0.1:9"
email = "admin@acme.example"
api_token = "tok-acme"
"#,
        port = free_port()
    )
}

fn addr_of(gw: &TestGateway) -> String {
    gw.base.trim_start_matches("http://").to_string()
}

/// Reads until the peer closes the connection; returns what arrived and how long the
/// close took. Fails the test if the connection is still open after [`CUT_OFF_WITHIN`].
async fn read_until_closed<S: AsyncRead + Unpin>(stream: &mut S) -> (String, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + CUT_OFF_WITHIN),
            stream.read(&mut buf),
        )
        .await
        {
            Err(_) => panic!(
                "connection still open after {CUT_OFF_WITHIN:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// Reads one whole response with a `content-length` (the connection stays open).
async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(CUT_OFF_WITHIN, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("readable");
        assert!(n > 0, "closed before a whole response");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// Waits for the gateway to close `stream`, no sooner than `at_least` from now.
async fn assert_cut_off<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    what: &str,
    at_least: u64,
) -> String {
    let (got, took) = read_until_closed(stream).await;
    assert!(
        took >= Duration::from_millis(at_least),
        "{what}: closed too early ({took:?}), got {got:?}"
    );
    got
}

#[tokio::test]
async fn stalled_plain_clients_are_cut_off() {
    let gw = spawn_gateway(config(&listener_toml(""))).await;
    let addr = addr_of(&gw);

    // Sends nothing at all after connecting.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let got = assert_cut_off(&mut silent, "silent client", HEADER_TIMEOUT_MS / 2).await;
    assert!(!got.contains("200 OK"), "{got}");

    // Stalls inside its headers.
    let mut headers = TcpStream::connect(&addr).await.unwrap();
    headers
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
        .await
        .unwrap();
    let got = assert_cut_off(&mut headers, "stalled headers", HEADER_TIMEOUT_MS / 2).await;
    assert!(!got.contains("200 OK"), "{got}");

    // Stalls inside its body: answered 408 naming the timeout, then closed.
    let mut body = TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        format!(
            "POST /v1/accounts/acme/notify HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 200\r\n\r\n{{\"app_id\": 1,"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let got = assert_cut_off(&mut body, "stalled body", BODY_TIMEOUT_MS / 2).await;
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("\"body_timeout\""), "{got}");
    assert!(
        got.to_ascii_lowercase().contains("connection: close"),
        "{got}"
    );

    // Trickles its body a byte at a time: cut off at the body deadline all the same.
    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    trickle
        .write_all(
            format!(
                "POST /v1/accounts/acme/notify HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while started.elapsed() < CUT_OFF_WITHIN {
        let _ = trickle.write_all(b" ").await;
        if let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(100), trickle.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() >= Duration::from_millis(BODY_TIMEOUT_MS / 2),
        "cut off after {:?}, before the body timeout",
        started.elapsed()
    );

    // A kept-alive connection left idle after its answer: it outlives the header
    // timeout (still usable), then is closed at the keep-alive timeout.
    let mut idle = TcpStream::connect(&addr).await.unwrap();
    for _ in 0..2 {
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut idle).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        tokio::time::sleep(Duration::from_millis(HEADER_TIMEOUT_MS * 3 / 2)).await;
    }
    assert_cut_off(&mut idle, "idle keep-alive", KEEP_ALIVE_TIMEOUT_MS / 4).await;

    gw.shutdown().await;
}

/// A body that arrives within its deadline is read, however long that takes past the
/// header timeout: the head's clock stops once the head is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_keeps_coming_in_time_is_read() {
    let gw = spawn_gateway(config(&listener_toml(""))).await;
    let mut stream = TcpStream::connect(addr_of(&gw)).await.unwrap();
    let body = br#"{"app_id": 1, "event": "e"}"#;
    stream
        .write_all(
            format!(
                "POST /v1/accounts/acme/notify HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer {KEY}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Half the body now, the rest past the header timeout but inside the body timeout.
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(HEADER_TIMEOUT_MS + 100)).await;
    stream.write_all(&body[10..]).await.unwrap();
    let answer = read_response(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    gw.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_get_a_clear_503() {
    // No clock may free a slot here: only a held connection closing does.
    let gw = spawn_gateway(config(
        &listener_toml("max_connections = 2")
            .replace(
                &format!("header_timeout_ms = {HEADER_TIMEOUT_MS}"),
                "header_timeout_ms = 30000",
            )
            .replace(
                &format!("keep_alive_timeout_ms = {KEEP_ALIVE_TIMEOUT_MS}"),
                "keep_alive_timeout_ms = 30000",
            ),
    ))
    .await;
    let addr = addr_of(&gw);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
            .await
            .unwrap();
        let answer = read_response(&mut s).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(s);
    }
    let mut over = TcpStream::connect(&addr).await.unwrap();
    let (got, _) = read_until_closed(&mut over).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("\"too_many_connections\""), "{got}");
    assert!(got.to_ascii_lowercase().contains("retry-after: 1"), "{got}");

    // A slot frees when a held connection closes.
    drop(held.pop());
    wait_for_async_ok(&addr).await;
    drop(held);
    gw.shutdown().await;
}

/// A client that sends requests but never reads the answers is disconnected once a write
/// has waited `send_timeout` for it, which frees its slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_cut_off() {
    let gw = spawn_gateway(config(&listener_toml("max_connections = 1"))).await;
    let addr = addr_of(&gw);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut deaf = socket.connect(addr.parse().unwrap()).await.unwrap();
    // Pipelined requests whose answers (the OpenAPI document, tens of KiB each) fill
    // every buffer between the two ends.
    let request = b"GET /openapi.json HTTP/1.1\r\nHost: relay\r\n\r\n".repeat(400);
    deaf.write_all(&request).await.unwrap();
    // While it holds the only slot, another client is refused...
    let mut other = TcpStream::connect(&addr).await.unwrap();
    let (got, _) = read_until_closed(&mut other).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    // ...until its stalled write times out.
    wait_for_async_ok(&addr).await;
    drop(deaf);
    gw.shutdown().await;
}

/// Waits until a new connection is served (its slot was freed), failing after a while.
async fn wait_for_async_ok(addr: &str) {
    let deadline = Instant::now() + CUT_OFF_WITHIN;
    loop {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (got, _) = read_until_closed(&mut s).await;
        if got.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed after a held connection closed: {got}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stalled_tls_clients_are_cut_off() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("relay.pem");
    let key = dir.path().join("relay.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let gw = spawn_gateway(config(&listener_toml(&format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    ))))
    .await;
    let addr = addr_of(&gw);

    // Connects and never starts the handshake.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    assert_cut_off(&mut silent, "silent TLS client", HEADER_TIMEOUT_MS / 2).await;

    // Finishes the handshake, then stalls inside its headers.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut stream = connector.connect(name, tcp).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: relay\r\n")
        .await
        .unwrap();
    stream.flush().await.unwrap();
    let got = assert_cut_off(&mut stream, "stalled TLS headers", HEADER_TIMEOUT_MS / 4).await;
    assert!(!got.contains("200 OK"), "{got}");
    gw.shutdown().await;
}
