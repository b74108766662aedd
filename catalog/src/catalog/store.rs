//! Catalog documents in the lake: one JSON document per revision of a table's definition,
//! written with a conditional create so that two servers never overwrite each other.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::Catalog;
use crate::{Error, ExternalSource, Result, TableDefinition, TableName};

/// Where catalog documents live, relative to the lake root.
pub(super) const TABLES_PREFIX: &str = "_tarn/catalog/tables";

impl Catalog {
    /// Every catalog document (its path and when it was written), with the table and
    /// revision it holds.
    pub(super) async fn documents(
        &self,
        prefix: &Path,
    ) -> Result<Vec<(TableName, u64, ObjectMeta)>> {
        Ok(self
            .lake
            .store()
            .list(Some(prefix))
            .try_filter_map(|meta| {
                let parsed = parse_document_path(meta.location.as_ref())
                    .map(|(name, revision)| (name, revision, meta));
                futures::future::ready(Ok(parsed))
            })
            .try_collect()
            .await?)
    }

    /// The newest document of each table under `prefix`.
    pub(super) async fn latest(
        &self,
        prefix: &Path,
    ) -> Result<BTreeMap<TableName, (u64, ObjectMeta)>> {
        let mut latest: BTreeMap<TableName, (u64, ObjectMeta)> = BTreeMap::new();
        for (name, revision, meta) in self.documents(prefix).await? {
            match latest.get(&name) {
                Some((known, _)) if *known >= revision => {}
                _ => {
                    latest.insert(name, (revision, meta));
                }
            }
        }
        Ok(latest)
    }

    /// The definition of `name`, read from the lake now (no cache): for changes, which must
    /// start from the latest revision. Everything else asks [`Catalog::definition`].
    pub(crate) async fn read_definition(&self, name: &TableName) -> Result<TableDefinition> {
        Ok(self.read_tagged_definition(name).await?.0)
    }

    /// [`Catalog::read_definition`], with the document's entity tag when the store gives one.
    pub(super) async fn read_tagged_definition(
        &self,
        name: &TableName,
    ) -> Result<(TableDefinition, Option<String>)> {
        let mut newest = self
            .latest(&table_prefix(name))
            .await?
            .remove(name)
            .map(|(r, meta)| (r, meta.location));
        if newest.is_none() {
            // Tarn 0.1 kept one document per table beside the revision folders.
            let legacy = legacy_path(name);
            match self.lake.store().head(&legacy).await {
                Ok(_) => newest = Some((0, legacy)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let (_, path) = newest.ok_or_else(|| Error::TableNotFound { name: name.to_string() })?;
        read_tagged_document(self.lake.store().as_ref(), &path)
            .await?
            .ok_or_else(|| Error::TableNotFound { name: name.to_string() })
    }

    /// Stores `definition` as its revision; fails with [`Error::Conflict`] when that revision
    /// exists already (another process changed the table meanwhile). Returns the document's
    /// entity tag, when the store gives one.
    pub(crate) async fn put_document(
        &self,
        definition: &TableDefinition,
    ) -> Result<Option<String>> {
        let name = definition.name();
        let path = revision_path(&name, definition.revision);
        let body = serde_json::to_vec_pretty(definition).expect("definitions serialize");
        let put = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.lake.store().put_opts(&path, PutPayload::from(Bytes::from(body)), put).await {
            Ok(written) => Ok(written.e_tag),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Err(if definition.revision == 0 {
                Error::TableExists { name: name.to_string() }
            } else {
                Error::Conflict {
                    name: name.to_string(),
                    reason: "its definition was changed by someone else meanwhile; read it \
                                 again and retry"
                        .into(),
                }
            }),
            Err(e) => Err(e.into()),
        }
    }
}

/// The URL of an external table's data.
pub(crate) fn external_url(external: &ExternalSource) -> Result<url::Url> {
    url::Url::parse(&external.url).map_err(|e| Error::InvalidDefinition {
        reason: format!("the external URL '{}' is not valid: {e}", external.url),
    })
}

/// `_tarn/catalog/tables/<namespace>/<table>/`: the table's documents.
pub(super) fn table_prefix(name: &TableName) -> Path {
    Path::from(format!("{TABLES_PREFIX}/{}/{}", name.namespace(), name.name()))
}

/// The document of one revision.
fn revision_path(name: &TableName, revision: u64) -> Path {
    Path::from(format!("{TABLES_PREFIX}/{}/{}/{revision:010}.json", name.namespace(), name.name()))
}

/// Where Tarn 0.1 kept a table's only document.
pub(super) fn legacy_path(name: &TableName) -> Path {
    Path::from(format!("{TABLES_PREFIX}/{}/{}.json", name.namespace(), name.name()))
}

/// The table and revision a document path holds (legacy documents are revision 0).
fn parse_document_path(location: &str) -> Option<(TableName, u64)> {
    let rest = location.strip_prefix(TABLES_PREFIX)?.strip_prefix('/')?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [namespace, file] => Some((
            TableName::parse_stored(&format!("{namespace}.{}", file.strip_suffix(".json")?))
                .ok()?,
            0,
        )),
        [namespace, table, file] => {
            let revision = file.strip_suffix(".json")?.parse().ok()?;
            Some((TableName::parse_stored(&format!("{namespace}.{table}")).ok()?, revision))
        }
        _ => None,
    }
}

pub(super) async fn read_document(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Option<TableDefinition>> {
    Ok(read_tagged_document(store, path).await?.map(|(definition, _)| definition))
}

/// [`read_document`], with the document's entity tag when the store gives one.
async fn read_tagged_document(
    store: &dyn ObjectStore,
    path: &Path,
) -> Result<Option<(TableDefinition, Option<String>)>> {
    let (bytes, e_tag) = match store.get(path).await {
        Ok(result) => {
            let e_tag = result.meta.e_tag.clone();
            (result.bytes().await?, e_tag)
        }
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let definition: TableDefinition = serde_json::from_slice(&bytes)
        .map_err(|source| Error::Document { path: path.to_string(), source })?;
    // Every definition handed out has a valid name, so `TableDefinition::name` cannot fail.
    definition.parse_name().map_err(|e| Error::Document {
        path: path.to_string(),
        source: serde::de::Error::custom(e.to_string()),
    })?;
    Ok(Some((definition, e_tag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_paths() {
        let name = TableName::parse("web.clicks").unwrap();
        let path = revision_path(&name, 3);
        assert_eq!(path.as_ref(), "_tarn/catalog/tables/web/clicks/0000000003.json");
        assert_eq!(parse_document_path(path.as_ref()), Some((name.clone(), 3)));
        assert_eq!(parse_document_path(legacy_path(&name).as_ref()), Some((name, 0)));
        assert_eq!(parse_document_path("_tarn/catalog/tables/web/clicks/notes.txt"), None);
    }
}
