//! End-to-end tests: a real Tarn server on a loopback socket, on a temp dir and on S3.

mod cli;
mod e2e;
mod interop;
mod readme;
mod support;
