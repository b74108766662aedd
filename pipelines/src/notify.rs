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

/// Parses e-mail recipients, each `user@example.com` or `Name <user@example.com>`.
fn parse_recipients(addresses: &[String]) -> Result<Vec<Mailbox>, Error> {
    addresses
        .iter()
        .map(|address| {
            address
                .trim()
                .parse::<Mailbox>()
                .map_err(|e| Error::Recipient { address: address.clone(), reason: e.to_string() })
        })
        .collect()
}

/// The e-mail for `message`: From, To (each address), Subject, Date, Message-ID and a
/// text/plain body of the text, a blank line and the JSON pretty-printed.
fn build_email(
    from: &Mailbox,
    to: &[Mailbox],
    message: &Message,
) -> Result<lettre::Message, lettre::error::Error> {
    let subject: String =
        message.subject.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let json =
        serde_json::to_string_pretty(&message.json).unwrap_or_else(|_| message.json.to_string());
    let body = format!("{}\n\n{json}", message.text.trim_end());
    let mut builder = lettre::Message::builder().from(from.clone()).subject(subject.trim());
    for mailbox in to {
        builder = builder.to(mailbox.clone());
    }
    builder.message_id(None).header(ContentType::TEXT_PLAIN).body(body)
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// None: `smtp://`.
    Plain,
    /// STARTTLS, required: `smtp://` with `starttls`.
    StartTls,
    /// TLS from the start: `smtps://`.
    Implicit,
}

/// The SMTP server, as read from an [`SmtpConfig`].
#[derive(Debug, PartialEq)]
struct SmtpTarget {
    host: String,
    port: u16,
    security: Security,
    login: Option<(String, String)>,
}

impl SmtpTarget {
    /// `smtp://host:port`, `smtp+starttls://host:port` or `smtps://host:port`, for logs.
    fn describe(&self) -> String {
        let scheme = match self.security {
            Security::Plain => "smtp",
            Security::StartTls => "smtp+starttls",
            Security::Implicit => "smtps",
        };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// Reads the URL, TLS mode and login of an [`SmtpConfig`].
fn parse_smtp(config: &SmtpConfig) -> Result<SmtpTarget, Error> {
    let bad = |reason: String| Error::SmtpUrl { url: mask_password(&config.url), reason };
    let url = Url::parse(config.url.trim()).map_err(|e| bad(e.to_string()))?;
    let (security, default_port) = match (url.scheme(), config.starttls) {
        ("smtp", false) => (Security::Plain, 25),
        ("smtp", true) => (Security::StartTls, 587),
        ("smtps", false) => (Security::Implicit, 465),
        ("smtps", true) => {
            return Err(bad("STARTTLS applies to smtp:// only; smtps:// is TLS from the start \
                            (use one or the other)"
                .to_string()));
        }
        (other, _) => {
            return Err(bad(format!("the scheme must be smtp or smtps, not `{other}`")));
        }
    };
    let host = match url.host() {
        Some(url::Host::Domain(domain)) if !domain.is_empty() => domain.to_string(),
        Some(url::Host::Ipv4(address)) => address.to_string(),
        Some(url::Host::Ipv6(address)) => address.to_string(),
        _ => return Err(bad("no host (expected smtp://host:port or smtps://host:port)".into())),
    };
    let port = url.port().unwrap_or(default_port);
    if port == 0 {
        return Err(bad("port 0".to_string()));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(bad(format!("unexpected path `{}`", url.path())));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("unexpected query or fragment (`?` or `#`)".to_string()));
    }
    let url_user = match percent_decode(url.username()) {
        Some(user) if user.is_empty() => None,
        Some(user) => Some(user),
        None => return Err(bad("the user is not UTF-8 once percent-decoded".to_string())),
    };
    let url_password = match url.password().map(percent_decode) {
        None => None,
        Some(Some(password)) => Some(password),
        Some(None) => {
            return Err(bad("the password is not UTF-8 once percent-decoded".to_string()));
        }
    };
    let given = |field: &Option<String>| field.clone().filter(|value| !value.is_empty());
    let user = given(&config.username).or(url_user);
    let password = given(&config.password).or(url_password);
    let login = match (user, password) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        (Some(_), None) => {
            return Err(Error::SmtpLogin("a username is given but no password".to_string()));
        }
        (None, Some(_)) => {
            return Err(Error::SmtpLogin("a password is given but no username".to_string()));
        }
    };
    Ok(SmtpTarget { host, port, security, login })
}

/// Builds the SMTP transport and sender of an [`SmtpConfig`].
fn build_smtp(config: &SmtpConfig, timeout: Duration) -> Result<Smtp, Error> {
    let target = parse_smtp(config)?;
    let from = config
        .from
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| Error::Sender { from: config.from.clone(), reason: e.to_string() })?;
    let tls_error = |e: lettre::transport::smtp::Error| Error::SmtpTls {
        host: target.host.clone(),
        reason: e.to_string(),
    };
    let tls = match target.security {
        Security::Plain => Tls::None,
        Security::StartTls => {
            Tls::Required(TlsParameters::new(target.host.clone()).map_err(tls_error)?)
        }
        Security::Implicit => {
            Tls::Wrapper(TlsParameters::new(target.host.clone()).map_err(tls_error)?)
        }
    };
    let server = target.describe();
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(target.host.as_str())
        .port(target.port)
        .timeout(Some(timeout))
        .tls(tls);
    if let Some((user, password)) = target.login {
        if target.security == Security::Plain && !is_loopback(&target.host) {
            tracing::warn!(
                server,
                "the SMTP password will be sent unencrypted: use smtps:// or STARTTLS"
            );
        }
        builder = builder.credentials(Credentials::new(user, password));
    }
    Ok(Smtp { transport: builder.build(), from, server })
}

/// True for `localhost` and loopback addresses.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(decoded).ok()
}

/// A URL with the password of its user info, if any, replaced by `***`.
fn mask_password(url: &str) -> String {
    let authority_start = url.find("://").map_or(0, |i| i + 3);
    let rest = &url[authority_start..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let Some(colon) = authority[..at].find(':') else {
        return url.to_string();
    };
    format!(
        "{}{}:***{}",
        &url[..authority_start],
        &authority[..colon],
        &url[authority_start + at..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Instant;

    use serde_json::json;

    use crate::test_util::{free_port, header, split_message, start_receiver, SmtpServer};

    /// A policy with tiny waits, for tests.
    fn quick(attempts: u32) -> RetryPolicy {
        RetryPolicy {
            attempts,
            first_backoff: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        }
    }

    fn message() -> Message {
        Message {
            subject: "job nightly-rollup failed".to_string(),
            text: "The job nightly-rollup failed at 02:00 UTC.\nSee the run log.".to_string(),
            json: json!({
                "kind": "job_failed",
                "job": "nightly-rollup",
                "run": 42,
                "error": "table sales: no such column `amount`",
            }),
        }
    }

    fn smtp_config(url: &str) -> SmtpConfig {
        SmtpConfig {
            url: url.to_string(),
            from: "Tarn <tarn@example.com>".to_string(),
            starttls: false,
            username: None,
            password: None,
        }
    }

    fn emails(addresses: &[&str]) -> Recipients {
        Recipients { webhook: None, email: addresses.iter().map(|a| a.to_string()).collect() }
    }

    fn webhook(url: &Url) -> Recipients {
        Recipients { webhook: Some(url.clone()), email: Vec::new() }
    }

    // ---- webhook receiver -------------------------------------------------------------------

    #[tokio::test]
    async fn webhook_delivered_once_with_exact_json() {
        let (url, receiver) = start_receiver(&[]).await;
        let notifier = Notifier::new(None, quick(3)).unwrap();
        let message = message();
        let deliveries = notifier.send(&message, &webhook(&url)).await;
        assert_eq!(
            deliveries,
            vec![Delivery { channel: "webhook".into(), delivered: true, attempts: 1, error: None }]
        );
        let requests = receiver.requests();
        assert_eq!(requests.len(), 1);
        let (headers, body) = &requests[0];
        assert_eq!(body.as_ref(), serde_json::to_vec(&message.json).unwrap().as_slice());
        assert_eq!(serde_json::from_slice::<serde_json::Value>(body).unwrap(), message.json);
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["user-agent"], concat!("tarn/", env!("CARGO_PKG_VERSION")));
    }

    #[tokio::test]
    async fn webhook_5xx_retried_then_delivered_on_attempt_3() {
        let (url, receiver) = start_receiver(&[(500, Duration::ZERO), (500, Duration::ZERO)]).await;
        let notifier = Notifier::new(None, quick(5)).unwrap();
        let deliveries = notifier.send(&message(), &webhook(&url)).await;
        assert_eq!(
            deliveries,
            vec![Delivery { channel: "webhook".into(), delivered: true, attempts: 3, error: None }]
        );
        assert_eq!(receiver.requests().len(), 3);
    }

    #[tokio::test]
    async fn webhook_408_and_429_retried() {
        let (url, receiver) = start_receiver(&[(429, Duration::ZERO), (408, Duration::ZERO)]).await;
        let notifier = Notifier::new(None, quick(5)).unwrap();
        let deliveries = notifier.send(&message(), &webhook(&url)).await;
        assert!(deliveries[0].delivered, "{deliveries:?}");
        assert_eq!(deliveries[0].attempts, 3);
        assert_eq!(receiver.requests().len(), 3);
    }

    #[tokio::test]
    async fn webhook_400_not_retried() {
        let (url, receiver) = start_receiver(&[(400, Duration::ZERO)]).await;
        let notifier = Notifier::new(None, quick(5)).unwrap();
        let deliveries = notifier.send(&message(), &webhook(&url)).await;
        assert_eq!(deliveries.len(), 1);
        let delivery = &deliveries[0];
        assert!(!delivery.delivered);
        assert_eq!(delivery.attempts, 1);
        let error = delivery.error.as_deref().unwrap();
        assert!(error.contains("400"), "{error}");
        assert!(error.contains("answer from the receiver"), "{error}");
        assert_eq!(receiver.requests().len(), 1);
    }

    #[tokio::test]
    async fn webhook_timeout_retried() {
        let (url, receiver) = start_receiver(&[(200, Duration::from_secs(3))]).await;
        let policy = RetryPolicy { timeout: Duration::from_millis(300), ..quick(2) };
        let notifier = Notifier::new(None, policy).unwrap();
        let deliveries = notifier.send(&message(), &webhook(&url)).await;
        assert!(deliveries[0].delivered, "{deliveries:?}");
        assert_eq!(deliveries[0].attempts, 2);
        assert_eq!(receiver.requests().len(), 2);
    }

    #[tokio::test]
    async fn webhook_connection_refused_uses_every_attempt() {
        let url =
            Url::parse(&format!("http://127.0.0.1:{}/hook?token=s3cret", free_port())).unwrap();
        let notifier = Notifier::new(None, quick(3)).unwrap();
        let started = Instant::now();
        let deliveries = notifier.send(&message(), &webhook(&url)).await;
        assert_eq!(deliveries.len(), 1);
        let delivery = &deliveries[0];
        assert_eq!((delivery.channel.as_str(), delivery.delivered), ("webhook", false));
        assert_eq!(delivery.attempts, 3);
        let error = delivery.error.as_deref().unwrap();
        assert!(error.to_lowercase().contains("connect"), "{error}");
        assert!(!error.contains("s3cret"), "the webhook's token leaks: {error}");
        // Waits of 10 ms then 20 ms between the three attempts.
        assert!(started.elapsed() >= Duration::from_millis(30));
    }

    #[tokio::test]
    async fn webhook_with_bad_scheme_not_tried() {
        let url = Url::parse("ftp://example.com/hook").unwrap();
        let notifier = Notifier::new(None, quick(3)).unwrap();
        let deliveries = notifier.send(&message(), &webhook(&url)).await;
        assert_eq!(deliveries[0].attempts, 0);
        assert!(!deliveries[0].delivered);
        assert!(deliveries[0].error.as_deref().unwrap().contains("http or https"));
    }

    // ---- configuration ----------------------------------------------------------------------

    #[test]
    fn default_policy() {
        let policy = RetryPolicy::default();
        assert_eq!(policy.attempts, 5);
        assert_eq!(policy.first_backoff, Duration::from_secs(1));
        assert_eq!(policy.timeout, Duration::from_secs(10));
    }

    #[test]
    fn backoff_doubles_up_to_60_s() {
        let first = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=9).map(|n| backoff(first, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(backoff(first, u32::MAX), MAX_BACKOFF);
        assert_eq!(backoff(Duration::from_secs(90), 1), MAX_BACKOFF);
        assert_eq!(backoff(Duration::ZERO, 3), Duration::ZERO);
    }

    #[test]
    fn smtp_urls_parse_with_default_ports_and_logins() {
        let target = |url: &str, starttls: bool| {
            parse_smtp(&SmtpConfig { starttls, ..smtp_config(url) }).unwrap()
        };
        let plain = target("smtp://mail.example.com", false);
        assert_eq!((plain.port, plain.security, plain.login), (25, Security::Plain, None));
        let starttls = target("smtp://mail.example.com", true);
        assert_eq!((starttls.port, starttls.security), (587, Security::StartTls));
        let implicit = target("smtps://mail.example.com/", false);
        assert_eq!((implicit.port, implicit.security), (465, Security::Implicit));
        assert_eq!(implicit.describe(), "smtps://mail.example.com:465");
        let login = target("smtp://us%40er:p%3Ass%20w@mail.example.com:2525", true);
        assert_eq!(login.host, "mail.example.com");
        assert_eq!(login.port, 2525);
        assert_eq!(login.login, Some(("us@er".to_string(), "p:ss w".to_string())));
        let v6 = target("smtp://[::1]:2525", false);
        assert_eq!((v6.host.as_str(), v6.describe()), ("::1", "smtp://[::1]:2525".to_string()));
        let fields = parse_smtp(&SmtpConfig {
            username: Some("tarn".into()),
            password: Some("secret".into()),
            ..smtp_config("smtp://old:pw@mail.example.com")
        })
        .unwrap();
        assert_eq!(fields.login, Some(("tarn".to_string(), "secret".to_string())));
        let empty = parse_smtp(&SmtpConfig {
            username: Some(String::new()),
            password: Some(String::new()),
            ..smtp_config("smtp://mail.example.com")
        })
        .unwrap();
        assert_eq!(empty.login, None);
    }

    #[test]
    fn bad_smtp_urls_are_errors_naming_the_field() {
        for (url, starttls, expected) in [
            ("ftp://x", false, "the scheme must be smtp or smtps, not `ftp`"),
            ("smtp://", false, "no host"),
            ("smtp:mail.example.com", false, "no host"),
            ("mail.example.com:25", false, "the scheme must be"),
            ("not a url", false, "relative URL"),
            ("smtps://mail.example.com", true, "STARTTLS applies to smtp:// only"),
            ("smtp://mail.example.com/inbox", false, "unexpected path"),
            ("smtp://mail.example.com?tls=required", false, "unexpected query"),
        ] {
            let error = Notifier::new(Some(SmtpConfig { starttls, ..smtp_config(url) }), quick(1))
                .map(|_| ())
                .unwrap_err();
            assert!(matches!(error, Error::SmtpUrl { .. }), "{url}: {error:?}");
            let text = error.to_string();
            assert!(text.contains("--smtp-url"), "{url}: {text}");
            assert!(text.contains(expected), "{url}: {text}");
        }
        let error =
            Notifier::new(Some(smtp_config("ftp://tarn:hunter2@mail.example.com")), quick(1))
                .map(|_| ())
                .unwrap_err()
                .to_string();
        assert!(error.contains("ftp://tarn:***@mail.example.com"), "{error}");
        assert!(!error.contains("hunter2"), "the password leaks: {error}");
        let error = Notifier::new(Some(smtp_config("smtp://tarn@mail.example.com")), quick(1))
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(error, Error::SmtpLogin(_)), "{error:?}");
        assert!(error.to_string().contains("no password"), "{error}");
    }

    #[test]
    fn bad_sender_is_an_error_naming_the_field() {
        for from in ["", "tarn", "Tarn <tarn>", "tarn@@example.com"] {
            let config = SmtpConfig { from: from.to_string(), ..smtp_config("smtp://localhost") };
            let error = Notifier::new(Some(config), quick(1)).map(|_| ()).unwrap_err();
            assert!(matches!(error, Error::Sender { .. }), "{from}: {error:?}");
            assert!(error.to_string().contains("--smtp-from"), "{error}");
        }
        for from in ["tarn@example.com", "Tarn <tarn@example.com>", " \"Tarn, jobs\" <t@x.io> "] {
            let config = SmtpConfig { from: from.to_string(), ..smtp_config("smtp://localhost") };
            assert!(Notifier::new(Some(config), quick(1)).is_ok(), "{from}");
        }
    }

    #[test]
    fn check_refuses_email_without_smtp() {
        let notifier = Notifier::new(None, quick(1)).unwrap();
        assert!(!notifier.can_email());
        let error = notifier.check(&emails(&["ops@example.com"])).unwrap_err();
        assert!(matches!(error, Error::NoSmtp));
        assert_eq!(
            error.to_string(),
            "the job sends e-mail but no SMTP server is configured: \
             start Tarn with --smtp-url and --smtp-from"
        );
        notifier.check(&Recipients::default()).unwrap();
        notifier.check(&webhook(&Url::parse("https://hooks.example.com/x").unwrap())).unwrap();
    }

    #[test]
    fn check_refuses_bad_addresses_and_webhooks() {
        let notifier = Notifier::new(Some(smtp_config("smtp://localhost")), quick(1)).unwrap();
        assert!(notifier.can_email());
        notifier.check(&emails(&["ops@example.com", "On call <oncall@example.org>"])).unwrap();
        let error = notifier.check(&emails(&["ops@example.com", "nobody"])).unwrap_err();
        assert!(matches!(&error, Error::Recipient { address, .. } if address == "nobody"));
        let ftp = Url::parse("ftp://user:pw@files.example.com/drop?key=k").unwrap();
        let error = notifier.check(&webhook(&ftp)).unwrap_err().to_string();
        assert!(error.contains("http or https, not `ftp`"), "{error}");
        assert!(!error.contains("pw") && !error.contains("key=k"), "{error}");
    }

    #[tokio::test]
    async fn email_without_smtp_is_reported_not_tried() {
        let notifier = Notifier::new(None, quick(3)).unwrap();
        let deliveries = notifier.send(&message(), &emails(&["ops@example.com"])).await;
        assert_eq!(
            deliveries,
            vec![Delivery {
                channel: "email".into(),
                delivered: false,
                attempts: 0,
                error: Some(NO_SMTP.to_string())
            }]
        );
    }

    #[tokio::test]
    async fn both_channels_reported_webhook_first() {
        let (url, receiver) = start_receiver(&[]).await;
        let notifier = Notifier::new(None, quick(2)).unwrap();
        let to = Recipients { webhook: Some(url), email: vec!["ops@example.com".into()] };
        let deliveries = notifier.send(&message(), &to).await;
        let summary: Vec<_> =
            deliveries.iter().map(|d| (d.channel.as_str(), d.delivered, d.attempts)).collect();
        assert_eq!(summary, [("webhook", true, 1), ("email", false, 0)]);
        assert_eq!(receiver.requests().len(), 1);
        assert_eq!(
            serde_json::to_value(&deliveries[0]).unwrap(),
            json!({"channel": "webhook", "delivered": true, "attempts": 1, "error": null})
        );
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_password("smtp://u:p@h:25"), "smtp://u:***@h:25");
        assert_eq!(mask_password("smtp://u@h:25"), "smtp://u@h:25");
        assert_eq!(mask_password("smtp://h/a@b"), "smtp://h/a@b");
        assert_eq!(mask_password("u:p@h"), "u:***@h");
        assert_eq!(mask_password("smtp://u:p@@h"), "smtp://u:***@h");
    }

    // ---- a real SMTP server -----------------------------------------------------------------

    #[tokio::test]
    async fn email_delivered_to_a_real_smtp_server() {
        let server = SmtpServer::start(&[]);
        let url = format!("smtp://127.0.0.1:{}", server.port);
        let notifier = Notifier::new(Some(smtp_config(&url)), quick(3)).unwrap();
        let to = emails(&["ops@example.com", "On call <oncall@example.org>"]);
        notifier.check(&to).unwrap();
        let message = message();
        let deliveries = notifier.send(&message, &to).await;
        assert_eq!(
            deliveries,
            vec![Delivery { channel: "email".into(), delivered: true, attempts: 1, error: None }]
        );
        let messages = server.messages();
        assert_eq!(messages.len(), 1, "one message for all addresses: {messages:?}");
        let (headers, body) = split_message(&messages[0]);
        assert_eq!(header(&headers, "From"), "Tarn <tarn@example.com>");
        assert_eq!(header(&headers, "To"), "ops@example.com, \"On call\" <oncall@example.org>");
        assert_eq!(header(&headers, "Subject"), "job nightly-rollup failed");
        assert_eq!(header(&headers, "Content-Type"), "text/plain; charset=utf-8");
        assert!(header(&headers, "Message-ID").contains('@'));
        assert!(!header(&headers, "Date").is_empty());
        // Added by aiosmtpd from the SMTP envelope.
        assert_eq!(header(&headers, "X-MailFrom"), "tarn@example.com");
        assert_eq!(header(&headers, "X-RcptTo"), "ops@example.com, oncall@example.org");
        let json = serde_json::to_string_pretty(&message.json).unwrap();
        // The line end after the JSON is the end of the SMTP DATA.
        assert_eq!(body.trim_end(), format!("{}\n\n{json}", message.text));
        assert!(body.contains("\"job\": \"nightly-rollup\""), "{body}");
        assert!(body.contains("\"run\": 42"), "{body}");
    }

    #[tokio::test]
    async fn email_permanent_error_not_retried() {
        // A 200-byte message limit: the server answers 552 to the DATA.
        let server = SmtpServer::start(&["-s", "200"]);
        let url = format!("smtp://127.0.0.1:{}", server.port);
        let notifier = Notifier::new(Some(smtp_config(&url)), quick(5)).unwrap();
        let deliveries = notifier.send(&message(), &emails(&["ops@example.com"])).await;
        let delivery = &deliveries[0];
        assert!(!delivery.delivered);
        assert_eq!(delivery.attempts, 1, "{delivery:?}");
        assert!(delivery.error.as_deref().unwrap().contains("552"), "{delivery:?}");
        assert!(server.messages().is_empty());
    }

    #[tokio::test]
    async fn email_connection_refused_uses_every_attempt() {
        let url = format!("smtp://tarn:hunter2@127.0.0.1:{}", free_port());
        let notifier = Notifier::new(Some(smtp_config(&url)), quick(3)).unwrap();
        let deliveries = notifier.send(&message(), &emails(&["ops@example.com"])).await;
        let delivery = &deliveries[0];
        assert_eq!((delivery.channel.as_str(), delivery.delivered), ("email", false));
        assert_eq!(delivery.attempts, 3);
        let error = delivery.error.as_deref().unwrap();
        assert!(error.to_lowercase().contains("connect"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[tokio::test]
    async fn starttls_required_refuses_a_server_without_it() {
        let server = SmtpServer::start(&[]);
        let url = format!("smtp://127.0.0.1:{}", server.port);
        let config = SmtpConfig { starttls: true, ..smtp_config(&url) };
        let notifier = Notifier::new(Some(config), quick(3)).unwrap();
        let deliveries = notifier.send(&message(), &emails(&["ops@example.com"])).await;
        let delivery = &deliveries[0];
        assert!(!delivery.delivered);
        assert_eq!(delivery.attempts, 1, "{delivery:?}");
        assert!(delivery.error.as_deref().unwrap().contains("STARTTLS"), "{delivery:?}");
        assert!(server.messages().is_empty(), "sent in clear text");
    }

    // ---- TLS: a test CA, trusted through SSL_CERT_FILE in a child process --------------------

    /// Makes a CA and a server certificate for 127.0.0.1 with the `openssl` command; returns
    /// the paths of the CA certificate, the server certificate and the server key.
    fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .unwrap_or_else(|e| panic!("the TLS tests need the openssl command: {e}"));
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
        let ca_args = [&["req", "-x509", "-days", "2", "-subj", "/CN=Tarn test CA"][..], &key];
        openssl(&[&ca_args.concat()[..], &["-keyout", "ca.key", "-out", "ca.pem"]].concat());
        let csr_args = [&["req", "-subj", "/CN=127.0.0.1"][..], &key];
        openssl(
            &[&csr_args.concat()[..], &["-keyout", "server.key", "-out", "server.csr"]].concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
             basicConstraints = CA:FALSE\n\
             keyUsage = digitalSignature, keyEncipherment\n\
             extendedKeyUsage = serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ]);
        (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"))
    }

    const TLS_URL: &str = "TARN_NOTIFY_TEST_TLS_URL";
    const TLS_STARTTLS: &str = "TARN_NOTIFY_TEST_STARTTLS";

    /// Sends one e-mail to the TLS server named by the environment; run by [`send_over_tls`] in
    /// a child process whose `SSL_CERT_FILE` is the test CA.
    #[tokio::test]
    #[ignore = "run by the TLS tests in a child process that trusts a test CA via SSL_CERT_FILE"]
    async fn tls_child() {
        let url = std::env::var(TLS_URL).expect("TARN_NOTIFY_TEST_TLS_URL is set by the parent");
        let starttls = std::env::var(TLS_STARTTLS).is_ok_and(|v| v == "1");
        let config = SmtpConfig { starttls, ..smtp_config(&url) };
        let notifier = Notifier::new(Some(config), quick(1)).unwrap();
        let deliveries = notifier.send(&message(), &emails(&["ops@example.com"])).await;
        assert_eq!(
            deliveries,
            vec![Delivery { channel: "email".into(), delivered: true, attempts: 1, error: None }]
        );
    }

    /// Runs [`tls_child`] in a child process of this test binary that trusts `ca` only.
    fn send_over_tls(url: &str, starttls: bool, ca: &Path) {
        // The test's name without the crate: `tests::tls_child` here, `notify::tests::...`
        // once this file is a module of another crate.
        let module = module_path!().split_once("::").map_or(module_path!(), |(_, rest)| rest);
        let name = format!("{module}::tls_child");
        let out = Command::new(std::env::current_exe().unwrap())
            .args([name.as_str(), "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("SSL_CERT_FILE", ca)
            .env_remove("SSL_CERT_DIR")
            .env(TLS_URL, url)
            .env(TLS_STARTTLS, if starttls { "1" } else { "0" })
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name} failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "{name} did not run:\n{stdout}\n{stderr}");
    }

    #[tokio::test]
    async fn email_over_starttls_with_a_trusted_certificate() {
        let certs = tempfile::tempdir().unwrap();
        let (ca, cert, key) = make_certificates(certs.path());
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        // aiosmtpd requires STARTTLS before MAIL when given a certificate.
        let server = SmtpServer::start(&["--tlscert", cert, "--tlskey", key]);
        let url = format!("smtp://127.0.0.1:{}", server.port);
        send_over_tls(&url, true, &ca);
        let messages = server.messages();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].contains("Subject: job nightly-rollup failed"));

        // Without STARTTLS the same server refuses the mail for good (530): not retried.
        let notifier = Notifier::new(Some(smtp_config(&url)), quick(3)).unwrap();
        let deliveries = notifier.send(&message(), &emails(&["ops@example.com"])).await;
        assert_eq!((deliveries[0].delivered, deliveries[0].attempts), (false, 1));
        assert!(deliveries[0].error.as_deref().unwrap().contains("530"), "{deliveries:?}");

        // Without trusting the test CA (the platform's roots only) the handshake fails.
        let config = SmtpConfig { starttls: true, ..smtp_config(&url) };
        let notifier = Notifier::new(Some(config), quick(2)).unwrap();
        let deliveries = notifier.send(&message(), &emails(&["ops@example.com"])).await;
        assert_eq!((deliveries[0].delivered, deliveries[0].attempts), (false, 2));
        let error = deliveries[0].error.as_deref().unwrap();
        assert!(error.contains("certificate"), "{error}");
        assert_eq!(server.messages().len(), 1);
    }

    #[tokio::test]
    async fn email_over_smtps_with_a_trusted_certificate() {
        let certs = tempfile::tempdir().unwrap();
        let (ca, cert, key) = make_certificates(certs.path());
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let server = SmtpServer::start(&["--smtpscert", cert, "--smtpskey", key]);
        let url = format!("smtps://127.0.0.1:{}", server.port);
        send_over_tls(&url, false, &ca);
        let messages = server.messages();
        assert_eq!(messages.len(), 1);
        assert!(messages[0].contains("Subject: job nightly-rollup failed"));
    }
}
