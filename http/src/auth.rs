//! API keys on the HTTP API: every route declares what it needs where it is defined.
//!
//! Routes are added through [`Routes::route`], which takes a [`Need`] and puts the key check on
//! that route (a route layer): there is no other way to add a route in this crate, so a new
//! route cannot fall to a scope by accident. Unrouted paths need `admin` (their 404 is not
//! shown to callers without a key). The keys, their scopes and the decision itself are
//! `tarn_catalog::auth`'s (the Postgres endpoint uses the same ring).
//!
//! A request shows its key as `Authorization: Bearer <key>` or `X-Tarn-Key: <key>`; a
//! publishable key (one meant to sit in a public web page's form) may also come as `?key=`.

use std::sync::Arc;

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use axum::Router;
use tarn_catalog::auth::{KeyRing, Scope};
use tarn_catalog::TableName;

use crate::ApiError;

/// What a route needs from the caller's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks, CORS preflights.
    Open,
    /// The `query` scope: SQL and reading the catalog.
    Query,
    /// The `admin` scope: changing definitions, dropping tables, crawling.
    Admin,
    /// `ingest:<table>` (or `ingest:*`) for the `{table}` of the route's path; a path whose
    /// table name is not valid needs `admin`.
    IngestInto,
}

/// A router whose every route declares its [`Need`].
pub struct Routes<S> {
    router: Router<S>,
    keys: Arc<KeyRing>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet; keys checked against `keys`.
    pub fn new(keys: Arc<KeyRing>) -> Self {
        Routes { router: Router::new(), keys }
    }

    /// Adds `methods` at `path`, each of them needing `need`. The same path may be added again
    /// with other methods and another need.
    pub fn route(mut self, path: &str, need: Need, methods: MethodRouter<S>) -> Self {
        let guarded = methods.route_layer(from_fn_with_state((self.keys.clone(), need), require));
        self.router = self.router.route(path, guarded);
        self
    }

    /// The routes, with `state`.
    pub fn with_state<T>(self, state: S) -> Router<T> {
        self.router.with_state(state)
    }
}

/// Route layer: refuses requests whose key does not cover the route's need.
async fn require(
    State((keys, need)): State<(Arc<KeyRing>, Need)>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let params = match params {
        Ok(params) => params,
        Err(rejection) => return ApiError::bad_request(rejection.body_text()).into_response(),
    };
    let table = params.iter().find(|(name, _)| *name == "table").map(|(_, value)| value);
    match check(&keys, need, table, &request) {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Decides whether `request` may do what `need` says (`table`: the path's `{table}`).
pub(crate) fn check(
    keys: &KeyRing,
    need: Need,
    table: Option<&str>,
    request: &Request,
) -> Result<(), ApiError> {
    if keys.is_open() {
        return Ok(());
    }
    let scope = match need {
        Need::Open => return Ok(()),
        Need::Query => Scope::Query,
        Need::Admin => Scope::Admin,
        Need::IngestInto => match table.map(TableName::parse) {
            Some(Ok(name)) => Scope::Ingest(name),
            _ => Scope::Admin,
        },
    };
    let (presented, from_query) = presented_key(request);
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    Ok(keys.authorize(presented.as_deref(), from_query, origin, &scope)?)
}

/// The key a request shows, and whether it came in the query string.
fn presented_key(request: &Request) -> (Option<String>, bool) {
    let headers = request.headers();
    if let Some(bearer) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
    {
        return (Some(bearer.trim().to_string()), false);
    }
    if let Some(key) = headers.get("x-tarn-key").and_then(|v| v.to_str().ok()) {
        return (Some(key.trim().to_string()), false);
    }
    let from_query = request.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "key").map(|(_, v)| v.into_owned())
    });
    let found = from_query.is_some();
    (from_query, found)
}
