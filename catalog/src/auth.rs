//! API keys: who may ingest, query and administer.
//!
//! Keys are declared in `tarn.toml` by the SHA-256 of their secret (`tarn key new` makes one),
//! never in clear, and compared in constant time. A request shows its key as
//! `Authorization: Bearer <key>` or `X-Tarn-Key: <key>`; a publishable key (one meant to sit in
//! a public web page's form) may also come as `?key=`.
//!
//! Scopes: `ingest:<table>` (or `ingest:*`), `query` (SQL and reading the catalog), `metrics`
//! (`GET /metrics`), `admin` (everything, including defining and dropping tables). A publishable key may only hold
//! ingest scopes and is only taken from its `allowed_origins` (the browser's `Origin`).
//!
//! With no keys declared, every endpoint is open (Tarn logs a warning at start). With keys,
//! every endpoint but `/healthz` and `/readyz` needs one: [`ErrorKind::Unauthenticated`]
//! without a valid key, [`ErrorKind::Forbidden`] when the key's scopes do not cover the
//! request. Which scope a request needs is decided by its frontend: the HTTP API declares it
//! on each route, the Postgres endpoint needs `query`.

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tarn_lake::{Classify, ErrorKind};

use crate::TableName;

/// A key that is missing, unknown or not allowed to do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct AuthError {
    /// [`ErrorKind::Unauthenticated`] (no or an unknown key) or [`ErrorKind::Forbidden`] (the
    /// key does not allow this).
    pub kind: ErrorKind,
    /// What is wrong, for the caller.
    pub message: String,
}

impl AuthError {
    fn unauthenticated(message: impl Into<String>) -> Self {
        AuthError { kind: ErrorKind::Unauthenticated, message: message.into() }
    }

    fn forbidden(message: impl Into<String>) -> Self {
        AuthError { kind: ErrorKind::Forbidden, message: message.into() }
    }
}

impl Classify for AuthError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}

/// A key as declared in `tarn.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// A name for logs.
    pub name: String,
    /// `sha256:<64 hex digits>` of the secret.
    pub hash: String,
    /// What the key may do.
    pub scopes: Vec<String>,
    /// For keys embedded in public pages: ingest only, from `allowed_origins` only.
    #[serde(default)]
    pub publishable: bool,
    /// Origins (`https://www.example.com`) a publishable key is accepted from.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// How fast this key may call (default: the server's `[rate_limit]`, and for publishable
    /// keys [`RateLimit::PUBLISHABLE`]).
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// How fast a caller may send requests, and ingest bytes: a token bucket that refills at the
/// rate and holds `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests per second, sustained.
    pub requests_per_second: u32,
    /// Requests allowed at once (default: one second's worth).
    #[serde(default)]
    pub burst: Option<u32>,
    /// Bytes of request bodies to ingest routes per second (none: not limited).
    #[serde(default)]
    pub ingest_bytes_per_second: Option<u64>,
}

impl RateLimit {
    /// What a publishable key (one in a public page) gets unless it says otherwise: a form
    /// post now and then from each visitor, not a flood.
    pub const PUBLISHABLE: RateLimit = RateLimit {
        requests_per_second: 10,
        burst: Some(50),
        ingest_bytes_per_second: Some(1024 * 1024),
    };

    /// Requests allowed at once.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(self.requests_per_second)
    }

    /// Refuses a rate of 0 or a burst of 0.
    pub fn check(&self) -> Result<(), String> {
        if self.requests_per_second == 0 {
            return Err("rate_limit.requests_per_second must be at least 1".into());
        }
        if self.burst == Some(0) {
            return Err("rate_limit.burst must be at least 1".into());
        }
        if self.ingest_bytes_per_second == Some(0) {
            return Err("rate_limit.ingest_bytes_per_second must be at least 1".into());
        }
        Ok(())
    }
}

/// Who a request comes from, once its key was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No key was needed (an open server, or an open route) and none was checked.
    Anonymous,
    /// The key at this position of the ring.
    Key(usize),
}

/// What a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Nothing: health checks, CORS preflights.
    Open,
    /// Appending to a table.
    Ingest(TableName),
    /// Reading: SQL and the catalog.
    Query,
    /// Reading the server's metrics.
    Metrics,
    /// Changing definitions, dropping tables, anything else.
    Admin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Grant {
    Ingest(Option<TableName>),
    Query,
    Metrics,
    Admin,
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Grant::Ingest(None) => f.write_str("ingest:*"),
            Grant::Ingest(Some(table)) => write!(f, "ingest:{table}"),
            Grant::Query => f.write_str("query"),
            Grant::Metrics => f.write_str("metrics"),
            Grant::Admin => f.write_str("admin"),
        }
    }
}

#[derive(Debug)]
struct Key {
    name: String,
    digest: [u8; 32],
    grants: Vec<Grant>,
    publishable: bool,
    origins: Vec<String>,
    rate_limit: Option<RateLimit>,
}

/// The declared keys.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<Key>,
}

/// `sha256:<hex>` of a secret: what `tarn.toml` stores.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn parse_digest(hash: &str) -> Option<[u8; 32]> {
    let hex = hash.strip_prefix("sha256:")?;
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Equal without an early exit, so timing does not tell how much of a guess was right.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl KeyRing {
    /// Checks and takes the declared keys.
    pub fn new(specs: &[KeySpec]) -> Result<Self, String> {
        let mut keys = Vec::with_capacity(specs.len());
        for spec in specs {
            let bad = |why: String| format!("key '{}': {why}", spec.name);
            let digest = parse_digest(&spec.hash).ok_or_else(|| {
                bad("hash must be sha256:<64 hex digits>; `tarn key new` makes a key and its hash".into())
            })?;
            let mut grants = Vec::new();
            for scope in &spec.scopes {
                let grant = match scope.as_str() {
                    "admin" => Grant::Admin,
                    "query" => Grant::Query,
                    "metrics" => Grant::Metrics,
                    "ingest:*" => Grant::Ingest(None),
                    other => match other.strip_prefix("ingest:") {
                        Some(table) => Grant::Ingest(Some(
                            TableName::parse(table).map_err(|e| bad(e.to_string()))?,
                        )),
                        None => {
                            return Err(bad(format!(
                            "unknown scope '{other}'; use ingest:<table>, ingest:*, query, metrics or admin"
                        )))
                        }
                    },
                };
                grants.push(grant);
            }
            if spec.publishable {
                if grants.iter().any(|g| !matches!(g, Grant::Ingest(_))) {
                    return Err(bad("a publishable key may only hold ingest scopes".into()));
                }
                if spec.allowed_origins.is_empty() {
                    return Err(bad("a publishable key needs allowed_origins".into()));
                }
            }
            if let Some(limit) = &spec.rate_limit {
                limit.check().map_err(bad)?;
            }
            keys.push(Key {
                name: spec.name.clone(),
                digest,
                grants,
                publishable: spec.publishable,
                origins: spec.allowed_origins.clone(),
                rate_limit: spec.rate_limit,
            });
        }
        Ok(KeyRing { keys })
    }

    /// True when no key is declared (Tarn runs open).
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Decides whether a request showing `presented` (from `origin`, via the query string or
    /// not) may do what `scope` says; answers whose key it was.
    pub fn authorize(
        &self,
        presented: Option<&str>,
        from_query: bool,
        origin: Option<&str>,
        scope: &Scope,
    ) -> Result<Caller, AuthError> {
        if self.is_open() || *scope == Scope::Open {
            return Ok(Caller::Anonymous);
        }
        let (index, key) = self.identify(presented, from_query, origin)?;
        let allowed = key.grants.iter().any(|grant| match (grant, scope) {
            (Grant::Admin, _) => true,
            (Grant::Query, Scope::Query) => true,
            (Grant::Metrics, Scope::Metrics) => true,
            (Grant::Ingest(None), Scope::Ingest(_)) => true,
            (Grant::Ingest(Some(t)), Scope::Ingest(wanted)) => t == wanted,
            _ => false,
        });
        if allowed {
            Ok(Caller::Key(index))
        } else {
            Err(AuthError::forbidden(format!(
                "key '{}' does not allow {}",
                key.name,
                describe(scope)
            )))
        }
    }

    /// The key a request shows, when it is valid here (from `origin`, via the query string or
    /// not): its position and the key.
    fn identify(
        &self,
        presented: Option<&str>,
        from_query: bool,
        origin: Option<&str>,
    ) -> Result<(usize, &Key), AuthError> {
        let presented = presented.ok_or_else(|| {
            AuthError::unauthenticated(
                "an API key is required: send Authorization: Bearer <key> or X-Tarn-Key: <key>",
            )
        })?;
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (index, key) in self.keys.iter().enumerate() {
            if constant_time_eq(&key.digest, &digest) {
                found = Some((index, key));
            }
        }
        let (index, key) =
            found.ok_or_else(|| AuthError::unauthenticated("the API key is not valid"))?;
        if from_query && !key.publishable {
            return Err(AuthError::unauthenticated(
                "only publishable keys may be sent as ?key=; send this key in a header",
            ));
        }
        if key.publishable && !origin.is_some_and(|o| key.origins.iter().any(|a| a == o)) {
            return Err(AuthError::forbidden(format!(
                "key '{}' is publishable and only taken from its allowed origins",
                key.name
            )));
        }
        Ok((index, key))
    }

    /// Whose key a request shows, and what it may do, without deciding on any scope: for
    /// `GET /v1/whoami`. An open ring answers `None` (everything is allowed).
    pub fn whoami(
        &self,
        presented: Option<&str>,
        from_query: bool,
        origin: Option<&str>,
    ) -> Result<Option<(String, Vec<String>)>, AuthError> {
        if self.is_open() {
            return Ok(None);
        }
        let (_, key) = self.identify(presented, from_query, origin)?;
        Ok(Some((key.name.clone(), key.grants.iter().map(Grant::to_string).collect())))
    }

    /// The name of `caller`'s key (`None` for anonymous callers).
    pub fn name_of(&self, caller: Caller) -> Option<&str> {
        match caller {
            Caller::Anonymous => None,
            Caller::Key(index) => self.keys.get(index).map(|k| k.name.as_str()),
        }
    }

    /// The rate limit of the key at `index`: its own, else [`RateLimit::PUBLISHABLE`] for a
    /// publishable key, else `default`.
    pub fn rate_limit_of(&self, index: usize, default: Option<RateLimit>) -> Option<RateLimit> {
        let key = self.keys.get(index)?;
        key.rate_limit.or(if key.publishable { Some(RateLimit::PUBLISHABLE) } else { default })
    }

    /// How many keys the ring holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when the ring holds no key (the same as [`KeyRing::is_open`]).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// For each publishable key: the tables it may ingest into (`*` for all) and its origins,
    /// which CORS allows.
    pub fn publishable_origins(&self) -> Vec<(Vec<String>, Vec<String>)> {
        self.keys
            .iter()
            .filter(|k| k.publishable)
            .map(|k| {
                let tables = k
                    .grants
                    .iter()
                    .map(|g| match g {
                        Grant::Ingest(Some(t)) => t.to_string(),
                        _ => "*".to_string(),
                    })
                    .collect();
                (tables, k.origins.clone())
            })
            .collect()
    }
}

fn describe(scope: &Scope) -> String {
    match scope {
        Scope::Open => "this".into(),
        Scope::Ingest(table) => format!("ingesting into {table}"),
        Scope::Query => "queries".into(),
        Scope::Metrics => "reading metrics".into(),
        Scope::Admin => "administration".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new(&[
            KeySpec {
                name: "ops".into(),
                hash: hash_secret("tk_admin"),
                scopes: vec!["admin".into()],
                publishable: false,
                allowed_origins: vec![],
                rate_limit: None,
            },
            KeySpec {
                name: "analyst".into(),
                hash: hash_secret("tk_query"),
                scopes: vec!["query".into(), "ingest:events".into()],
                publishable: false,
                allowed_origins: vec![],
                rate_limit: None,
            },
            KeySpec {
                name: "site".into(),
                hash: hash_secret("pk_site"),
                scopes: vec!["ingest:leads".into()],
                publishable: true,
                allowed_origins: vec!["https://www.example.com".into()],
                rate_limit: None,
            },
        ])
        .unwrap()
    }

    fn code(r: Result<Caller, AuthError>) -> u16 {
        match r {
            Ok(_) => 200,
            Err(e) if e.kind == ErrorKind::Unauthenticated => 401,
            Err(e) if e.kind == ErrorKind::Forbidden => 403,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn scopes_decide() {
        let ring = ring();
        let leads = Scope::Ingest(TableName::parse("leads").unwrap());
        let events = Scope::Ingest(TableName::parse("events").unwrap());
        let site = Some("https://www.example.com");
        assert_eq!(code(ring.authorize(None, false, None, &Scope::Query)), 401);
        assert_eq!(code(ring.authorize(Some("nope"), false, None, &Scope::Query)), 401);
        assert_eq!(code(ring.authorize(Some("tk_admin"), false, None, &Scope::Admin)), 200);
        assert_eq!(code(ring.authorize(Some("tk_query"), false, None, &Scope::Query)), 200);
        assert_eq!(code(ring.authorize(Some("tk_query"), false, None, &events)), 200);
        assert_eq!(code(ring.authorize(Some("tk_query"), false, None, &leads)), 403);
        assert_eq!(code(ring.authorize(Some("tk_query"), false, None, &Scope::Admin)), 403);
        assert_eq!(code(ring.authorize(Some("pk_site"), true, site, &leads)), 200);
        assert_eq!(
            code(ring.authorize(Some("pk_site"), false, Some("https://evil.test"), &leads)),
            403
        );
        assert_eq!(code(ring.authorize(Some("pk_site"), false, site, &Scope::Query)), 403);
        assert_eq!(code(ring.authorize(Some("tk_query"), true, None, &Scope::Query)), 401);
        assert_eq!(code(ring.authorize(None, false, None, &Scope::Open)), 200);
        assert_eq!(code(KeyRing::default().authorize(None, false, None, &Scope::Admin)), 200);
    }

    #[test]
    fn the_metrics_scope_and_whoami() {
        let ring = KeyRing::new(&[KeySpec {
            name: "prometheus".into(),
            hash: hash_secret("tk_metrics"),
            scopes: vec!["metrics".into(), "ingest:web.events".into()],
            publishable: false,
            allowed_origins: vec![],
            rate_limit: None,
        }])
        .unwrap();
        assert_eq!(code(ring.authorize(Some("tk_metrics"), false, None, &Scope::Metrics)), 200);
        assert_eq!(code(ring.authorize(Some("tk_metrics"), false, None, &Scope::Query)), 403);
        assert_eq!(
            code(self::tests::ring().authorize(Some("tk_query"), false, None, &Scope::Metrics)),
            403
        );
        assert_eq!(
            code(self::tests::ring().authorize(Some("tk_admin"), false, None, &Scope::Metrics)),
            200
        );
        let (name, scopes) = ring.whoami(Some("tk_metrics"), false, None).unwrap().unwrap();
        assert_eq!(
            (name.as_str(), scopes),
            ("prometheus", vec!["metrics".to_string(), "ingest:web.events".into()])
        );
        assert_eq!(
            ring.whoami(Some("nope"), false, None).unwrap_err().kind,
            ErrorKind::Unauthenticated
        );
        assert!(KeyRing::default().whoami(None, false, None).unwrap().is_none());
    }

    #[test]
    fn bad_declarations_are_refused() {
        let spec = |scopes: Vec<&str>, publishable: bool| KeySpec {
            name: "k".into(),
            hash: hash_secret("x"),
            scopes: scopes.into_iter().map(String::from).collect(),
            publishable,
            allowed_origins: vec!["https://a.com".into()],
            rate_limit: None,
        };
        assert!(KeyRing::new(&[spec(vec!["read"], false)]).unwrap_err().contains("unknown scope"));
        assert!(KeyRing::new(&[spec(vec!["query"], true)])
            .unwrap_err()
            .contains("only hold ingest"));
        let mut bad = spec(vec!["query"], false);
        bad.hash = "plain".into();
        assert!(KeyRing::new(&[bad]).unwrap_err().contains("sha256:"));
    }
}
