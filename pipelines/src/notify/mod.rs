//! Delivery of notifications for scheduled jobs that fail and for alarms.
//!
//! Two channels are supported:
//!
//! * **webhook**: an HTTP `POST` of the notification's facts as JSON to a URL;
//! * **e-mail**: one plain-text message over SMTP to all the addresses of a job or alarm.
//!
//! A [`Notifier`] is built once at start-up from the SMTP settings (`--smtp-url`,
//! `--smtp-from`, ...) and a [`RetryPolicy`]; configuration mistakes are reported then, as
//! [`Error`], and recipients are checked with [`Notifier::check`] when a job or alarm is declared.
//! [`Notifier::send`] never fails: each channel is retried with exponential backoff, every failed
//! attempt is logged with `tracing::warn!`, giving up is logged with `tracing::error!`, and the
//! outcome of each channel is returned as a [`Delivery`].
//!
//! TLS (HTTPS webhooks, `smtps://` and STARTTLS) uses rustls with the platform's root
//! certificates; a private CA can be trusted by pointing `SSL_CERT_FILE` (or `SSL_CERT_DIR`) at
//! it. Secrets are kept out of errors and logs: passwords in SMTP URLs are masked, and webhooks
//! are named by scheme, host and port only, since their path or query often holds a token.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use serde::{Deserialize, Serialize};
use url::Url;

mod smtp;

use smtp::{build_email, build_smtp, parse_recipients};

/// The longest wait between two attempts, whatever the policy or a `Retry-After` header says.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The `User-Agent` of webhook requests.
const USER_AGENT: &str = concat!("tarn/", env!("CARGO_PKG_VERSION"));

/// The message of [`Error::NoSmtp`].
const NO_SMTP: &str = "the job sends e-mail but no SMTP server is configured: \
                       start Tarn with --smtp-url and --smtp-from";

/// How much of a refusing webhook's answer is quoted in the error.
const BODY_SNIPPET: usize = 300;

/// How to reach the SMTP server (`--smtp-url`, `--smtp-from`, ...).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SmtpConfig {
    /// `smtp://host:port` (plain, or STARTTLS when `starttls` is true),
    /// `smtps://host:port` (implicit TLS); user and password may be in the URL
    /// (`smtp://user:pass@host:587`, percent-encoded) or given below. Port defaults: 25 for
    /// smtp, 465 for smtps (587 when starttls).
    pub url: String,
    /// The sender, `Tarn <tarn@example.com>` or `tarn@example.com`.
    pub from: String,
    /// Upgrade a plain connection with STARTTLS (required when true).
    #[serde(default)]
    pub starttls: bool,
    /// Login, when not in the URL (takes precedence over a user in the URL).
    #[serde(default)]
    pub username: Option<String>,
    /// Password, when not in the URL (takes precedence over a password in the URL).
    #[serde(default)]
    pub password: Option<String>,
}

/// What to say: the facts as JSON (the webhook body as is), a subject and a plain-text body for
/// e-mail.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The e-mail subject (line breaks are replaced by spaces).
    pub subject: String,
    /// The e-mail body, followed in the e-mail by a blank line and `json` pretty-printed.
    pub text: String,
    /// The facts: the webhook body as is, and the end of the e-mail body.
    pub json: serde_json::Value,
}

/// Where to say it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recipients {
    /// An `http` or `https` URL that receives a `POST` of the facts as JSON.
    pub webhook: Option<Url>,
    /// E-mail addresses (`ops@example.com` or `Ops <ops@example.com>`), all sent one message.
    pub email: Vec<String>,
}

impl Recipients {
    /// True when nobody is to be told.
    pub fn is_empty(&self) -> bool {
        self.webhook.is_none() && self.email.is_empty()
    }
}

/// How hard delivery tries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per channel, the first included (0 is taken as 1).
    pub attempts: u32,
    /// The wait after the first failed attempt; it doubles after each further one, up to 60 s.
    pub first_backoff: Duration,
    /// The longest one attempt may take (connecting, sending and reading the answer).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 attempts, 1 s first backoff doubling (capped at 60 s), 10 s timeout per attempt.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
        }
    }
}

/// What happened to one channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// `"webhook"` or `"email"`.
    pub channel: String,
    /// True when the receiver accepted the notification.
    pub delivered: bool,
    /// Attempts made (0 when the recipient could not be tried at all).
    pub attempts: u32,
    /// Why the last attempt failed, when not delivered.
    pub error: Option<String>,
}

/// A configuration mistake, found when Tarn starts or when a job or alarm is declared.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SMTP URL (`--smtp-url`) is not an SMTP server's URL.
    #[error("invalid SMTP URL (--smtp-url) `{url}`: {reason}")]
    SmtpUrl {
        /// The URL as given, its password masked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The SMTP login (in `--smtp-url` or the username and password settings) is incomplete.
    #[error("invalid SMTP login (in --smtp-url or the SMTP username and password): {0}")]
    SmtpLogin(String),
    /// TLS for the SMTP server could not be set up.
    #[error("cannot set up TLS for the SMTP server `{host}` (--smtp-url): {reason}")]
    SmtpTls {
        /// The server's host.
        host: String,
        /// Why.
        reason: String,
    },
    /// The sender (`--smtp-from`) is not an e-mail address.
    #[error(
        "invalid sender (--smtp-from) `{from}`: {reason} \
         (expected `Name <user@example.com>` or `user@example.com`)"
    )]
    Sender {
        /// The sender as given.
        from: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An e-mail recipient is not an e-mail address.
    #[error("invalid e-mail recipient `{address}`: {reason}")]
    Recipient {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
    /// E-mail recipients are given but no SMTP server is configured.
    #[error("{}", NO_SMTP)]
    NoSmtp,
    /// The webhook URL cannot be posted to.
    #[error("invalid webhook URL `{url}`: {reason}")]
    Webhook {
        /// The URL's scheme, host and port (the rest may hold a secret).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The HTTP client for webhooks could not be built (TLS set-up).
    #[error("cannot build the HTTP client for webhooks: {0}")]
    HttpClient(String),
}

/// Sends notifications; cheap to clone (Arc inside) and shared by every job and alarm.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

/// What a [`Notifier`] shares between its clones.
struct Inner {
    http: reqwest::Client,
    smtp: Option<Smtp>,
    retry: RetryPolicy,
}

/// A configured SMTP server.
struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The server for logs and errors: `smtp://host:port`, `smtp+starttls://...`, `smtps://...`.
    server: String,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let smtp = self.inner.smtp.as_ref();
        f.debug_struct("Notifier")
            .field("smtp", &smtp.map(|s| &s.server))
            .field("from", &smtp.map(|s| s.from.to_string()))
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Checks the configuration now (bad URL, bad sender: an error at start, not at the first
    /// failure).
    pub fn new(smtp: Option<SmtpConfig>, retry: RetryPolicy) -> Result<Notifier, Error> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            // A redirected POST would become a GET: a redirect is reported, not followed.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(retry.timeout)
            .build()
            .map_err(|e| Error::HttpClient(error_chain(&e)))?;
        let smtp = smtp.map(|config| build_smtp(&config, retry.timeout)).transpose()?;
        Ok(Notifier { inner: Arc::new(Inner { http, smtp, retry }) })
    }

    /// True when e-mail can be sent (an SMTP server is configured).
    pub fn can_email(&self) -> bool {
        self.inner.smtp.is_some()
    }

    /// Checks recipients when a job or alarm is declared: e-mail addresses parse, and e-mail
    /// needs an SMTP server ("the job sends e-mail but no SMTP server is configured: start Tarn
    /// with --smtp-url and --smtp-from"); webhook scheme http or https.
    pub fn check(&self, to: &Recipients) -> Result<(), Error> {
        if let Some(url) = &to.webhook {
            check_webhook(url)?;
        }
        if !to.email.is_empty() && self.inner.smtp.is_none() {
            return Err(Error::NoSmtp);
        }
        parse_recipients(&to.email)?;
        Ok(())
    }

    /// Delivers `message` to every recipient, each channel retried with backoff per the policy;
    /// never fails: what could not be delivered is logged (tracing::warn per failed attempt,
    /// tracing::error when giving up) and reported.
    ///
    /// A webhook is a POST of `message.json` with Content-Type application/json and User-Agent
    /// `tarn/<version>`; 2xx is delivered; 4xx other than 408/429 is not retried (the receiver
    /// refused it), nor is a redirect (not followed); timeouts, connection errors, 5xx, 408, 429
    /// are retried (after the `Retry-After` seconds if longer than the backoff).
    ///
    /// E-mail: one message to all addresses (To: each), Subject and a text/plain body =
    /// `message.text` followed by a blank line and the JSON pretty-printed; a permanent SMTP
    /// error (5xx) is not retried, nor is a refusal by the client itself (the server offers no
    /// STARTTLS, no usable login mechanism); transient (4xx, connection, TLS handshake,
    /// timeout) is.
    ///
    /// The channels are tried concurrently; the result has the webhook first, then e-mail, one
    /// entry per channel that has recipients.
    pub async fn send(&self, message: &Message, to: &Recipients) -> Vec<Delivery> {
        let webhook = async {
            match &to.webhook {
                Some(url) => Some(self.send_webhook(message, url).await),
                None => None,
            }
        };
        let email = async {
            if to.email.is_empty() {
                None
            } else {
                Some(self.send_email(message, &to.email).await)
            }
        };
        let (webhook, email) = tokio::join!(webhook, email);
        webhook.into_iter().chain(email).collect()
    }

    /// Posts the facts to `url`, with retries.
    async fn send_webhook(&self, message: &Message, url: &Url) -> Delivery {
        let target = url_origin(url);
        if let Err(e) = check_webhook(url) {
            return not_tried("webhook", &target, e.to_string());
        }
        let timeout = self.inner.retry.timeout;
        self.deliver("webhook", &target, || async {
            let body = serde_json::to_vec(&message.json).unwrap_or_default();
            let request = self
                .inner
                .http
                .post(url.clone())
                .timeout(timeout)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            let response = match request.send().await {
                Ok(response) => response,
                Err(e) if e.is_timeout() => {
                    return Attempt::Retry(format!("no answer within {timeout:?}"), None);
                }
                Err(e) => return Attempt::Retry(error_chain(&e.without_url()), None),
            };
            let status = response.status();
            if status.is_success() {
                return Attempt::Delivered;
            }
            let retry_after = retry_after(response.headers());
            let redirect = status.is_redirection();
            let answer = body_snippet(response).await;
            let mut error = format!("the webhook answered HTTP {status}");
            if redirect {
                error.push_str(" (redirects are not followed)");
            }
            if !answer.is_empty() {
                error = format!("{error}: {answer}");
            }
            let retryable = status.is_server_error()
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            if retryable {
                Attempt::Retry(error, retry_after)
            } else {
                Attempt::Refused(error)
            }
        })
        .await
    }

    /// Mails the message to all `addresses` at once, with retries.
    async fn send_email(&self, message: &Message, addresses: &[String]) -> Delivery {
        let target = addresses.join(", ");
        let Some(smtp) = &self.inner.smtp else {
            return not_tried("email", &target, NO_SMTP.to_string());
        };
        let target = format!("{target} via {}", smtp.server);
        let to = match parse_recipients(addresses) {
            Ok(to) => to,
            Err(e) => return not_tried("email", &target, e.to_string()),
        };
        let email = match build_email(&smtp.from, &to, message) {
            Ok(email) => email,
            Err(e) => return not_tried("email", &target, format!("cannot build the e-mail: {e}")),
        };
        let envelope = email.envelope().clone();
        let raw = email.formatted();
        let timeout = self.inner.retry.timeout;
        self.deliver("email", &target, || async {
            match tokio::time::timeout(timeout, smtp.transport.send_raw(&envelope, &raw)).await {
                Err(_) => Attempt::Retry(format!("no answer within {timeout:?}"), None),
                Ok(Ok(_)) => Attempt::Delivered,
                Ok(Err(e)) if e.is_permanent() || e.is_client() => Attempt::Refused(e.to_string()),
                Ok(Err(e)) => Attempt::Retry(e.to_string(), None),
            }
        })
        .await
    }

    /// Runs `attempt` until it delivers, is refused, or the policy's attempts are used up.
    async fn deliver<F, Fut>(&self, channel: &str, target: &str, mut attempt: F) -> Delivery
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Attempt>,
    {
        let policy = &self.inner.retry;
        let attempts = policy.attempts.max(1);
        let mut last_error = String::new();
        for n in 1..=attempts {
            let (error, retry_after) = match attempt().await {
                Attempt::Delivered => {
                    tracing::debug!(channel, target, attempt = n, "notification delivered");
                    return Delivery {
                        channel: channel.to_string(),
                        delivered: true,
                        attempts: n,
                        error: None,
                    };
                }
                Attempt::Refused(error) => {
                    tracing::warn!(channel, target, attempt = n, %error, "notification refused");
                    tracing::error!(
                        channel,
                        target,
                        attempts = n,
                        %error,
                        "giving up on notification: refused, not retried"
                    );
                    return Delivery {
                        channel: channel.to_string(),
                        delivered: false,
                        attempts: n,
                        error: Some(error),
                    };
                }
                Attempt::Retry(error, retry_after) => (error, retry_after),
            };
            if n < attempts {
                let wait = backoff(policy.first_backoff, n)
                    .max(retry_after.unwrap_or_default())
                    .min(MAX_BACKOFF);
                tracing::warn!(
                    channel,
                    target,
                    attempt = n,
                    of = attempts,
                    retry_in = ?wait,
                    %error,
                    "notification attempt failed"
                );
                tokio::time::sleep(wait).await;
            } else {
                tracing::warn!(
                    channel,
                    target,
                    attempt = n,
                    of = attempts,
                    %error,
                    "notification attempt failed"
                );
            }
            last_error = error;
        }
        tracing::error!(
            channel,
            target,
            attempts,
            error = %last_error,
            "giving up on notification: every attempt failed"
        );
        Delivery {
            channel: channel.to_string(),
            delivered: false,
            attempts,
            error: Some(last_error),
        }
    }
}

/// The outcome of one delivery attempt.
enum Attempt {
    /// The receiver accepted it.
    Delivered,
    /// The receiver refused it for good.
    Refused(String),
    /// It may work later; the receiver may have said when.
    Retry(String, Option<Duration>),
}

/// A channel that could not be tried at all: logged and reported with 0 attempts.
fn not_tried(channel: &str, target: &str, error: String) -> Delivery {
    tracing::error!(channel, target, %error, "giving up on notification: cannot send it");
    Delivery { channel: channel.to_string(), delivered: false, attempts: 0, error: Some(error) }
}

/// The wait after failed attempt `n` (from 1): `first` doubled `n - 1` times, capped at 60 s.
fn backoff(first: Duration, n: u32) -> Duration {
    let factor = 1u32.checked_shl(n.saturating_sub(1)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A `Retry-After` header in seconds (the HTTP-date form is ignored).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse().ok().map(Duration::from_secs)
}

/// The start of a response body, on one line, for an error message.
async fn body_snippet(mut response: reqwest::Response) -> String {
    let mut body = Vec::new();
    while body.len() < BODY_SNIPPET {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    let text = String::from_utf8_lossy(&body);
    let mut snippet: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if snippet.len() > BODY_SNIPPET {
        let mut end = BODY_SNIPPET;
        while !snippet.is_char_boundary(end) {
            end -= 1;
        }
        snippet.truncate(end);
        snippet.push_str("...");
    }
    snippet
}

/// An error and its sources, `: `-separated, skipping a source its parent already shows.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = e.source();
    }
    text
}

/// A webhook must be `http` or `https` with a host.
fn check_webhook(url: &Url) -> Result<(), Error> {
    let bad = |reason: String| Error::Webhook { url: url_origin(url), reason };
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(bad(format!("the scheme must be http or https, not `{other}`"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host".to_string()));
    }
    Ok(())
}

/// `scheme://host:port` of a URL: how a webhook is named in logs and errors.
fn url_origin(url: &Url) -> String {
    let mut origin = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        origin = format!("{origin}:{port}");
    }
    origin
}

#[cfg(test)]
mod tests;
