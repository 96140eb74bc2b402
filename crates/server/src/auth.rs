//! Who a request is, and what it may do: the server's own key (`NURTURE_API_KEY`, every
//! scope) or a stored key with scopes ([`nurture_store::keys`], `nurture keys ...`),
//! looked up by the hash of what the client presents at every request, so a revoked key
//! stops working at once in every process. Each route needs one scope
//! ([`needed_scope`]); a key without it gets 403.

use axum::http::Method;
use nurture_store::keys::{key_hash, ApiKey, Scope};
use nurture_store::StoreError;

use crate::AppState;

/// The longest key looked up in the store (a stored key is 46 characters).
const MAX_STORED_KEY: usize = 128;

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// For logs and the audit log: `server key`, or `key NAME (ID)`.
    pub name: String,
    /// The stored key; `None` for the server's own key.
    pub key: Option<ApiKey>,
}

impl Principal {
    /// Whether it may do what `scope` allows.
    pub fn allows(&self, scope: Scope) -> bool {
        self.key.as_ref().is_none_or(|k| k.allows(scope))
    }
}

/// The principal of the key `given`: the server's key, or a live stored key; `None` for
/// anything else (wrong, revoked, empty).
pub async fn principal(state: &AppState, given: &str) -> Result<Option<Principal>, StoreError> {
    if given.is_empty() {
        return Ok(None);
    }
    if !state.api_key.is_empty() && crate::keys_match(given, &state.api_key) {
        return Ok(Some(Principal {
            name: "server key".into(),
            key: None,
        }));
    }
    if !given.starts_with("nk_") || given.len() > MAX_STORED_KEY {
        return Ok(None);
    }
    let found = state.engine.store.key_by_hash(&key_hash(given)).await?;
    Ok(found.filter(|k| k.revoked_at.is_none()).map(|k| Principal {
        name: format!("key {} ({})", k.name, k.id),
        key: Some(k),
    }))
}

/// The scope a request to `path` with `method` needs.
pub fn needed_scope(method: &Method, path: &str) -> Scope {
    let under = |p: &str| path == p || path.starts_with(&format!("{p}/"));
    if path == "/metrics" || under("/v1/reports") {
        Scope::ReportsRead
    } else if method == Method::DELETE && under("/v1/contacts") {
        Scope::ContactsErase
    } else if method == Method::GET && (under("/v1/contacts") || under("/v1/runs")) {
        Scope::ContactsRead
    } else if method == Method::POST
        && (path == "/v1/events"
            || path == "/v1/contacts"
            || under("/v1/segment")
            || under("/v1/bounces"))
    {
        Scope::EventsWrite
    } else {
        Scope::Admin
    }
}

/// 32 random bytes from the system.
pub fn random_bytes() -> [u8; 32] {
    use std::io::Read as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes
}

/// Creates a stored key named `name` with `scopes`; the key itself is returned once and
/// never stored (only its hash).
pub async fn create_key(
    store: &dyn nurture_store::Store,
    name: &str,
    scopes: Vec<Scope>,
) -> Result<(ApiKey, String), StoreError> {
    use base64::Engine as _;
    let secret = format!(
        "nk_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes())
    );
    let hash = key_hash(&secret);
    let key = ApiKey {
        id: format!("key_{}", &hash[..12]),
        name: name.to_string(),
        scopes,
        created_at: chrono::Utc::now(),
        revoked_at: None,
    };
    store.create_key(&key, &hash).await?;
    Ok((key, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_scope_of_what_it_does() {
        let cases = [
            (Method::POST, "/v1/events", Scope::EventsWrite),
            (Method::POST, "/v1/segment/track", Scope::EventsWrite),
            (Method::GET, "/v1/contacts/c1/export", Scope::ContactsRead),
            (Method::DELETE, "/v1/contacts/c1", Scope::ContactsErase),
            (Method::GET, "/v1/reports/funnel", Scope::ReportsRead),
            (Method::GET, "/metrics", Scope::ReportsRead),
            (Method::POST, "/v1/runs/r1/cancel", Scope::Admin),
            (Method::POST, "/v1/workflows/w/pause", Scope::Admin),
            (Method::POST, "/v1/contacts/c1", Scope::Admin),
        ];
        for (m, p, s) in cases {
            assert_eq!(needed_scope(&m, p), s, "{m} {p}");
        }
    }
}
