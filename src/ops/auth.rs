//! The operations endpoint's optional bearer token: read from `KEYSCORE_OPS_TOKEN`, required on
//! every path that shows data, never logged.

use std::fmt;

/// The environment variable holding the token.
pub const TOKEN_ENV: &str = "KEYSCORE_OPS_TOKEN";

/// Paths served without the token: the probes orchestrators call, and the status page itself,
/// which is static HTML holding no data (its script reads `/status.json` with the token).
const PUBLIC_PATHS: [&str; 4] = ["/healthz", "/readyz", "/", "/index.html"];

/// The token, when one is set. Its `Debug` never shows it.
#[derive(Clone, Default)]
pub(crate) struct OpsAuth {
    token: Option<String>,
}

impl fmt::Debug for OpsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpsAuth")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl OpsAuth {
    /// The token from [`TOKEN_ENV`]; unset or empty means none.
    pub(crate) fn from_env() -> Self {
        Self::with_token(std::env::var(TOKEN_ENV).ok())
    }

    /// `token` (ignored when empty).
    pub(crate) fn with_token(token: Option<String>) -> Self {
        Self {
            token: token.filter(|t| !t.trim().is_empty()),
        }
    }

    /// Whether a token is required.
    pub(crate) fn required(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request for `path` with the request head `head` may be answered.
    pub(crate) fn allows(&self, path: &str, head: &[u8]) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if PUBLIC_PATHS.contains(&path) {
            return true;
        }
        bearer(head).is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
    }
}

/// The credentials of an `Authorization: Bearer ...` header in a request head.
fn bearer(head: &[u8]) -> Option<&str> {
    let head = std::str::from_utf8(head).ok()?;
    head.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        let value = value.trim();
        let (scheme, credentials) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| credentials.trim())
    })
}

/// Equality whose time does not depend on where the inputs first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(auth: Option<&str>) -> Vec<u8> {
        let mut h = String::from("GET /metrics HTTP/1.1\r\nHost: x\r\n");
        if let Some(a) = auth {
            h.push_str(&format!("Authorization: {a}\r\n"));
        }
        h.push_str("\r\n");
        h.into_bytes()
    }

    #[test]
    fn without_a_token_everything_is_open() {
        let auth = OpsAuth::with_token(Some("  ".into()));
        assert!(!auth.required());
        assert!(auth.allows("/metrics", &head(None)));
    }

    #[test]
    fn with_a_token_data_paths_need_it_and_probes_do_not() {
        let auth = OpsAuth::with_token(Some("s3cret".into()));
        assert!(auth.allows("/metrics", &head(Some("Bearer s3cret"))));
        assert!(auth.allows("/status.json", &head(Some("bearer  s3cret "))));
        assert!(!auth.allows("/metrics", &head(None)));
        assert!(!auth.allows("/metrics", &head(Some("Bearer s3cre"))));
        assert!(!auth.allows("/metrics", &head(Some("Basic s3cret"))));
        assert!(!auth.allows("/status.json", &head(Some("Bearer wrong!"))));
        for path in ["/healthz", "/readyz", "/"] {
            assert!(auth.allows(path, &head(None)), "{path}");
        }
        assert!(!format!("{auth:?}").contains("s3cret"));
    }
}
