//! How a request body is framed, from its `Content-Type`.

use crate::Error;

/// How a request body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/json`: one object, an array of objects, or objects one after another.
    Json,
    /// `application/x-ndjson` (also `application/jsonl`): one object per line.
    Ndjson,
    /// `text/csv`: a header row, then one record per row.
    Csv,
}

impl Format {
    /// Picks the format from a `Content-Type` header value.
    ///
    /// A missing content type is read as JSON. `application/x-www-form-urlencoded` — what
    /// `curl -d` sends when no type is given — is read as JSON when the body is clearly JSON
    /// (starts with `{` or `[`).
    pub fn from_content_type(content_type: Option<&str>, body: &[u8]) -> Result<Format, Error> {
        let Some(content_type) = content_type else {
            return Ok(Format::Json);
        };
        let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        match essence.as_str() {
            "" | "application/json" | "text/json" => Ok(Format::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines"
            | "application/jsonlines" => Ok(Format::Ndjson),
            "application/x-www-form-urlencoded" if looks_like_json(body) => Ok(Format::Json),
            "text/csv" | "application/csv" => Ok(Format::Csv),
            other => Err(Error::UnsupportedMediaType(format!(
                "content type '{other}' is not supported for ingest; send application/json \
                 (an object or an array of objects), application/x-ndjson (one object per \
                 line), text/csv (with a header row) or a form"
            ))),
        }
    }
}

fn looks_like_json(body: &[u8]) -> bool {
    matches!(body.iter().find(|b| !b.is_ascii_whitespace()), Some(b'{') | Some(b'['))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(Format::from_content_type(None, b"").unwrap(), Format::Json);
        assert_eq!(
            Format::from_content_type(Some("application/json; charset=utf-8"), b"").unwrap(),
            Format::Json
        );
        assert_eq!(
            Format::from_content_type(Some("application/x-ndjson"), b"").unwrap(),
            Format::Ndjson
        );
        assert_eq!(
            Format::from_content_type(Some("application/x-www-form-urlencoded"), b" {\"a\":1}")
                .unwrap(),
            Format::Json
        );
        assert_eq!(Format::from_content_type(Some("text/csv"), b"a,b").unwrap(), Format::Csv);
        let err = Format::from_content_type(Some("image/png"), b"").unwrap_err();
        assert!(err.to_string().contains("'image/png' is not supported"), "{err}");
    }
}
