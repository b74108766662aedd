//! A browser form submitted to a table: one record, and where to send the browser next.
//!
//! The page to go to after a post is the `?redirect=` target (checked against the table's
//! allowed origins, so Tarn is no open redirector) or the table's `forms.success_url`; a
//! rejected record goes to `forms.error_url` (or the success page) with `?error=<reason>`.
//! A post that fills the honeypot field is a bot's: it goes where a person's would, and
//! nothing is stored.

use bytes::Bytes;
use tarn_catalog::TableName;

use crate::form::{self, FormRecord};
use crate::{Error, Format, IngestOptions, IngestReceipt, Ingestor, Result, Source};

/// What a form post came to.
#[derive(Debug)]
pub struct FormAnswer {
    /// The ingest receipt; `None` for a bot's post (nothing stored).
    pub receipt: Option<IngestReceipt>,
    /// Where to send the browser (a 303), if a page is configured or asked for.
    pub next: Option<String>,
}

impl Ingestor {
    /// Ingests the `fields` of a form posted to `name` as one record (see the module
    /// documentation); `redirect` is the page the form asks to go to afterwards.
    pub async fn submit_form(
        &self,
        name: &TableName,
        fields: Vec<(String, String)>,
        redirect: Option<&str>,
        options: IngestOptions,
    ) -> Result<FormAnswer> {
        let plan = match self.tables().plan(name).await {
            Ok(plan) => Some(plan),
            Err(Error::Catalog(tarn_catalog::Error::TableNotFound { .. })) => None,
            Err(e) => return Err(e),
        };
        let forms = plan.as_ref().map(|p| p.definition.spec.forms.clone()).unwrap_or_default();
        if let Some(target) = redirect {
            form::check_redirect(&forms, target)?;
        }
        let success = redirect.map(String::from).or(forms.success_url.clone());
        let record = match &plan {
            Some(plan) => form::record(plan, fields),
            // A new table: all text, created from this first form.
            None => {
                let object: serde_json::Map<String, serde_json::Value> = fields
                    .into_iter()
                    .map(|(k, v)| {
                        (k, if v.is_empty() { serde_json::Value::Null } else { v.into() })
                    })
                    .collect();
                FormRecord::Record(Bytes::from(serde_json::Value::Object(object).to_string()))
            }
        };
        let body = match record {
            FormRecord::Record(body) => body,
            FormRecord::Bot => {
                tracing::info!(table = %name, "dropped a form post that filled the honeypot field");
                return Ok(FormAnswer { receipt: None, next: success });
            }
        };
        let options = IngestOptions { source: Source::Form, ..options };
        let receipt = self.ingest(name, body, Format::Json, options).await?;
        let next = if receipt.rejected > 0 {
            let reason = receipt.errors.first().cloned().unwrap_or_else(|| "rejected".into());
            forms.error_url.clone().or(success).map(|url| form::with_param(&url, "error", &reason))
        } else {
            success
        };
        Ok(FormAnswer { receipt: Some(receipt), next })
    }
}
