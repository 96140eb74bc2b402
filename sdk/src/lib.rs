//! # Writing nurture plugins
//!
//! A nurture plugin is a WebAssembly component that offers one or more workflow steps
//! (`plugin: sms/send` in a workflow file). The runtime runs it in a sandbox: no files,
//! no environment, no sockets; only the imports of the plugin interface
//! (`sdk/wit/1.0/plugin.wit`): outbound HTTP to the hosts its manifest lists, its own
//! secrets, and logging.
//!
//! With this crate a plugin is a type implementing [`Plugin`] and one macro call:
//!
//! ```
//! use nurture_plugin_sdk::{http, secrets, Call, Manifest, Outcome, Plugin};
//! use serde::Deserialize;
//!
//! pub struct Hello;
//!
//! #[derive(Deserialize)]
//! struct Greet { name: String }
//!
//! impl Plugin for Hello {
//!     fn manifest() -> Manifest {
//!         // The manifest is the plugin's `plugin.toml`, compiled in.
//!         Manifest::from_toml(r#"
//!             name = "hello"
//!             version = "0.1.0"
//!             api = "1.0"
//!             hosts = ["api.greetings.test"]
//!             secrets = ["token"]
//!             [steps.greet]
//!             description = "Greet someone"
//!             config = { type = "object", required = ["name"] }
//!         "#)
//!     }
//!
//!     fn run(call: Call) -> Outcome {
//!         let greet: Greet = match call.config_as() { Ok(c) => c, Err(outcome) => return outcome };
//!         let token = match secrets::get("token") { Ok(t) => t, Err(e) => return Outcome::failed(e) };
//!         let response = http::Request::post("https://api.greetings.test/greet")
//!             .bearer(&token)
//!             .idempotency_key(&call.idempotency_key)
//!             .json(&serde_json::json!({ "name": greet.name }))
//!             .send();
//!         Outcome::from_response(response)
//!     }
//! }
//!
//! nurture_plugin_sdk::export_plugin!(Hello);
//!
//! // Run the step natively, against a scripted host, in a unit test:
//! let mut host = nurture_plugin_sdk::testing::TestHost::new()
//!     .secret("token", "t0k3n")
//!     .respond(|_req| Ok(http::Response::json(200, &serde_json::json!({ "id": 7 }))));
//! let outcome = host.run::<Hello>(Call::new("greet").config(serde_json::json!({ "name": "Ana" })));
//! assert!(outcome.is_ok(), "{outcome:?}");
//! assert_eq!(host.requests()[0].header_value("authorization"), Some("Bearer t0k3n"));
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` (or `nurture plugins
//! build`), put the `.wasm` beside `plugin.toml`, and the runtime loads it. The guide for
//! plugin developers is `docs/plugins.md`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// The version of the plugin interface this SDK builds against.
pub const INTERFACE_VERSION: &str = "1.0.0";

#[doc(hidden)]
#[allow(unsafe_code, clippy::all)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "wit/1.0",
        world: "plugin",
        pub_export_macro: true,
        default_bindings_module: "nurture_plugin_sdk::__bindings",
        export_macro_name: "__export",
    });
}

pub mod http;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

/// A plugin: its manifest and its steps.
pub trait Plugin {
    /// What the plugin offers and needs. Use [`Manifest::from_toml`] with
    /// `include_str!("../plugin.toml")` so the component and its manifest file agree.
    fn manifest() -> Manifest;
    /// Runs one step call. Never panics on bad input: return [`Outcome::failed`].
    fn run(call: Call) -> Outcome;
}

/// One step the plugin offers.
#[derive(Debug, Clone, PartialEq)]
pub struct StepInfo {
    pub name: String,
    pub description: String,
    /// JSON Schema of the step's `with:` configuration.
    pub config_schema: Value,
}

/// What a plugin says about itself.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub steps: Vec<StepInfo>,
    pub hosts: Vec<String>,
    pub secrets: Vec<String>,
}

#[derive(serde::Deserialize)]
struct ManifestFile {
    name: String,
    version: String,
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    secrets: Vec<String>,
    #[serde(default)]
    steps: BTreeMap<String, StepFile>,
}

#[derive(serde::Deserialize)]
struct StepFile {
    #[serde(default)]
    description: String,
    #[serde(default)]
    config: Option<Value>,
}

impl Manifest {
    /// Reads a `plugin.toml`. Panics on a malformed file: it is compiled in, so the
    /// plugin's own unit tests catch it.
    pub fn from_toml(text: &str) -> Manifest {
        let file: ManifestFile = toml::from_str(text).expect("plugin.toml is malformed");
        Manifest {
            name: file.name,
            version: file.version,
            hosts: file.hosts,
            secrets: file.secrets,
            steps: file
                .steps
                .into_iter()
                .map(|(name, s)| StepInfo {
                    name,
                    description: s.description,
                    config_schema: s
                        .config
                        .unwrap_or_else(|| serde_json::json!({"type": "object"})),
                })
                .collect(),
        }
    }
}

/// One execution of a step.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub step: String,
    /// The `with:` configuration, interpolated.
    pub config: Value,
    pub contact: Value,
    pub event: Option<Value>,
    /// Stable across retries: send it to providers that de-duplicate.
    pub idempotency_key: String,
    /// 1 on the first attempt.
    pub attempt: u32,
}

impl Call {
    /// A call for tests: empty config and contact, key `test-key`, attempt 1.
    pub fn new(step: &str) -> Call {
        Call {
            step: step.to_string(),
            config: Value::Object(Default::default()),
            contact: Value::Object(Default::default()),
            event: None,
            idempotency_key: "test-key".into(),
            attempt: 1,
        }
    }
    pub fn config(mut self, config: Value) -> Call {
        self.config = config;
        self
    }
    pub fn contact(mut self, contact: Value) -> Call {
        self.contact = contact;
        self
    }
    pub fn event(mut self, event: Value) -> Call {
        self.event = Some(event);
        self
    }
    pub fn key(mut self, key: &str) -> Call {
        self.idempotency_key = key.to_string();
        self
    }

    /// The `with:` configuration as a typed value; a mismatch is a permanent failure that
    /// names the field.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, Outcome> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| Outcome::failed(format!("bad `with:` for step `{}`: {e}", self.step)))
    }

    /// The contact's field, e.g. `call.contact_str("email")`.
    pub fn contact_str(&self, field: &str) -> Option<&str> {
        self.contact.get(field).and_then(Value::as_str)
    }
}

/// How a step call ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the value is recorded in the run's journal.
    Ok(Value),
    /// A temporary failure: the runtime retries no earlier than `seconds` from now.
    RetryAfter { seconds: u32, reason: String },
    /// A permanent failure: the step fails with this reason.
    Failed(String),
}

impl Outcome {
    pub fn ok(value: impl Serialize) -> Outcome {
        Outcome::Ok(serde_json::to_value(value).unwrap_or(Value::Null))
    }
    pub fn failed(reason: impl Into<String>) -> Outcome {
        Outcome::Failed(reason.into())
    }
    pub fn retry_after(seconds: u32, reason: impl Into<String>) -> Outcome {
        Outcome::RetryAfter {
            seconds,
            reason: reason.into(),
        }
    }
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }

    /// The usual mapping of a provider's answer: 2xx is ok (with the JSON body, if any),
    /// 429 and 5xx retry (honouring `Retry-After`), other statuses fail with the body,
    /// and a network failure retries in 30 s. A denied host fails.
    pub fn from_response(response: Result<http::Response, http::Error>) -> Outcome {
        match response {
            Ok(r) if (200..300).contains(&r.status) => {
                let body = r.json_body::<Value>().unwrap_or(Value::Null);
                Outcome::Ok(serde_json::json!({"status": r.status, "body": body}))
            }
            Ok(r) if r.status == 429 || r.status >= 500 => {
                let seconds = r
                    .header("retry-after")
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(30);
                Outcome::retry_after(seconds, format!("provider answered HTTP {}", r.status))
            }
            Ok(r) => Outcome::failed(format!(
                "provider answered HTTP {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            )),
            Err(http::Error::Denied(why)) => Outcome::failed(why),
            Err(http::Error::Failed(why)) => Outcome::retry_after(30, why),
        }
    }
}

/// The plugin's own secrets, configured by the operator.
pub mod secrets {
    /// The secret's value. Fails if the manifest does not declare it or it is not set.
    pub fn get(name: &str) -> Result<String, String> {
        #[cfg(target_arch = "wasm32")]
        {
            crate::__bindings::nurture::plugin::secrets::get(name)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::with_host(|h| h.secret_value(name))
        }
    }
}

/// Logging into the runtime's `tracing` output, tagged with the plugin's name.
pub mod log {
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Level {
        Trace,
        Debug,
        Info,
        Warn,
        Error,
    }

    pub fn log(level: Level, message: &str) {
        #[cfg(target_arch = "wasm32")]
        {
            use crate::__bindings::nurture::plugin::log as wit;
            let level = match level {
                Level::Trace => wit::Level::Trace,
                Level::Debug => wit::Level::Debug,
                Level::Info => wit::Level::Info,
                Level::Warn => wit::Level::Warn,
                Level::Error => wit::Level::Error,
            };
            wit::log(level, message)
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::with_host(|h| h.record_log(level, message))
        }
    }
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// SHA-256 of a normalised (trimmed, lower-cased) email, hex: what ad platforms want.
pub fn hashed_email(email: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(email.trim().to_lowercase().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[doc(hidden)]
pub mod __guest {
    //! Glue between the generated bindings and [`Plugin`]; used by `export_plugin!`.
    use super::*;
    use crate::__bindings::nurture::plugin::types as wit;

    pub fn manifest<P: Plugin>() -> wit::PluginManifest {
        let m = P::manifest();
        wit::PluginManifest {
            name: m.name,
            version: m.version,
            steps: m
                .steps
                .into_iter()
                .map(|s| wit::StepInfo {
                    name: s.name,
                    description: s.description,
                    config_schema: s.config_schema.to_string(),
                })
                .collect(),
            hosts: m.hosts,
            secrets: m.secrets,
        }
    }

    pub fn run<P: Plugin>(call: wit::Call) -> wit::Outcome {
        let parse = |s: &str| serde_json::from_str(s).unwrap_or(Value::Null);
        let call = Call {
            step: call.step,
            config: parse(&call.config),
            contact: parse(&call.contact),
            event: call.event.as_deref().map(parse),
            idempotency_key: call.idempotency_key,
            attempt: call.attempt,
        };
        match P::run(call) {
            Outcome::Ok(v) => wit::Outcome::Ok(v.to_string()),
            Outcome::RetryAfter { seconds, reason } => {
                wit::Outcome::RetryAfter(wit::Retry { seconds, reason })
            }
            Outcome::Failed(reason) => wit::Outcome::Failed(reason),
        }
    }
}

/// Exports a [`Plugin`] as the component's `nurture:plugin/step` interface.
/// Expands to nothing outside wasm, so the plugin's unit tests build natively.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            pub struct NurturePluginExport;
            impl $crate::__bindings::exports::nurture::plugin::step::Guest for NurturePluginExport {
                fn manifest() -> $crate::__bindings::nurture::plugin::types::PluginManifest {
                    $crate::__guest::manifest::<$plugin>()
                }
                fn run(
                    call: $crate::__bindings::nurture::plugin::types::Call,
                ) -> $crate::__bindings::nurture::plugin::types::Outcome {
                    $crate::__guest::run::<$plugin>(call)
                }
            }
    $crate::__bindings::__export!(NurturePluginExport with_types_in $crate::__bindings);
        };
    };
}
