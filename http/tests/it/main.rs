//! The HTTP API without a socket (`tower::ServiceExt::oneshot`), over a real lake: a temp dir
//! and the S3 test server.

mod catalog;
mod console;
mod ingest;
mod openapi;
mod query;
mod support;
