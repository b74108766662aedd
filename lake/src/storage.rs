//! Opening a lake: object stores, credentials and table URLs.

use std::collections::HashMap;
use std::sync::Mutex;

use arrow::datatypes::Schema as ArrowSchema;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::StructType;
use deltalake::logstore::{logstore_for, ObjectStoreRef, StorageConfig};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;
use url::Url;

use crate::{Error, LakeLocation, LakeTable, Result};

/// Options for opening a lake.
///
/// Storage options are the object_store / deltalake keys (`AWS_ENDPOINT_URL`, `AWS_REGION`,
/// `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, ...). Values given here win over the process
/// environment, which is read as well; most deployments set nothing here and rely on the
/// standard AWS environment and credential chain.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct LakeOptions {
    /// Extra storage options, see the type's documentation.
    pub storage: HashMap<String, String>,
}

/// An opened lake: its location, the object store behind it, and the Delta tables in it.
///
/// Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Lake {
    location: LakeLocation,
    url: Url,
    options: HashMap<String, String>,
    /// The store with `/` at the root of the bucket (or file system), as deltalake wants it.
    root_store: ObjectStoreRef,
    /// The same store with `/` at the lake's root; used for Tarn's own documents under `_tarn/`.
    store: ObjectStoreRef,
    /// Stores for locations outside the lake (crawled data), by `scheme://bucket`.
    foreign_stores: Mutex<HashMap<String, ObjectStoreRef>>,
}

impl std::fmt::Debug for Lake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lake").field("location", &self.location.to_string()).finish()
    }
}

/// Storage options that would make S3 commits unsafe; Tarn refuses to start with them.
const UNSAFE_OPTIONS: &[&str] = &["AWS_S3_ALLOW_UNSAFE_RENAME", "aws_s3_allow_unsafe_rename"];

impl Lake {
    /// Opens the lake at `location` (see [`LakeLocation`] for the accepted forms).
    ///
    /// A local directory is created if it does not exist. For S3 nothing is contacted yet:
    /// credentials are resolved lazily through the AWS default chain, so a wrong bucket or
    /// missing credentials surface on the first read or write, with the store's message.
    pub async fn open(location: &str, options: LakeOptions) -> Result<Self> {
        Self::open_location(LakeLocation::parse(location)?, options).await
    }

    /// Opens an already parsed location, see [`Lake::open`].
    pub async fn open_location(location: LakeLocation, options: LakeOptions) -> Result<Self> {
        if let LakeLocation::Local(path) = &location {
            tokio::fs::create_dir_all(path).await.map_err(|source| Error::Io {
                context: format!("cannot create the lake directory {}", path.display()),
                source,
            })?;
        }
        let mut storage = options.storage;
        for key in UNSAFE_OPTIONS {
            let set_in_env = std::env::var(key).is_ok_and(|v| truthy(&v));
            let set_in_options = storage.get(*key).is_some_and(|v| truthy(v));
            if set_in_env || set_in_options {
                return Err(Error::InvalidLocation {
                    location: location.to_string(),
                    reason: "AWS_S3_ALLOW_UNSAFE_RENAME is set; Tarn commits with conditional put \
                             and refuses unsafe renames, which can lose commits"
                        .into(),
                });
            }
        }
        if location.is_s3() {
            // Resolve credentials through aws-config's default chain (environment, shared
            // profile, web identity, IMDS, SSO) even when AWS_ENDPOINT_URL points at MinIO or
            // another S3-compatible server; without this flag deltalake would skip the chain
            // whenever an endpoint is set and only read static keys.
            storage.entry("AWS_FORCE_CREDENTIAL_LOAD".into()).or_insert_with(|| "true".into());
        }
        let url = location.url();
        let config = StorageConfig::parse_options(storage.clone())?;
        let log_store = logstore_for(&url, config)?;
        let root_store = log_store.root_object_store(None);
        let store = log_store.object_store(None);
        Ok(Lake {
            location,
            url,
            options: storage,
            root_store,
            store,
            foreign_stores: Mutex::new(HashMap::new()),
        })
    }

    /// Where the lake is.
    pub fn location(&self) -> &LakeLocation {
        &self.location
    }

    /// The lake's root URL (ends with `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The object store with `/` at the lake's root.
    pub fn store(&self) -> &ObjectStoreRef {
        &self.store
    }

    /// The storage options in force (as given, plus the ones Tarn adds).
    pub fn storage_options(&self) -> &HashMap<String, String> {
        &self.options
    }

    /// The URL of a table stored at `path` (relative to the lake root, e.g. `default/events`).
    pub fn table_url(&self, path: &str) -> Result<Url> {
        let path = path.trim_matches('/');
        if path.is_empty() || path.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(Error::InvalidLocation {
                location: path.to_string(),
                reason: "a table path is a relative path without '.' or '..' segments".into(),
            });
        }
        self.url.join(&format!("{path}/")).map_err(|e| Error::InvalidLocation {
            location: path.to_string(),
            reason: e.to_string(),
        })
    }

    fn builder(&self, path: &str) -> Result<DeltaTableBuilder> {
        let url = self.table_url(path)?;
        Ok(DeltaTableBuilder::from_url(url.clone())?
            .with_storage_backend(self.root_store.clone(), url)
            .with_storage_options(self.options.clone()))
    }

    /// Opens the Delta table at `path` and loads its latest version.
    pub async fn open_table(&self, path: &str) -> Result<LakeTable> {
        let mut table = self.builder(path)?.build()?;
        match table.load().await {
            Ok(()) => Ok(LakeTable::new(table)),
            // deltalake reports a missing table in several ways depending on the store
            // (NotATable, a kernel "path does not exist", ...): ask plainly before deciding.
            Err(e) => match table.verify_deltatable_existence().await {
                Ok(false) => {
                    Err(Error::TableNotFound { location: self.table_url(path)?.to_string() })
                }
                _ => Err(e.into()),
            },
        }
    }

    /// Creates a Delta table at `path` with the given Arrow schema and partition columns.
    ///
    /// If a Delta table already exists there (for example created by another Tarn process a
    /// moment earlier), it is returned unchanged: creation is idempotent.
    pub async fn create_table(
        &self,
        path: &str,
        schema: &ArrowSchema,
        partition_by: &[String],
    ) -> Result<LakeTable> {
        let delta_schema: StructType = schema.try_into_kernel().map_err(|e| {
            Error::SchemaMismatch(format!("cannot store this schema in Delta: {e}"))
        })?;
        for column in partition_by {
            if schema.field_with_name(column).is_err() {
                return Err(Error::SchemaMismatch(format!(
                    "partition column '{column}' is not a column of the table"
                )));
            }
        }
        let table = self.builder(path)?.build()?;
        let created = table
            .create()
            .with_columns(delta_schema.fields().cloned())
            .with_partition_columns(partition_by.to_vec())
            .with_save_mode(SaveMode::Ignore)
            // A CREATE must be version 0: never rebase it onto someone else's commits.
            .with_commit_properties(CommitProperties::default().with_max_retries(0))
            .await;
        match created {
            Ok(table) => Ok(LakeTable::new(table)),
            // Another writer created the table between our check and our commit: use theirs.
            Err(e) => match self.open_table(path).await {
                Ok(table) => Ok(table),
                Err(_) => Err(e.into()),
            },
        }
    }

    /// True if a Delta table exists at `path`.
    pub async fn table_exists(&self, path: &str) -> Result<bool> {
        let table: DeltaTable = self.builder(path)?.build()?;
        Ok(table.verify_deltatable_existence().await?)
    }

    /// Copies the object at `path` (relative to the lake root) to the local file `local`,
    /// streaming (files larger than memory are fine); returns the object's metadata.
    pub async fn download(
        &self,
        path: &Path,
        local: &std::path::Path,
    ) -> Result<object_store::ObjectMeta> {
        use tokio::io::AsyncWriteExt;
        let io =
            |source| Error::Io { context: format!("cannot write {}", local.display()), source };
        let got = self.store.get(path).await?;
        let meta = got.meta.clone();
        let mut stream = got.into_stream();
        let mut out = tokio::fs::File::create(local).await.map_err(io)?;
        while let Some(chunk) = stream.try_next().await? {
            out.write_all(&chunk).await.map_err(io)?;
        }
        out.flush().await.map_err(io)?;
        Ok(meta)
    }

    /// The object store that holds `url` (a `file://` or `s3://` URL, inside the lake or not),
    /// with `/` at the root of its bucket (or file system), built with the lake's storage
    /// options and credentials. The lake's own store when `url` is in the lake's bucket;
    /// stores for other buckets are built once and kept.
    ///
    /// Object paths in this store are the URL's path without the leading `/` (for S3, the key).
    pub fn store_for_url(&self, url: &Url) -> Result<ObjectStoreRef> {
        let key = store_key(url);
        if key == store_key(&self.url) {
            return Ok(self.root_store.clone());
        }
        let mut stores = self.foreign_stores.lock().expect("foreign stores lock");
        if let Some(store) = stores.get(&key) {
            return Ok(store.clone());
        }
        let mut options = self.options.clone();
        if matches!(url.scheme(), "s3" | "s3a") {
            options.entry("AWS_FORCE_CREDENTIAL_LOAD".into()).or_insert_with(|| "true".into());
        }
        let config = StorageConfig::parse_options(options)?;
        let store = logstore_for(url, config)?.root_object_store(None);
        stores.insert(key, store.clone());
        Ok(store)
    }

    /// Opens the Delta table at an absolute URL (`file:///...`, `s3://bucket/prefix/`), which
    /// need not be in the lake: tables written by other tools, registered by the crawler.
    pub async fn open_table_url(&self, url: &Url) -> Result<LakeTable> {
        let store = self.store_for_url(url)?;
        let mut options = self.options.clone();
        if matches!(url.scheme(), "s3" | "s3a") {
            options.entry("AWS_FORCE_CREDENTIAL_LOAD".into()).or_insert_with(|| "true".into());
        }
        let mut table = DeltaTableBuilder::from_url(url.clone())?
            .with_storage_backend(store, url.clone())
            .with_storage_options(options)
            .build()?;
        match table.load().await {
            Ok(()) => Ok(LakeTable::new(table)),
            Err(e) => match table.verify_deltatable_existence().await {
                Ok(false) => Err(Error::TableNotFound { location: url.to_string() }),
                _ => Err(e.into()),
            },
        }
    }

    /// Deletes every object under `path` (relative to the lake root); returns how many.
    pub async fn delete_prefix(&self, path: &str) -> Result<usize> {
        let prefix = Path::from(path.trim_matches('/'));
        let locations = self.store.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
        let deleted: Vec<Path> = self.store.delete_stream(locations).try_collect().await?;
        Ok(deleted.len())
    }
}

/// What identifies the store of a URL: scheme and bucket (host); one for the local disk.
fn store_key(url: &Url) -> String {
    match url.scheme() {
        "s3a" => format!("s3://{}", url.host_str().unwrap_or_default()),
        scheme => format!("{scheme}://{}", url.host_str().unwrap_or_default()),
    }
}

fn truthy(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}
