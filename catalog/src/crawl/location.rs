//! Which locations may be crawled from where, and which files below them may be read.
//!
//! From the command line ([`CrawlFrom::CommandLine`]) a crawl reads whatever its user can:
//! any directory, `file://` URL or `s3://` prefix; relative paths are relative to the working
//! directory; symbolic links are followed.
//!
//! Over the HTTP API ([`CrawlFrom::Api`]) a crawl may read `s3://` locations (what the
//! server's credentials allow) and, when the lake is a local directory, directories inside
//! it, never other local files:
//!
//! * a relative path (`imports/sales`) is relative to the lake's root and is built segment by
//!   segment below the lake's URL. Percent-encoding is allowed (`my%20data`); a segment that
//!   is `.` or `..` (also encoded: `%2e%2e`), holds a backslash, or holds a `/` or a control
//!   character once decoded is refused (400);
//! * an absolute path or `file://` URL is resolved as text first (`..` removed), then its
//!   real place, with symbolic links resolved, must be inside the lake's real directory. A
//!   path that does not exist (yet) is judged by its deepest existing ancestor, so
//!   `<lake>/link-to-elsewhere/new` is refused like `<lake>/link-to-elsewhere`; a dangling
//!   link on the way is refused, since where it leads cannot be told;
//! * the check is made again when the crawl starts;
//! * **symbolic links below the crawled directory**: links that stay inside the lake are
//!   followed; a file whose real place is outside the lake is never read, and a table with
//!   such a file (or behind such a directory link) is not registered: the report names the
//!   link. (The local listing itself walks through links, as object_store's does; what it
//!   finds behind one that leaves the lake is neither read nor named.)

use std::collections::HashMap;
use std::path::{Component, Path as FsPath, PathBuf};

use tarn_lake::LakeLocation;
use url::Url;

use crate::{Error, Result};

/// Who asks for a crawl; decides which locations may be crawled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrawlFrom {
    /// `tarn crawl` on the command line: any location the user can read. Relative paths are
    /// relative to the working directory.
    CommandLine,
    /// `POST /v1/crawl`: `s3://` locations, and local directories only inside a local lake
    /// (anything else would let an API client make the server read arbitrary files). Relative
    /// paths are relative to the lake's root (`imports/sales` is `<lake>/imports/sales/`).
    Api,
}

/// A location checked for who asked to crawl it; made by [`super::Crawler::location`].
#[derive(Debug, Clone)]
pub struct CrawlLocation {
    url: Url,
    /// For local directories crawled over the API: the lake's real directory, which nothing
    /// read may leave.
    confined_to: Option<PathBuf>,
}

impl CrawlLocation {
    /// The location's URL (ends with `/`).
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The real directory that every file read must be inside, if any.
    pub(crate) fn confined_to(&self) -> Option<&FsPath> {
        self.confined_to.as_deref()
    }
}

impl std::fmt::Display for CrawlLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.url.fmt(f)
    }
}

const OUTSIDE: &str = "over the HTTP API only s3:// locations and directories inside the lake \
                       may be crawled; crawl other local directories with `tarn crawl` on the \
                       command line";

/// The location `location` if `from` may crawl it in `lake` (see the module documentation).
pub(crate) fn locate(
    lake: &LakeLocation,
    location: &str,
    from: CrawlFrom,
) -> Result<CrawlLocation> {
    let refuse = |reason: String, forbidden: bool| Error::Location {
        location: location.to_string(),
        reason,
        forbidden,
    };
    let trimmed = location.trim();
    let parsed = if from == CrawlFrom::Api && !trimmed.contains("://") && !trimmed.starts_with('/')
    {
        let segments = lake_relative(trimmed).map_err(|reason| refuse(reason, false))?;
        let url = below(&lake.url(), &segments)
            .ok_or_else(|| refuse("not a path below the lake".into(), false))?;
        LakeLocation::parse(url.as_str()).map_err(|e| refuse(e.to_string(), false))?
    } else {
        LakeLocation::parse(trimmed).map_err(|e| refuse(e.to_string(), false))?
    };
    let confined_to = match (&parsed, from) {
        (LakeLocation::Memory, _) => {
            return Err(refuse("memory:// holds nothing to crawl".into(), false))
        }
        (LakeLocation::Local(path), CrawlFrom::Api) => {
            let LakeLocation::Local(lake_dir) = lake else {
                return Err(refuse(OUTSIDE.into(), true));
            };
            match real_path(lake_dir) {
                Some(root) if inside(path, &root) => Some(root),
                _ => return Err(refuse(OUTSIDE.into(), true)),
            }
        }
        _ => None,
    };
    Ok(CrawlLocation { url: parsed.url(), confined_to })
}

/// Checks again, when the crawl starts, that a confined location is still inside its lake
/// (a directory may have been replaced by a link meanwhile).
pub(crate) fn recheck(location: &CrawlLocation) -> Result<()> {
    let Some(root) = location.confined_to() else { return Ok(()) };
    let still_inside = location.url.to_file_path().is_ok_and(|path| inside(&path, root));
    if still_inside {
        Ok(())
    } else {
        Err(Error::Location {
            location: location.url.to_string(),
            reason: OUTSIDE.into(),
            forbidden: true,
        })
    }
}

/// The segments of a path relative to the lake's root as the API takes it (see the module
/// documentation), decoded; or why it is refused.
fn lake_relative(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut segments = Vec::new();
    for raw in text.split('/').filter(|s| !s.is_empty()) {
        if raw.contains('\\') {
            return Err("a path in the lake may not contain '\\'".into());
        }
        let segment = percent_decode(raw)
            .ok_or_else(|| format!("'{raw}' is not UTF-8 once percent-decoded"))?;
        if segment == "." || segment == ".." {
            return Err("a path in the lake may not contain '.' or '..'".into());
        }
        if segment.contains(['/', '\\']) || segment.chars().any(char::is_control) {
            return Err(format!(
                "'{raw}' holds a '/', '\\' or a control character once percent-decoded"
            ));
        }
        segments.push(segment);
    }
    Ok(segments)
}

/// `%XX` sequences decoded (a `%` not followed by two hex digits stays); `None` when the
/// result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (byte, _, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The URL of the directory `segments` (raw names, as object paths hold them) below the
/// directory URL `base`; each segment is percent-encoded, so none can climb out of `base` or
/// split in two. `None` for an empty, `.` or `..` segment.
pub(crate) fn below(base: &Url, segments: &[String]) -> Option<Url> {
    if segments.iter().any(|s| s.is_empty() || s == "." || s == "..") {
        return None;
    }
    if segments.is_empty() {
        return Some(base.clone());
    }
    let mut url = base.clone();
    url.path_segments_mut().ok()?.pop_if_empty().extend(segments).push("");
    Some(url)
}

/// Where `path` really is, with every symbolic link resolved, also when it does not exist
/// (yet): its deepest existing ancestor resolved, the rest appended. `None` when that cannot
/// be told: a relative path, `.` or `..` in it, or a dangling link on the way.
pub(crate) fn real_path(path: &FsPath) -> Option<PathBuf> {
    if !path.is_absolute()
        || path.components().any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return None;
    }
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(resolved) => return Some(rest.iter().rev().fold(resolved, |p, name| p.join(name))),
            Err(_) if existing.symlink_metadata().is_ok_and(|m| m.is_symlink()) => return None,
            Err(_) => {
                rest.push(existing.file_name()?);
                existing = existing.parent()?;
            }
        }
    }
}

/// True when `path` is really inside `root` (a real path, see [`real_path`]).
pub(crate) fn inside(path: &FsPath, root: &FsPath) -> bool {
    real_path(path).is_some_and(|real| real.starts_with(root))
}

/// Files found below a confined directory whose real place is outside the lake, each with
/// the first symbolic link on its way that leads out (segments below the crawled directory).
#[derive(Debug, Default)]
pub(crate) struct LinksLeaving(Vec<(Vec<String>, Vec<String>)>);

impl LinksLeaving {
    /// Looks at the real place of every file of `files` (segments below the directory `dir`).
    pub(crate) fn find(root: &FsPath, dir: &FsPath, files: &[Vec<String>]) -> Self {
        let mut outside: HashMap<PathBuf, bool> = HashMap::new();
        let mut leaving = Vec::new();
        for segments in files {
            let path_of = |n: usize| -> Option<PathBuf> {
                let plain = |s: &String| !s.is_empty() && s != "." && s != ".." && !s.contains('/');
                segments[..n]
                    .iter()
                    .all(plain)
                    .then(|| segments[..n].iter().fold(dir.to_path_buf(), |path, s| path.join(s)))
            };
            let file_inside = path_of(segments.len()).is_some_and(|path| inside(&path, root));
            if file_inside {
                continue;
            }
            let link = (1..=segments.len())
                .find(|&n| {
                    let Some(path) = path_of(n) else { return true };
                    *outside.entry(path.clone()).or_insert_with(|| !inside(&path, root))
                })
                .unwrap_or(segments.len());
            leaving.push((segments.clone(), segments[..link].to_vec()));
        }
        LinksLeaving(leaving)
    }

    /// For a table rooted at `table_root` below `base`: when some of its files are outside
    /// the lake, the place to report and why it is not registered.
    pub(crate) fn refusal(&self, base: &Url, table_root: &[String]) -> Option<(Url, String)> {
        let (file, link) = self.0.iter().find(|(file, _)| file.starts_with(table_root))?;
        let mut link_url = below(base, link)?;
        if link.len() == file.len() {
            // The file itself is the link: its URL has no trailing `/`.
            link_url.path_segments_mut().ok()?.pop_if_empty();
        }
        let rule = "over the HTTP API the crawler does not follow links that leave the lake; \
                    crawl it with `tarn crawl` on the command line";
        if link.len() <= table_root.len() {
            Some((link_url, format!("a symbolic link to a place outside the lake: {rule}")))
        } else {
            let table_url = below(base, table_root)?;
            Some((
                table_url,
                format!(
                    "some of its files are behind {link_url}, a symbolic link to a place outside \
                     the lake: {rule}"
                ),
            ))
        }
    }
}

#[cfg(test)]
#[path = "location_tests.rs"]
mod tests;
