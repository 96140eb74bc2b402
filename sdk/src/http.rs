//! Outbound HTTP through the host. Only the hosts listed in the manifest are reachable;
//! any other answers [`Error::Denied`].

use serde::de::DeserializeOwned;
use serde::Serialize;

/// An HTTP request; build it with [`Request::post`] and friends, then [`Request::send`].
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The provider's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Refused by the host: not in the manifest's `hosts`, or not an http(s) URL.
    Denied(String),
    /// Connection, TLS or timeout failure; usually worth a retry.
    Failed(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Denied(m) => write!(f, "denied: {m}"),
            Error::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request {
            method: method.to_string(),
            url: url.to_string(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
    pub fn get(url: &str) -> Request {
        Request::new("GET", url)
    }
    pub fn post(url: &str) -> Request {
        Request::new("POST", url)
    }
    pub fn delete(url: &str) -> Request {
        Request::new("DELETE", url)
    }
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    /// `Authorization: Bearer TOKEN`.
    pub fn bearer(self, token: &str) -> Request {
        self.header("Authorization", &format!("Bearer {token}"))
    }
    /// `Authorization: Basic base64(user:password)`.
    pub fn basic_auth(self, user: &str, password: &str) -> Request {
        let encoded = base64(format!("{user}:{password}").as_bytes());
        self.header("Authorization", &format!("Basic {encoded}"))
    }
    /// `Idempotency-Key: KEY`; pass the call's key so a retried call is not repeated.
    pub fn idempotency_key(self, key: &str) -> Request {
        self.header("Idempotency-Key", key)
    }
    pub fn json(mut self, body: &impl Serialize) -> Request {
        self.body = serde_json::to_vec(body).unwrap_or_default();
        self.header("Content-Type", "application/json")
    }
    /// An `application/x-www-form-urlencoded` body, as Twilio-style APIs take.
    pub fn form(mut self, fields: &[(&str, &str)]) -> Request {
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
            .collect();
        self.body = body.join("&").into_bytes();
        self.header("Content-Type", "application/x-www-form-urlencoded")
    }
    /// The value of a header (case-insensitive name).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn body_json<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Sends the request through the host.
    pub fn send(self) -> Result<Response, Error> {
        #[cfg(target_arch = "wasm32")]
        {
            use crate::__bindings::nurture::plugin::http as wit;
            let req = wit::Request {
                method: self.method,
                url: self.url,
                headers: self.headers,
                body: self.body,
            };
            match wit::send(&req) {
                Ok(r) => Ok(Response {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                }),
                Err(wit::Error::Denied(m)) => Err(Error::Denied(m)),
                Err(wit::Error::Failed(m)) => Err(Error::Failed(m)),
            }
        }
        #[cfg(not(target_arch = "wasm32"))]
        {
            crate::testing::with_host(|h| h.send(self))
        }
    }
}

impl Response {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
    pub fn json(status: u16, body: &impl Serialize) -> Response {
        Response {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(body).unwrap_or_default(),
        }
    }
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
    pub fn json_body<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Percent-encoding for form bodies and query strings.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn basic_auth_is_rfc_7617_base64() {
        let r = super::Request::get("https://x.test").basic_auth("Aladdin", "open sesame");
        assert_eq!(
            r.header_value("authorization"),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
    }
}
