//! Tarn: a local-first analytics lakehouse in one binary.
//!
//! This crate is the wiring: configuration ([`config`]), the HTTP application that nests the
//! ingest, query and catalog routers ([`Application`]), and the command-line subcommands
//! ([`cli`]). Business logic lives in the member crates: `tarn-lake` (storage), `tarn-catalog`
//! (table definitions), `tarn-ingest` (writes) and `tarn-query` (SQL).

pub mod cli;
pub mod config;
mod server;
pub mod telemetry;

pub use server::{Application, Services};
