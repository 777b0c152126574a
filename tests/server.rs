//! The server example, in process: real HTTP over a plain `TcpStream`.
//! Its own test binary, so `global_stats()` sees only this server's arenas.

#[path = "../examples/server/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "../examples/common/mimalloc.rs"]
mod mimalloc;

use std::io::{Read, Write};
use std::net::TcpStream;

/// Sends one request, returns (status, body).
fn request(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw[9..12].parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn field(json: &str, name: &str) -> u64 {
    let at = json
        .find(&format!("\"{name}\":"))
        .unwrap_or_else(|| panic!("no {name} in {json}"));
    json[at + name.len() + 3..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn per_request_arenas_answer_and_go() {
    let text: String = (0..2000).map(|i| format!("w{} ", (i * 7) % 97)).collect();
    let expected =
        String::from_utf8(app::count_words(&text, allocator_api2::alloc::Global)).unwrap();
    assert!(
        expected.starts_with("{\"words\":2000,\"distinct\":97,"),
        "{expected}"
    );

    for alloc in [
        app::Alloc::SmallMid,
        app::Alloc::System,
        app::Alloc::MimallocHeap,
        app::Alloc::Bumpalo,
    ] {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = rt.spawn(app::serve(listener, alloc, async {
            let _ = stopped.await;
        }));

        for _ in 0..20 {
            assert_eq!(
                request(addr, "POST", "/count", &text),
                (200, expected.clone()),
                "{alloc:?}"
            );
        }
        for route in ["/stream", "/spawn"] {
            for _ in 0..5 {
                let (status, body) = request(addr, "POST", route, &text);
                if matches!(alloc, app::Alloc::SmallMid | app::Alloc::System) {
                    assert_eq!((status, body), (200, expected.clone()), "{alloc:?} {route}");
                } else {
                    assert_eq!(status, 501, "{alloc:?} {route}: {body}");
                }
            }
        }
        assert_eq!(request(addr, "GET", "/nowhere", "").0, 404);

        let (status, stats) = request(addr, "GET", "/stats", "");
        assert_eq!(status, 200);
        assert_eq!(
            field(&stats, "arenas_alive"),
            0,
            "every request's arena is gone: {stats}"
        );

        let _ = stop.send(());
        rt.block_on(server).unwrap();
    }
}
