//! A tree of `ArenaBox` nodes per request.
//!
//! Each "request" parses a line of words into a binary search tree whose
//! nodes and keys live in a fresh arena, answers a few queries, and drops
//! the arena. The same handler with `Box` and `String` runs beside it.
//!
//! ```sh
//! cargo run --release --example tree
//! ```

use smallmid::{ArenaBox, SmallMidArena};
use std::time::Instant;

/// A node: two children and a key, all in the request's arena.
struct Node<'a> {
    key: ArenaBox<'a, str>,
    count: u32,
    left: Option<ArenaBox<'a, Node<'a>>>,
    right: Option<ArenaBox<'a, Node<'a>>>,
}

fn insert<'a>(arena: &'a SmallMidArena, slot: &mut Option<ArenaBox<'a, Node<'a>>>, word: &str) {
    match slot {
        None => {
            *slot = Some(arena.alloc(Node {
                key: arena.alloc_str(word),
                count: 1,
                left: None,
                right: None,
            }));
        }
        Some(n) => match word.cmp(&n.key) {
            std::cmp::Ordering::Less => insert(arena, &mut n.left, word),
            std::cmp::Ordering::Greater => insert(arena, &mut n.right, word),
            std::cmp::Ordering::Equal => n.count += 1,
        },
    }
}

fn in_order<'a>(n: &'a Option<ArenaBox<'a, Node<'a>>>, out: &mut Vec<(&'a str, u32)>) {
    if let Some(n) = n {
        in_order(&n.left, out);
        out.push((&n.key, n.count));
        in_order(&n.right, out);
    }
}

/// One request: build, query, answer; the arena goes with the tree.
fn handle(body: &str) -> (usize, String) {
    let arena = SmallMidArena::new();
    let mut root = None;
    for w in body.split_whitespace() {
        insert(&arena, &mut root, w);
    }
    let mut words = Vec::new();
    in_order(&root, &mut words);
    let top = words
        .iter()
        .max_by_key(|(w, c)| (*c, std::cmp::Reverse(*w)))
        .map(|(w, _)| w.to_string());
    let answer = (words.len(), top.unwrap_or_default());
    drop(words);
    drop(root); // nodes are ArenaBoxes: dropped and freed here (or with the arena)
    answer
}

/// The same handler on the global allocator.
struct BoxNode {
    key: String,
    count: u32,
    left: Option<Box<BoxNode>>,
    right: Option<Box<BoxNode>>,
}

fn handle_boxed(body: &str) -> (usize, String) {
    fn insert(slot: &mut Option<Box<BoxNode>>, word: &str) {
        match slot {
            None => {
                *slot = Some(Box::new(BoxNode {
                    key: word.to_string(),
                    count: 1,
                    left: None,
                    right: None,
                }))
            }
            Some(n) => match word.cmp(&n.key) {
                std::cmp::Ordering::Less => insert(&mut n.left, word),
                std::cmp::Ordering::Greater => insert(&mut n.right, word),
                std::cmp::Ordering::Equal => n.count += 1,
            },
        }
    }
    fn in_order<'a>(n: &'a Option<Box<BoxNode>>, out: &mut Vec<(&'a str, u32)>) {
        if let Some(n) = n {
            in_order(&n.left, out);
            out.push((&n.key, n.count));
            in_order(&n.right, out);
        }
    }
    let mut root = None;
    for w in body.split_whitespace() {
        insert(&mut root, w);
    }
    let mut words = Vec::new();
    in_order(&root, &mut words);
    let top = words
        .iter()
        .max_by_key(|(w, c)| (*c, std::cmp::Reverse(*w)))
        .map(|(w, _)| w.to_string());
    (words.len(), top.unwrap_or_default())
}

fn main() {
    let vocabulary: Vec<String> = (0..400)
        .map(|i| format!("w{}", (i * 7919) % 1000))
        .collect();
    let bodies: Vec<String> = (0..64)
        .map(|r| {
            (0..300)
                .map(|k| vocabulary[(r * 31 + k * k) % vocabulary.len()].as_str())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    assert_eq!(handle(&bodies[0]), handle_boxed(&bodies[0]));
    let (distinct, top) = handle(&bodies[0]);
    println!("request 0: {distinct} distinct words, most frequent: {top}");

    let requests = 20_000;
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..5 {
        for (k, f) in [handle as fn(&str) -> (usize, String), handle_boxed]
            .iter()
            .enumerate()
        {
            let t = Instant::now();
            let mut check = 0;
            for i in 0..requests {
                check += f(&bodies[i % bodies.len()]).0;
            }
            times[k].push(t.elapsed().as_nanos() as f64 / requests as f64);
            assert!(check > 0);
        }
    }
    for t in &mut times {
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    println!("| handler | ns per request (median of 5) |");
    println!("|---|---:|");
    println!(
        "| ArenaBox tree in a per-request SmallMidArena | {:.0} |",
        times[0][2]
    );
    println!(
        "| Box tree on the global allocator (glibc) | {:.0} |",
        times[1][2]
    );
    println!("{}", smallmid::global_stats());
}
