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
//!
//! The same route layer applies the key's rate limit ([`crate::limit`]) and names the key (never
//! the secret) in the request's log span. `GET /v1/whoami` tells a caller (the console) whose
//! key it shows and what it may do.
//!
//! Every route added is recorded in the route table ([`Gate::routes`]: each method at each
//! path, with its [`Need`]), which the tests hold against the OpenAPI document
//! ([`crate::openapi`]). Axum's `MethodRouter` does not tell its methods, so routes are built
//! with this module's [`get`], [`post`], [`put`], [`delete`] and [`options`], which name them.

use std::sync::{Arc, Mutex};

use axum::extract::rejection::RawPathParamsRejection;
use axum::extract::{RawPathParams, Request, State};
use axum::handler::Handler;
use axum::http::{header, Method};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, Route};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use tarn_catalog::auth::{Caller, KeyRing, Scope};
use tarn_catalog::TableName;

use crate::ApiError;
use tarn_catalog::limit::RateLimits;

/// What guards every route: the keys and their rate limits; and the table of the routes.
pub struct Gate {
    /// The declared keys.
    pub keys: Arc<KeyRing>,
    /// Their limits.
    pub limits: Arc<RateLimits>,
    /// Every method at every path added through [`Routes::route`] with this gate.
    table: Mutex<Vec<RouteEntry>>,
}

impl Gate {
    /// A gate of `keys` with `limits`, no routes yet.
    pub fn new(keys: Arc<KeyRing>, limits: Arc<RateLimits>) -> Self {
        Gate { keys, limits, table: Mutex::new(Vec::new()) }
    }

    /// The routes added with this gate so far, in the order they were added.
    pub fn routes(&self) -> Vec<RouteEntry> {
        self.table.lock().expect("route table lock").clone()
    }
}

/// One method at one path, as [`Routes::route`] added it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    /// The method (a `GET` route also answers `HEAD`, as axum does; `HEAD` is not listed).
    pub method: Method,
    /// The path template, in axum's (and OpenAPI's) `{param}` syntax.
    pub path: String,
    /// What it needs from the caller's key.
    pub need: Need,
}

/// What a route needs from the caller's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: health checks, CORS preflights.
    Open,
    /// The `query` scope: SQL and reading the catalog.
    Query,
    /// The `metrics` scope: `GET /metrics`.
    Metrics,
    /// The `admin` scope: changing definitions, dropping tables, crawling.
    Admin,
    /// `ingest:<table>` (or `ingest:*`) for the `{table}` of the route's path; a path whose
    /// table name is not valid needs `admin`.
    IngestInto,
}

impl Need {
    /// The scope this need asks for, as the API's documentation names it: `open`, `query`,
    /// `metrics`, `admin` or `ingest:<table>`.
    pub fn scope(self) -> &'static str {
        match self {
            Need::Open => "open",
            Need::Query => "query",
            Need::Metrics => "metrics",
            Need::Admin => "admin",
            Need::IngestInto => "ingest:<table>",
        }
    }
}

/// The methods of one route with their handlers: axum's [`MethodRouter`] together with the
/// names of its methods (which a `MethodRouter` does not tell), for the route table.
pub struct Endpoint<S> {
    methods: Vec<Method>,
    router: MethodRouter<S>,
}

/// The constructors ([`get`], ...) and chaining methods ([`Endpoint::delete`], ...) of
/// [`Endpoint`], one per method, delegating to axum's.
macro_rules! endpoint_methods {
    ($($name:ident => $method:ident),* $(,)?) => {
        $(
            #[doc = concat!("`", stringify!($method), "` requests to `handler` (axum's [`axum::routing::", stringify!($name), "`], named for the route table).")]
            pub fn $name<H, T, S>(handler: H) -> Endpoint<S>
            where
                H: Handler<T, S>,
                T: 'static,
                S: Clone + Send + Sync + 'static,
            {
                Endpoint { methods: vec![Method::$method], router: axum::routing::$name(handler) }
            }
        )*

        impl<S: Clone + Send + Sync + 'static> Endpoint<S> {
            $(
                #[doc = concat!("Adds `", stringify!($method), "` requests to `handler`.")]
                pub fn $name<H, T>(mut self, handler: H) -> Self
                where
                    H: Handler<T, S>,
                    T: 'static,
                {
                    self.methods.push(Method::$method);
                    self.router = self.router.$name(handler);
                    self
                }
            )*
        }
    };
}

endpoint_methods!(get => GET, post => POST, put => PUT, delete => DELETE, options => OPTIONS);

impl<S: Clone + Send + Sync + 'static> Endpoint<S> {
    /// Wraps the handlers in `layer` (axum's [`MethodRouter::layer`]).
    pub fn layer<L>(self, layer: L) -> Self
    where
        L: tower::Layer<Route> + Clone + Send + Sync + 'static,
        L::Service: tower::Service<Request, Error = std::convert::Infallible>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as tower::Service<Request>>::Response: IntoResponse + 'static,
        <L::Service as tower::Service<Request>>::Future: Send + 'static,
    {
        Endpoint { methods: self.methods, router: self.router.layer(layer) }
    }
}

/// A router whose every route declares its [`Need`].
pub struct Routes<S> {
    router: Router<S>,
    gate: Arc<Gate>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet; keys checked (and limits applied) by `gate`.
    pub fn new(gate: Arc<Gate>) -> Self {
        Routes { router: Router::new(), gate }
    }

    /// Adds `methods` at `path`, each of them needing `need`, and records them in the gate's
    /// route table. The same path may be added again with other methods and another need.
    pub fn route(mut self, path: &str, need: Need, methods: Endpoint<S>) -> Self {
        let guarded = self.guard(path, need, methods);
        self.router = self.router.route(path, guarded);
        self
    }

    /// [`Routes::route`], with what `outer` wraps around the key check too (e.g.
    /// `|r| r.layer(cors)`): for CORS, whose headers a browser needs on refusals (401, 403,
    /// 429) as much as on answers, or it cannot read them.
    pub fn route_within(
        mut self,
        path: &str,
        need: Need,
        methods: Endpoint<S>,
        outer: impl FnOnce(MethodRouter<S>) -> MethodRouter<S>,
    ) -> Self {
        let guarded = outer(self.guard(path, need, methods));
        self.router = self.router.route(path, guarded);
        self
    }

    /// Records `methods` at `path` in the route table and puts the key check on them.
    fn guard(&self, path: &str, need: Need, methods: Endpoint<S>) -> MethodRouter<S> {
        let Endpoint { methods, router } = methods;
        self.gate.table.lock().expect("route table lock").extend(
            methods.into_iter().map(|method| RouteEntry { method, path: path.to_string(), need }),
        );
        router.route_layer(from_fn_with_state((self.gate.clone(), need), require))
    }

    /// The routes, with `state`.
    pub fn with_state<T>(self, state: S) -> Router<T> {
        self.router.with_state(state)
    }
}

/// Route layer: refuses requests whose key does not cover the route's need, and requests
/// over their key's rate limit; names the key in the request's log span.
async fn require(
    State((gate, need)): State<(Arc<Gate>, Need)>,
    params: Result<RawPathParams, RawPathParamsRejection>,
    request: Request,
    next: Next,
) -> Response {
    let params = match params {
        Ok(params) => params,
        Err(rejection) => return ApiError::bad_request(rejection.body_text()).into_response(),
    };
    let table = params.iter().find(|(name, _)| *name == "table").map(|(_, value)| value);
    let caller = match check(&gate.keys, need, table, &request) {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    if need == Need::Open {
        return next.run(request).await;
    }
    let name = gate.keys.name_of(caller);
    if let Some(name) = name {
        tracing::Span::current().record("key", name);
    }
    match gate.limits.admit(caller, need == Need::IngestInto, name, "http") {
        Ok(None) => next.run(request).await,
        Ok(Some(budget)) => {
            // The body is charged to the key's byte budget as it is read.
            let request = request.map(|body| {
                axum::body::Body::from_stream(body.into_data_stream().map(move |chunk| {
                    if let Ok(bytes) = &chunk {
                        budget.charge(bytes.len());
                    }
                    chunk
                }))
            });
            next.run(request).await
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Whose key is this
///
/// The name and scopes of the key the request shows; on an open server, `{"open": true}` and
/// every scope. 401 without a valid key where keys are declared.
///
/// Scope: `open` (it checks the key it is shown).
#[utoipa::path(
    get,
    path = "/v1/whoami",
    operation_id = "whoami",
    tag = "operations",
    security((), ("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The key's name and scopes", body = crate::openapi::WhoAmI),
        (status = 403, description = "A publishable key shown from an origin it does not allow", body = crate::error::ErrorBody),
    )
)]
pub(crate) async fn whoami(State(gate): State<Arc<Gate>>, request: Request) -> Response {
    let (presented, from_query) = presented_key(&request);
    let origin = request.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok());
    match gate.keys.whoami(presented.as_deref(), from_query, origin) {
        Ok(None) => Json(json!({
            "open": true,
            "key": Value::Null,
            "scopes": ["admin", "query", "metrics", "ingest:*"],
        }))
        .into_response(),
        Ok(Some((name, scopes))) => {
            Json(json!({"open": false, "key": name, "scopes": scopes})).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// The routes about keys themselves: `GET /v1/whoami`, open (it checks the key it is shown).
pub(crate) fn routes(routes: Routes<Arc<Gate>>) -> Routes<Arc<Gate>> {
    routes.route("/v1/whoami", Need::Open, get(whoami))
}

/// Decides whether `request` may do what `need` says (`table`: the path's `{table}`).
pub(crate) fn check(
    keys: &KeyRing,
    need: Need,
    table: Option<&str>,
    request: &Request,
) -> Result<Caller, ApiError> {
    if keys.is_open() {
        return Ok(Caller::Anonymous);
    }
    let scope = match need {
        Need::Open => return Ok(Caller::Anonymous),
        Need::Query => Scope::Query,
        Need::Metrics => Scope::Metrics,
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
