//! Run a plugin's steps natively in unit tests, against a scripted host that enforces the
//! same rules as the runtime: only the manifest's hosts are reachable and only the
//! manifest's secrets are readable.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::http::{Error, Request, Response};
use crate::log::Level;
use crate::{Call, Outcome, Plugin};

type Responder = Box<dyn FnMut(&Request) -> Result<Response, Error>>;

/// A host for tests. Build it, then [`TestHost::run`] a step.
pub struct TestHost {
    state: Option<Active>,
}

/// The host's state; moved into a thread-local while a step runs.
pub(crate) struct Active {
    secrets: BTreeMap<String, String>,
    responder: Responder,
    requests: Vec<Request>,
    logs: Vec<(Level, String)>,
    allowed_hosts: Vec<String>,
    declared_secrets: Vec<String>,
}

thread_local! {
    static ACTIVE: RefCell<Option<Active>> = const { RefCell::new(None) };
}

pub(crate) fn with_host<R>(f: impl FnOnce(&mut Active) -> R) -> R {
    ACTIVE.with(|a| {
        let mut a = a.borrow_mut();
        let host = a
            .as_mut()
            .expect("host functions are only available inside TestHost::run (or in wasm)");
        f(host)
    })
}

/// The host part of a URL, e.g. `api.example.test` for `https://api.example.test:8443/x`.
pub fn url_host(url: &str) -> Option<&str> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = authority.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

impl Active {
    pub(crate) fn send(&mut self, req: Request) -> Result<Response, Error> {
        let Some(host) = url_host(&req.url) else {
            return Err(Error::Denied(format!("not an http(s) URL: {}", req.url)));
        };
        if !self
            .allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
        {
            return Err(Error::Denied(format!(
                "host `{host}` is not in the plugin's manifest (hosts: {})",
                self.allowed_hosts.join(", ")
            )));
        }
        let answer = (self.responder)(&req);
        self.requests.push(req);
        answer
    }
    pub(crate) fn secret_value(&self, name: &str) -> Result<String, String> {
        if !self.declared_secrets.iter().any(|s| s == name) {
            return Err(format!(
                "secret `{name}` is not declared in the plugin's manifest"
            ));
        }
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| format!("secret `{name}` is not set"))
    }
    pub(crate) fn record_log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.to_string()));
    }
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

impl TestHost {
    /// A host with no secrets that answers every request with 200 and `{}`.
    pub fn new() -> TestHost {
        TestHost {
            state: Some(Active {
                secrets: BTreeMap::new(),
                responder: Box::new(|_| Ok(Response::json(200, &serde_json::json!({})))),
                requests: Vec::new(),
                logs: Vec::new(),
                allowed_hosts: Vec::new(),
                declared_secrets: Vec::new(),
            }),
        }
    }
    fn state(&mut self) -> &mut Active {
        self.state.as_mut().expect("host state")
    }
    /// Sets a secret's value.
    pub fn secret(mut self, name: &str, value: &str) -> TestHost {
        self.state()
            .secrets
            .insert(name.to_string(), value.to_string());
        self
    }
    /// Scripts the provider: called for every allowed request.
    pub fn respond(
        mut self,
        f: impl FnMut(&Request) -> Result<Response, Error> + 'static,
    ) -> TestHost {
        self.state().responder = Box::new(f);
        self
    }
    /// Runs one step of `P`, with `P`'s manifest deciding hosts and secrets.
    pub fn run<P: Plugin>(&mut self, call: Call) -> Outcome {
        let manifest = P::manifest();
        let mut active = self.state.take().expect("host state");
        active.allowed_hosts = manifest.hosts;
        active.declared_secrets = manifest.secrets;
        ACTIVE.with(|a| *a.borrow_mut() = Some(active));
        let outcome = P::run(call);
        self.state = ACTIVE.with(|a| a.borrow_mut().take());
        outcome
    }
    /// Every request the plugin sent, in order.
    pub fn requests(&self) -> &[Request] {
        &self.state.as_ref().expect("host state").requests
    }
    /// Every log line, in order.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.state.as_ref().expect("host state").logs
    }
}

#[cfg(test)]
mod tests {
    use super::url_host;

    #[test]
    fn url_host_ignores_userinfo_port_and_path() {
        assert_eq!(
            url_host("https://u:p@api.x.test:8443/a?b"),
            Some("api.x.test")
        );
        assert_eq!(url_host("http://api.x.test"), Some("api.x.test"));
        assert_eq!(url_host("ftp://api.x.test"), None);
        assert_eq!(url_host("https://"), None);
    }
}
