//! Tarn: a local-first analytics lakehouse in one binary.
//!
//! This crate is the wiring: configuration ([`config`]), the server that builds the services
//! and serves them over HTTP and the Postgres protocol ([`Application`]), and the
//! command-line subcommands ([`cli`]). Business logic lives in the member crates: `tarn-lake`
//! (storage), `tarn-catalog` (table definitions, keys, the crawler), `tarn-ingest` (writes),
//! `tarn-query` (SQL, the Postgres endpoint), `tarn-pipelines` (scheduled jobs, notifications,
//! alarms) and `tarn-http` (the HTTP API).

pub mod cli;
pub mod config;
pub mod job;
mod server;
pub mod telemetry;

pub use server::{Application, Services};
