//! The server's routes and handler, shared by `examples/server` and its
//! integration test (`tests/server.rs`).
//!
//! - `POST /count`: counts the words of the body and answers the top 20 as
//!   JSON. The work runs in a fresh per-request allocator (a
//!   `SmallMidArena`, or the peer chosen with `--alloc`), created after the
//!   body is read and dropped before the response is built.
//! - `POST /stream`: the same answer, but the arena is created when the
//!   request starts and lives across every `.await` while body chunks are
//!   collected into an arena buffer, on whichever runtime thread polls the
//!   future. Only smallmid can do this: a mimalloc heap is bound to its
//!   thread and a bumpalo `Bump` is not `Sync`.
//! - `POST /spawn`: the work runs in a `tokio::spawn`ed task that owns a
//!   `SharedArena` handle (`'static`) and the body buffer in it; the
//!   handler awaits the task's answer.
//! - `GET /stats`: `smallmid::global_stats()` as JSON.
//!
//! `/stream` and `/spawn` run with `--alloc smallmid` or `system`; a
//! mimalloc heap is bound to its thread and a `Bump` is not `Sync`, so they
//! answer 501 there.

use crate::mimalloc::MiHeap;
use allocator_api2::alloc::{Allocator, Global};
use allocator_api2::vec::Vec as AVec;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use smallmid::{SharedArena, SmallMidArena};
use std::fmt::Write as _;

/// The allocator a request's work runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alloc {
    SmallMid,
    System,
    MimallocHeap,
    Bumpalo,
}

impl Alloc {
    pub fn parse(s: &str) -> Option<Alloc> {
        Some(match s {
            "smallmid" => Alloc::SmallMid,
            "system" => Alloc::System,
            "mimalloc-heap" => Alloc::MimallocHeap,
            "bumpalo" => Alloc::Bumpalo,
            _ => return None,
        })
    }
}

/// Counts the words of `text` with every structure in `a`: a hash map of
/// word counts, a sorted vector of the top 20, the rendered JSON. Only the
/// answer is copied out.
pub fn count_words<A: Allocator + Copy>(text: &str, a: A) -> Vec<u8> {
    let mut counts: hashbrown::HashMap<&str, u32, hashbrown::DefaultHashBuilder, A> =
        hashbrown::HashMap::with_hasher_in(Default::default(), a);
    let mut words = 0u32;
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        *counts.entry(w).or_insert(0) += 1;
        words += 1;
    }
    let mut top: AVec<(&str, u32), A> = AVec::with_capacity_in(counts.len(), a);
    top.extend(counts.iter().map(|(w, c)| (*w, *c)));
    top.sort_unstable_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(y.0)));
    top.truncate(20);
    let mut out: AVec<u8, A> = AVec::with_capacity_in(64 + 24 * top.len(), a);
    out.extend_from_slice(
        format!(
            "{{\"words\":{words},\"distinct\":{},\"top\":[",
            counts.len()
        )
        .as_bytes(),
    );
    for (i, (w, c)) in top.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'[');
        out.push(b'"');
        out.extend_from_slice(w.as_bytes()); // alphanumeric: nothing to escape
        out.extend_from_slice(format!("\",{c}]").as_bytes());
    }
    out.extend_from_slice(b"]}\n");
    out.to_vec()
}

/// `global_stats()` as JSON.
pub fn stats_json() -> String {
    let g = smallmid::global_stats();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{{\"arenas_alive\":{},\"threads\":{},\"superslabs_in_use\":{},\"warm_superslabs\":{},\"warm_bytes\":{},\"mmaps\":{},\"munmaps\":{}}}",
        g.arenas_alive, g.threads, g.superslabs_in_use, g.warm_superslabs, g.warm_bytes, g.mmaps, g.munmaps
    );
    s
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r
}

/// Handles one request.
pub async fn handle(
    req: Request<Incoming>,
    alloc: Alloc,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/stats") => answer(StatusCode::OK, stats_json()),
        (&Method::POST, "/count") => {
            let body = req.into_body().collect().await?.to_bytes();
            let text = String::from_utf8_lossy(&body);
            // Synchronous from here to the end of the arena's life, so every
            // allocator can serve it.
            let json = match alloc {
                Alloc::SmallMid => {
                    let arena = SmallMidArena::new();
                    count_words(&text, &arena)
                }
                Alloc::System => count_words(&text, Global),
                Alloc::MimallocHeap => {
                    let heap = MiHeap::new();
                    count_words(&text, &heap)
                }
                Alloc::Bumpalo => {
                    let bump = bumpalo::Bump::new();
                    count_words(&text, &bump)
                }
            };
            answer(StatusCode::OK, json)
        }
        (&Method::POST, "/stream") if alloc == Alloc::SmallMid => {
            let arena = SmallMidArena::new(); // lives across the awaits below
            answer(StatusCode::OK, stream(req.into_body(), &arena).await?)
        }
        (&Method::POST, "/stream") if alloc == Alloc::System => {
            answer(StatusCode::OK, stream(req.into_body(), Global).await?)
        }
        (&Method::POST, "/spawn") if alloc == Alloc::SmallMid => {
            let arena = SharedArena::new();
            let mut buf = AVec::new_in(arena.clone());
            collect_into(req.into_body(), &mut buf).await?;
            // The task owns a handle and the buffer: 'static, any thread.
            let task = tokio::spawn(async move {
                tokio::task::yield_now().await; // may resume on another worker
                let text = String::from_utf8_lossy(&buf);
                count_words(&text, &*arena)
            });
            answer(StatusCode::OK, task.await.unwrap_or_default())
        }
        (&Method::POST, "/spawn") if alloc == Alloc::System => {
            let mut buf = AVec::new_in(Global);
            collect_into(req.into_body(), &mut buf).await?;
            let task = tokio::spawn(async move {
                tokio::task::yield_now().await;
                let text = String::from_utf8_lossy(&buf);
                count_words(&text, Global)
            });
            answer(StatusCode::OK, task.await.unwrap_or_default())
        }
        (&Method::POST, "/stream" | "/spawn") => answer(
            StatusCode::NOT_IMPLEMENTED,
            "this route keeps an allocator across awaits on any thread: --alloc smallmid or system\n",
        ),
        _ => answer(
            StatusCode::NOT_FOUND,
            "routes: POST /count, POST /stream, POST /spawn, GET /stats\n",
        ),
    })
}

/// Appends every chunk of `body` to `buf`, across awaits.
async fn collect_into<A: Allocator>(
    mut body: Incoming,
    buf: &mut AVec<u8, A>,
) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    Ok(())
}

/// `/stream`: the buffer lives in `a` across every await.
async fn stream<A: Allocator + Copy>(body: Incoming, a: A) -> Result<Vec<u8>, hyper::Error> {
    let mut buf = AVec::new_in(a);
    collect_into(body, &mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    Ok(count_words(&text, a))
}

/// Serves connections from `listener` until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    alloc: Alloc,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, alloc));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            () = &mut stop => return,
        }
    }
}
