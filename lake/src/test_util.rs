//! Helpers shared by the test suites of every Tarn crate (feature `test-util`).
//!
//! Storage and end-to-end tests run once per [`Backend`]: on a temporary directory and on a
//! real S3-compatible HTTP server. The README's test command (`scripts/test`) starts that
//! server (moto) on a free loopback port and exports `TARN_TEST_S3_ENDPOINT` and
//! `TARN_TEST_S3_BUCKET`; S3 tests fail loudly when those are missing instead of skipping.

use std::collections::HashMap;
use std::path::PathBuf;

use crate::{Lake, LakeOptions};

/// Where a test's lake lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A fresh temporary directory.
    Local,
    /// A fresh prefix in the test bucket of the S3-compatible test server.
    S3,
}

/// A lake for one test, removed (local) or abandoned under a unique prefix (S3) afterwards.
pub struct TestLake {
    /// The backend it lives on.
    pub backend: Backend,
    /// The lake location, as `tarn serve --lake` takes it.
    pub location: String,
    /// Options to open it with (the S3 endpoint and test credentials).
    pub options: LakeOptions,
    _dir: Option<tempfile::TempDir>,
}

/// The S3-compatible test server's endpoint, e.g. `http://127.0.0.1:40123`.
///
/// # Panics
/// When `TARN_TEST_S3_ENDPOINT` is not set: run the suite through `scripts/test`.
pub fn s3_endpoint() -> String {
    std::env::var("TARN_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "TARN_TEST_S3_ENDPOINT is not set: S3 tests need the test server that \
             `scripts/test` starts (run the suite with `scripts/test`)"
        )
    })
}

/// The bucket created on the test server.
pub fn s3_bucket() -> String {
    std::env::var("TARN_TEST_S3_BUCKET").unwrap_or_else(|_| "tarn-test".to_string())
}

/// Storage options for the S3 test server: explicit test keys, path-style HTTP on loopback.
pub fn s3_storage_options() -> HashMap<String, String> {
    HashMap::from([
        ("AWS_ENDPOINT_URL".to_string(), s3_endpoint()),
        ("AWS_REGION".to_string(), "us-east-1".to_string()),
        ("AWS_ALLOW_HTTP".to_string(), "true".to_string()),
        ("AWS_ACCESS_KEY_ID".to_string(), "tarn-test".to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), "tarn-test-secret".to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ])
}

/// The Python interpreter of the test virtualenv (with `deltalake` installed).
///
/// # Panics
/// When `TARN_TEST_PYTHON` is not set: run the suite through `scripts/test`.
pub fn python() -> PathBuf {
    std::env::var_os("TARN_TEST_PYTHON").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "TARN_TEST_PYTHON is not set: interop tests need the virtualenv that \
             `scripts/test` prepares (run the suite with `scripts/test`)"
        )
    })
}

impl TestLake {
    /// A new, empty lake on `backend`.
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Local => {
                let dir = tempfile::tempdir().expect("create a temp dir");
                TestLake {
                    backend,
                    location: dir.path().join("lake").display().to_string(),
                    options: LakeOptions::default(),
                    _dir: Some(dir),
                }
            }
            Backend::S3 => TestLake {
                backend,
                location: format!("s3://{}/{}", s3_bucket(), uuid::Uuid::new_v4()),
                options: LakeOptions { storage: s3_storage_options() },
                _dir: None,
            },
        }
    }

    /// The same lake for a second user (another server): shares the location, does not own
    /// the temporary directory (the original keeps it alive).
    pub fn alias(&self) -> TestLake {
        TestLake {
            backend: self.backend,
            location: self.location.clone(),
            options: self.options.clone(),
            _dir: None,
        }
    }

    /// Opens the lake.
    pub async fn open(&self) -> Lake {
        Lake::open(&self.location, self.options.clone()).await.expect("open the test lake")
    }

    /// Environment variables a child process (`tarn serve`, python) needs to reach this lake.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options.storage.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Generates, for each named `async fn name(backend: Backend)`, a module `name` with two tests,
/// `name::local` and `name::s3`, so that every storage test runs on both backends and both
/// names show up in the test output.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn local() {
                    super::$name($crate::test_util::Backend::Local).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn s3() {
                    super::$name($crate::test_util::Backend::S3).await
                }
            }
        )*
    };
}
