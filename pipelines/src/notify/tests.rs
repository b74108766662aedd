use super::smtp::*;
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
    let url = Url::parse(&format!("http://127.0.0.1:{}/hook?token=s3cret", free_port())).unwrap();
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
    let error = Notifier::new(Some(smtp_config("ftp://tarn:hunter2@mail.example.com")), quick(1))
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
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let ca_args = [&["req", "-x509", "-days", "2", "-subj", "/CN=Tarn test CA"][..], &key];
    openssl(&[&ca_args.concat()[..], &["-keyout", "ca.key", "-out", "ca.pem"]].concat());
    let csr_args = [&["req", "-subj", "/CN=127.0.0.1"][..], &key];
    openssl(&[&csr_args.concat()[..], &["-keyout", "server.key", "-out", "server.csr"]].concat());
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
