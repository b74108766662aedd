//! Landing-page forms: `application/x-www-form-urlencoded` and `multipart/form-data` posts
//! from browsers, turned into one JSON record, and where to send the browser afterwards.
//!
//! A form field becomes the column of the same name. Empty fields are missing values (what an
//! empty input means); a field sent several times (checkbox groups) becomes a JSON array for a
//! `json` column and the values joined with `, ` otherwise. Booleans accept what checkboxes
//! send (`on`). The table's `forms.honeypot` field is never stored: a post that fills it is a
//! bot's, answered as if accepted and dropped.

use bytes::Bytes;
use serde_json::{Map, Value};
use tarn_catalog::spec::{origin_of, FormSpec};
use tarn_catalog::ColumnType;

use crate::{Error, TablePlan};

/// What a form post amounts to.
pub enum FormRecord {
    /// One JSON record to ingest.
    Record(Bytes),
    /// The honeypot was filled: answer as accepted, store nothing.
    Bot,
}

/// Parses an urlencoded body into its fields.
pub fn urlencoded_fields(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Parses a `multipart/form-data` body into its fields; file fields are refused.
pub async fn multipart_fields(
    content_type: &str,
    body: Bytes,
) -> Result<Vec<(String, String)>, Error> {
    let boundary = multer::parse_boundary(content_type)
        .map_err(|e| Error::BadForm(format!("bad multipart/form-data content type: {e}")))?;
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut fields = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| Error::BadForm(format!("bad multipart/form-data body: {e}")))?
    {
        let name = field.name().unwrap_or_default().to_string();
        if field.file_name().is_some() {
            return Err(Error::BadForm(format!(
                "form field '{name}' is a file; files are loaded with POST /v1/tables/{{table}}/files"
            )));
        }
        let bad = |e: multer::Error| Error::BadForm(format!("form field '{name}': {e}"));
        let charset = field
            .content_type()
            .and_then(|m| m.get_param(mime::CHARSET))
            .map(|c| c.as_str().to_ascii_lowercase());
        let value = match charset.as_deref() {
            // multer's `text()` sniffs byte-order marks and drops a leading U+FEFF the user
            // typed; UTF-8 (what browsers send) is taken as it is.
            None | Some("utf-8") | Some("utf8") => {
                String::from_utf8_lossy(&field.bytes().await.map_err(bad)?).into_owned()
            }
            Some(_) => field.text().await.map_err(bad)?,
        };
        fields.push((name, value));
    }
    Ok(fields)
}

/// The record a form post makes for `plan`'s table.
pub fn record(plan: &TablePlan, fields: Vec<(String, String)>) -> FormRecord {
    let honeypot = plan.definition.spec.forms.honeypot.as_deref();
    let mut object: Map<String, Value> = Map::new();
    for (name, value) in fields {
        if Some(name.as_str()) == honeypot {
            if !value.trim().is_empty() {
                return FormRecord::Bot;
            }
            continue;
        }
        if value.trim().is_empty() {
            object.entry(name).or_insert(Value::Null);
            continue;
        }
        let json_column = plan.column_type(&name) == Some(ColumnType::Json);
        match object.get_mut(&name) {
            Some(Value::Array(values)) if json_column => values.push(Value::String(value)),
            Some(Value::String(first)) if json_column => {
                let first = std::mem::take(first);
                object.insert(name, Value::Array(vec![Value::String(first), Value::String(value)]));
            }
            Some(Value::String(joined)) => {
                joined.push_str(", ");
                joined.push_str(&value);
            }
            _ => {
                object.insert(name, Value::String(value));
            }
        }
    }
    FormRecord::Record(Bytes::from(Value::Object(object).to_string()))
}

/// Checks a `?redirect=` target: an http(s) URL whose origin the table's forms allow (or the
/// origin of its configured success or error page). Anything else would make Tarn an open
/// redirector.
pub fn check_redirect(forms: &FormSpec, target: &str) -> Result<(), Error> {
    let origin = origin_of(target).ok_or_else(|| {
        Error::BadForm(format!("redirect target '{target}' is not an http(s) URL"))
    })?;
    let allowed = forms
        .allowed_origins
        .iter()
        .cloned()
        .chain(forms.success_url.iter().chain(forms.error_url.iter()).filter_map(|u| origin_of(u)))
        .any(|o| o == origin);
    if allowed {
        Ok(())
    } else {
        Err(Error::BadForm(format!(
            "redirect target '{target}' is not allowed: add {origin} to the table's \
             forms.allowed_origins"
        )))
    }
}

/// `url` with `key=value` added to its query.
pub fn with_param(url: &str, key: &str, value: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.query_pairs_mut().append_pair(key, value);
            parsed.to_string()
        }
        Err(_) => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_only_to_allowed_origins() {
        let forms = FormSpec {
            allowed_origins: vec!["https://www.example.com".into()],
            error_url: Some("https://forms.example.com/oops".into()),
            ..FormSpec::default()
        };
        assert!(check_redirect(&forms, "https://www.example.com/thanks?x=1").is_ok());
        assert!(check_redirect(&forms, "https://forms.example.com/other").is_ok());
        let err = check_redirect(&forms, "https://evil.example.net/").unwrap_err().to_string();
        assert!(err.contains("add https://evil.example.net"), "{err}");
        assert!(check_redirect(&forms, "javascript:alert(1)").is_err());
        assert_eq!(
            with_param("https://a.com/p?x=1", "error", "bad email"),
            "https://a.com/p?x=1&error=bad+email"
        );
    }

    /// A `multipart/form-data` body as a browser sends it.
    fn multipart(boundary: &str, fields: &[(String, String)]) -> Vec<u8> {
        let mut body = String::new();
        for (name, value) in fields {
            body.push_str(&format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            ));
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        body.into_bytes()
    }

    fn multipart_sync(content_type: &str, body: Vec<u8>) -> Result<Vec<(String, String)>, Error> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(multipart_fields(content_type, Bytes::from(body)))
    }

    /// Field names a browser sends as they are (it escapes `"` and line breaks in names).
    const NAME: &str = "[a-zA-Z0-9_.\\[\\] -]{1,16}";

    proptest::proptest! {
        #[test]
        fn prop_urlencoded_fields_come_back(
            fields in proptest::collection::vec((proptest::prelude::any::<String>(), proptest::prelude::any::<String>()), 0..8),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        ) {
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields.iter())
                .finish();
            proptest::prop_assert_eq!(urlencoded_fields(body.as_bytes()), fields);
            // Anything else is taken as well as it can be.
            let _ = urlencoded_fields(&junk);
        }

        #[test]
        fn prop_multipart_fields_come_back(
            fields in proptest::collection::vec((NAME, "\\PC{0,40}|[^\\x00]{0,40}"), 0..6),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let boundary = "----tarn-boundary-7MA4YWxkTrZu0gW";
            let content_type = format!("multipart/form-data; boundary={boundary}");
            let body = multipart(boundary, &fields);
            let back = multipart_sync(&content_type, body.clone());
            proptest::prop_assert_eq!(back.map_err(|e| e.to_string()), Ok(fields));
            // A cut or foreign body is an error that says it is a bad form, never a panic.
            let cut_at = cut.index(body.len());
            for body in [body[..cut_at].to_vec(), junk] {
                if let Err(e) = multipart_sync(&content_type, body) {
                    proptest::prop_assert!(e.to_string().contains("form"), "{e}");
                }
            }
        }
    }

    /// Found by `prop_multipart_fields_come_back`: a value starting with U+FEFF lost it.
    #[test]
    fn multipart_values_keep_a_leading_byte_order_mark() {
        let boundary = "b0undary";
        let body = multipart(boundary, &[("A".into(), "\u{feff}x".into())]);
        let fields = multipart_sync(&format!("multipart/form-data; boundary={boundary}"), body);
        assert_eq!(fields.unwrap(), vec![("A".to_string(), "\u{feff}x".to_string())]);
    }

    #[test]
    fn urlencoded() {
        assert_eq!(
            urlencoded_fields(b"email=a%40b.com&name=Ada+L&consent=on"),
            vec![
                ("email".to_string(), "a@b.com".to_string()),
                ("name".to_string(), "Ada L".to_string()),
                ("consent".to_string(), "on".to_string())
            ]
        );
    }
}
