//! End-to-end tests: a real Tarn server on a loopback socket, on a temp dir and on S3.

mod cli;
mod console;
mod contracts;
mod crash;
mod crawl;
mod e2e;
mod examples;
mod flight;
mod interop;
mod jobs;
mod layout;
mod openapi;
mod operations;
mod outage;
mod pg;
mod queries;
mod readme;
mod restart;
mod several_servers;
mod slt;
mod support;
