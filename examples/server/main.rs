//! An HTTP/1.1 server (hyper 1 on tokio's multi-threaded runtime) that gives
//! every request its own allocator; see `app.rs` for the routes.
//!
//! ```sh
//! cargo run --release --example server -- --port 8080 --alloc smallmid
//! curl -s --data-binary @README.md localhost:8080/count
//! curl -s localhost:8080/stats
//! ```
//!
//! `--alloc smallmid|system|mimalloc-heap|bumpalo` picks the per-request
//! allocator; `scripts/load.sh` runs wrk against each.

mod app;
#[path = "../common/mimalloc.rs"]
mod mimalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let port: u16 = arg("--port").map_or(8080, |p| p.parse().expect("--port takes a number"));
    let alloc = arg("--alloc").map_or(app::Alloc::SmallMid, |a| {
        app::Alloc::parse(&a).expect("--alloc takes smallmid, system, mimalloc-heap or bumpalo")
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind 127.0.0.1");
        println!(
            "listening on http://{} with {alloc:?} per request",
            listener.local_addr().unwrap()
        );
        app::serve(listener, alloc, std::future::pending()).await;
    });
}
