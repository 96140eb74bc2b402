//! A well-formed plugin built against `nurture:plugin@9.0.0`, an interface version this
//! runtime does not implement. The host must refuse it at load with a clear message.
//! Only built for wasm: natively the crate is empty (its export names are not valid
//! native symbol names).
#![cfg(target_arch = "wasm32")]

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::nurture::plugin::step::Guest;
use nurture::plugin::types::{Call, Outcome, PluginManifest};

struct Future;

impl Guest for Future {
    fn manifest() -> PluginManifest {
        PluginManifest {
            name: "future-version".into(),
            version: "0.1.0".into(),
            steps: vec![],
            hosts: vec![],
            secrets: vec![],
        }
    }
    fn run(call: Call) -> Outcome {
        Outcome::Ok(call.config)
    }
}

export!(Future);
