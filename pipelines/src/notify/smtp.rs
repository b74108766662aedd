//! The SMTP side: the server's URL and login, the sender and recipients, the message.

use super::*;

/// Parses e-mail recipients, each `user@example.com` or `Name <user@example.com>`.
pub(super) fn parse_recipients(addresses: &[String]) -> Result<Vec<Mailbox>, Error> {
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
pub(super) fn build_email(
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
pub(super) enum Security {
    /// None: `smtp://`.
    Plain,
    /// STARTTLS, required: `smtp://` with `starttls`.
    StartTls,
    /// TLS from the start: `smtps://`.
    Implicit,
}

/// The SMTP server, as read from an [`SmtpConfig`].
#[derive(Debug, PartialEq)]
pub(super) struct SmtpTarget {
    pub(super) host: String,
    pub(super) port: u16,
    pub(super) security: Security,
    pub(super) login: Option<(String, String)>,
}

impl SmtpTarget {
    /// `smtp://host:port`, `smtp+starttls://host:port` or `smtps://host:port`, for logs.
    pub(super) fn describe(&self) -> String {
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
pub(super) fn parse_smtp(config: &SmtpConfig) -> Result<SmtpTarget, Error> {
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
pub(super) fn build_smtp(config: &SmtpConfig, timeout: Duration) -> Result<Smtp, Error> {
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
pub(super) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|address| address.is_loopback())
}

/// Decodes `%XX` escapes; `None` when the result is not UTF-8.
pub(super) fn percent_decode(text: &str) -> Option<String> {
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
pub(super) fn mask_password(url: &str) -> String {
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
