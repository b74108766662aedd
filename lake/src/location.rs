//! Where a lake lives.

use std::path::{Path, PathBuf};

use url::Url;

use crate::{Error, Result};

/// A parsed lake location.
///
/// | written as | means |
/// |---|---|
/// | `./lake`, `lake`, `/srv/lake` | a directory on local disk (created if missing) |
/// | `file:///srv/lake` | the same, as a URL |
/// | `s3://bucket/prefix` (or `s3a://`) | a prefix in an S3 bucket (AWS, MinIO, any S3-compatible server) |
/// | `memory://` | an in-process store, gone when the process ends (tests, demos) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LakeLocation {
    /// A directory on local disk, always absolute.
    Local(PathBuf),
    /// An in-memory object store.
    Memory,
    /// A prefix in an S3 bucket.
    S3 {
        /// The bucket name.
        bucket: String,
        /// The key prefix inside the bucket, without leading or trailing `/` (may be empty).
        prefix: String,
    },
}

impl LakeLocation {
    /// Parses a location as given on the command line or in `TARN_LAKE`.
    ///
    /// Relative directories are resolved against the current working directory. Nothing is
    /// created or contacted here.
    pub fn parse(location: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::InvalidLocation {
            location: location.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(invalid("the location is empty"));
        }
        match trimmed.split_once("://") {
            None => {
                let path = Path::new(trimmed);
                let absolute = if path.is_absolute() {
                    path.to_path_buf()
                } else {
                    std::env::current_dir()
                        .map_err(|e| invalid(&format!("cannot read the working directory: {e}")))?
                        .join(path)
                };
                Ok(LakeLocation::Local(normalize(&absolute)))
            }
            Some((scheme, rest)) => match scheme.to_ascii_lowercase().as_str() {
                "file" => {
                    let url = Url::parse(trimmed).map_err(|e| invalid(&e.to_string()))?;
                    let path = url
                        .to_file_path()
                        .map_err(|_| invalid("a file:// URL needs an absolute path"))?;
                    Ok(LakeLocation::Local(normalize(&path)))
                }
                "memory" => {
                    if !rest.trim_matches('/').is_empty() {
                        return Err(invalid("memory:// takes no path"));
                    }
                    Ok(LakeLocation::Memory)
                }
                "s3" | "s3a" => {
                    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                    if bucket.is_empty() {
                        return Err(invalid("an S3 location needs a bucket: s3://bucket/prefix"));
                    }
                    if !bucket.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    }) {
                        return Err(invalid(
                            "S3 bucket names use lowercase letters, digits, '-' and '.'",
                        ));
                    }
                    let prefix = prefix.trim_matches('/');
                    if prefix.split('/').any(|p| p == "." || p == "..") {
                        return Err(invalid("the S3 prefix may not contain '.' or '..' segments"));
                    }
                    Ok(LakeLocation::S3 { bucket: bucket.to_string(), prefix: prefix.to_string() })
                }
                other => Err(invalid(&format!(
                    "unsupported scheme '{other}://'; use a directory, file://, s3:// or memory://"
                ))),
            },
        }
    }

    /// The location as a URL that ends with `/`, the form deltalake and object_store expect.
    pub fn url(&self) -> Url {
        match self {
            LakeLocation::Local(path) => {
                let mut url =
                    Url::from_directory_path(path).expect("local lake paths are absolute");
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                url
            }
            LakeLocation::Memory => Url::parse("memory:///").expect("static URL"),
            LakeLocation::S3 { bucket, prefix } => {
                let s = if prefix.is_empty() {
                    format!("s3://{bucket}/")
                } else {
                    format!("s3://{bucket}/{prefix}/")
                };
                Url::parse(&s).expect("bucket and prefix were validated")
            }
        }
    }

    /// True for `s3://` locations.
    pub fn is_s3(&self) -> bool {
        matches!(self, LakeLocation::S3 { .. })
    }
}

impl std::fmt::Display for LakeLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LakeLocation::Local(path) => write!(f, "{}", path.display()),
            other => write!(f, "{}", other.url()),
        }
    }
}

/// Removes `.` and `..` components without touching the file system (the directory may not
/// exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_directory_becomes_absolute() {
        let loc = LakeLocation::parse("./lake").unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(loc, LakeLocation::Local(cwd.join("lake")));
        assert!(loc.url().as_str().starts_with("file:///"));
        assert!(loc.url().as_str().ends_with("/lake/"));
    }

    #[test]
    fn file_url_and_absolute_path_agree() {
        assert_eq!(
            LakeLocation::parse("file:///srv/data/lake").unwrap(),
            LakeLocation::parse("/srv/data/./lake").unwrap()
        );
    }

    #[test]
    fn s3_with_and_without_prefix() {
        assert_eq!(
            LakeLocation::parse("s3://my-bucket/a/b/").unwrap(),
            LakeLocation::S3 { bucket: "my-bucket".into(), prefix: "a/b".into() }
        );
        let root = LakeLocation::parse("s3://my-bucket").unwrap();
        assert_eq!(root.url().as_str(), "s3://my-bucket/");
        assert_eq!(LakeLocation::parse("s3a://b/p").unwrap().url().as_str(), "s3://b/p/");
    }

    #[test]
    fn memory() {
        assert_eq!(LakeLocation::parse("memory://").unwrap(), LakeLocation::Memory);
    }

    #[test]
    fn refusals_say_why() {
        let err = LakeLocation::parse("gs://bucket").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme 'gs://'"), "{err}");
        let err = LakeLocation::parse("s3:///prefix").unwrap_err().to_string();
        assert!(err.contains("needs a bucket"), "{err}");
        let err = LakeLocation::parse("s3://Bucket_1/x").unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
        assert!(LakeLocation::parse("  ").is_err());
    }
}
