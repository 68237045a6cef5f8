//! Real HTTP against a spawned server (the same `serve_connection` as the binary), over raw
//! HTTP/1.1 so a test can stop reading, or drop the connection, at an exact event. The client
//! side is plain blocking `std::net` (the crate's tokio has no `io-util`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

use crate::server::{App, Keys};

/// The server runs on its own runtime's workers until the returned runtime is dropped.
fn spawn_server() -> (Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = Arc::new(App::new("t".into(), Keys::default()).unwrap());
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            tokio::spawn(crate::serve_connection(app.clone(), stream, peer));
        }
    });
    (rt, addr)
}

/// Sends one request (`connection: close`) and returns the open connection.
fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> TcpStream {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: mock\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    s
}

/// The status and the raw body (chunk framing included for streams), read to the end.
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> (u16, String) {
    let mut s = send(addr, method, path, headers, body);
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn usage(addr: SocketAddr) -> Value {
    let (status, body) = call(addr, "GET", "/_mock/usage", &[], None);
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

const OPENAI: (&str, &str) = ("authorization", "Bearer sk-test");
const ANTHROPIC: [(&str, &str); 2] = [
    ("x-api-key", "ak-test"),
    ("anthropic-version", "2023-06-01"),
];

#[test]
fn usage_ledger_over_http() {
    let (_rt, addr) = spawn_server();

    // Complete answers are counted by the time the client has read them.
    let chat = json!({"model": "gpt-4o-mini", "max_tokens": 5, "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello to the world"}]});
    let (st, _) = call(addr, "POST", "/v1/chat/completions", &[OPENAI], Some(&chat));
    assert_eq!(st, 200);
    let u = usage(addr);
    assert_eq!(
        (&u["requests"], &u["prompt_tokens"]),
        (&json!(1), &json!(14))
    );
    assert_eq!(u["completion_tokens"], 5);

    let emb = json!({"model": "text-embedding-3-small", "input": ["hello world", "x"]});
    let (st, _) = call(addr, "POST", "/v1/embeddings", &[OPENAI], Some(&emb));
    assert_eq!(st, 200);

    let msg = json!({"model": "claude-x", "max_tokens": 4, "system": "be kind",
                     "messages": [{"role": "user", "content": "hello there"}]});
    let (st, _) = call(addr, "POST", "/v1/messages", &ANTHROPIC, Some(&msg));
    assert_eq!(st, 200);

    let azure = json!({"messages": [{"role": "user", "content": "a b"}], "stream": true,
                       "stream_options": {"include_usage": true}});
    let (st, body) = call(
        addr,
        "POST",
        "/openai/deployments/dep-east/chat/completions?api-version=2024-10-21",
        &[("api-key", "az"), ("x-mock-completion-tokens", "4")],
        Some(&azure),
    );
    assert!(st == 200 && body.contains("data: [DONE]"));

    let msg_stream = json!({"model": "claude-x", "max_tokens": 100, "stream": true,
                            "messages": [{"role": "user", "content": "x y"}]});
    let h = [
        ANTHROPIC[0],
        ANTHROPIC[1],
        ("x-mock-completion-tokens", "2"),
    ];
    let (st, body) = call(addr, "POST", "/v1/messages", &h, Some(&msg_stream));
    assert!(st == 200 && body.contains("event: message_stop"));
    let u = usage(addr);
    assert_eq!((&u["requests"], &u["streams_cut"]), (&json!(5), &json!(0)));

    // Not charged: injected and validation errors, count_tokens, the model list.
    let h = [OPENAI, ("x-mock-status", "503")];
    assert_eq!(
        call(addr, "POST", "/v1/chat/completions", &h, Some(&chat)).0,
        503
    );
    let bad = json!({"model": "m"});
    assert_eq!(
        call(addr, "POST", "/v1/chat/completions", &[OPENAI], Some(&bad)).0,
        400
    );
    let ct = json!({"model": "c", "messages": [{"role": "user", "content": "a"}]});
    let path = "/v1/messages/count_tokens";
    assert_eq!(call(addr, "POST", path, &ANTHROPIC, Some(&ct)).0, 200);
    assert_eq!(call(addr, "GET", "/v1/models", &[OPENAI], None).0, 200);

    // A stream stalled after 3 of its 10 tokens, dropped by the client once it has read them.
    let cut = json!({"model": "gpt-4o-mini", "stream": true,
                     "messages": [{"role": "user", "content": "one two"}]});
    let h = [
        OPENAI,
        ("x-mock-completion-tokens", "10"),
        ("x-mock-stream-stall-after", "3"),
    ];
    let mut s = send(addr, "POST", "/v1/chat/completions", &h, Some(&cut));
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains(r#"" tok2""#) {
        let n = s.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "stream ended early: {}",
            String::from_utf8_lossy(&seen)
        );
        seen.extend_from_slice(&buf[..n]);
    }
    drop(s);
    // The cut is charged once the server notices the client left.
    let mut u = usage(addr);
    for _ in 0..100 {
        if u["streams_cut"] == 1 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
        u = usage(addr);
    }
    assert_eq!(
        u,
        json!({
            "requests": 6,
            // chat, embeddings, messages, Azure stream, messages stream, the cut stream
            "prompt_tokens": 14 + 3 + 7 + 5 + 5 + 5,
            "completion_tokens": 5 + 4 + 4 + 2 + 3, // embeddings: none
            "total_tokens": 39 + 18,
            "streams_cut": 1,
            "by_model": {
                "claude-x": {"requests": 2, "prompt_tokens": 12, "completion_tokens": 6},
                "dep-east": {"requests": 1, "prompt_tokens": 5, "completion_tokens": 4},
                "gpt-4o-mini": {"requests": 2, "prompt_tokens": 19, "completion_tokens": 8},
                "text-embedding-3-small": {"requests": 1, "prompt_tokens": 3, "completion_tokens": 0},
            }
        })
    );

    let (st, body) = call(addr, "DELETE", "/_mock/usage", &[], None);
    assert_eq!((st, body.as_str()), (200, r#"{"cleared":true}"#));
    assert_eq!(
        usage(addr),
        json!({"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
               "streams_cut": 0, "by_model": {}})
    );
}

#[test]
fn usage_ledger_is_exact_under_concurrent_requests() {
    let (_rt, addr) = spawn_server();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            std::thread::spawn(move || {
                // "a b c" = 3 + 3 prompt tokens; 2 or 3 completion tokens, half of them streamed.
                let body = json!({"model": "m", "stream": i % 2 == 0,
                                  "messages": [{"role": "user", "content": "a b c"}]});
                let n = if i % 4 < 2 { "2" } else { "3" };
                let h = [OPENAI, ("x-mock-completion-tokens", n)];
                call(addr, "POST", "/v1/chat/completions", &h, Some(&body)).0
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.join().unwrap(), 200);
    }
    let u = usage(addr);
    assert_eq!(u["requests"], 40);
    assert_eq!(u["prompt_tokens"], 40 * 6);
    assert_eq!(u["completion_tokens"], 20 * 2 + 20 * 3);
    assert_eq!(u["streams_cut"], 0);
    assert_eq!(u["by_model"]["m"]["requests"], 40);
}
