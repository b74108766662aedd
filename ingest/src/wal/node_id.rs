//! This node's id, kept in the WAL directory (`node-id`) so that it survives restarts: it
//! names the Delta `txn` application ids of this node's commits (`tarn-<id>-<table>`), which
//! is how a restart tells which logged records the lake holds already.
//!
//! A missing file is a first start: a new id is written (aside, synced, linked into place, the
//! directory synced; two first starts at once agree on one id). A file that cannot be read,
//! is empty or holds anything but an id is an error ([`WalError::NodeId`]), and so is a
//! missing file beside segments that hold records: a new id would make every record still in
//! the log look uncommitted, and replaying them would duplicate rows.

use std::io::ErrorKind;
use std::path::Path;

use super::error::WalError;
use super::segment::sync_dir;

/// The longest id read back.
const MAX_LEN: usize = 64;

/// The id of this node, from `dir/node-id`; created on first start.
pub fn node_id(dir: &Path) -> Result<String, WalError> {
    let path = dir.join("node-id");
    let problem = |problem: String| WalError::NodeId { path: path.display().to_string(), problem };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let text =
                std::str::from_utf8(&bytes).map_err(|_| problem("it is not text".into()))?.trim();
            if text.is_empty() {
                return Err(problem("it is empty".into()));
            }
            let valid = text.len() <= MAX_LEN
                && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                let shown: String = text.chars().take(MAX_LEN).collect();
                return Err(problem(format!(
                    "it holds {shown:?}, not an id (1 to {MAX_LEN} letters, digits, '-' or '_')"
                )));
            }
            Ok(text.to_string())
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {
            let logged = super::segment::list(dir)?
                .iter()
                .any(|(_, segment)| std::fs::metadata(segment).is_ok_and(|m| m.len() > 0));
            if logged {
                return Err(problem(
                    "it is missing, but the log holds records: they are checked against the \
                     lake by this id"
                        .into(),
                ));
            }
            create(dir, &path)
        }
        Err(e) => Err(problem(format!("it cannot be read ({e})"))),
    }
}

fn create(dir: &Path, path: &Path) -> Result<String, WalError> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let aside = dir.join(format!("node-id.{id}"));
    // A link fails where the name exists: of two first starts at once, one id wins.
    let written = std::fs::write(&aside, &id)
        .and_then(|()| std::fs::File::open(&aside)?.sync_all())
        .and_then(|()| match std::fs::hard_link(&aside, path) {
            // A file system without links: rename (the last of two first starts wins).
            Err(e) if e.kind() == ErrorKind::Unsupported => std::fs::rename(&aside, path),
            linked => linked,
        });
    let _ = std::fs::remove_file(&aside);
    match written {
        Ok(()) => sync_dir(dir).map_err(WalError::io(dir))?,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return node_id(dir),
        Err(e) => return Err(WalError::io(dir)(e)),
    }
    tracing::info!(node = %id, file = %path.display(), "this is a new node: wrote its id");
    Ok(id)
}
