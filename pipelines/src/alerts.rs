//! Alarms: the failures nobody watches, sent on the jobs' channels (webhook, e-mail).
//!
//! Configured in `[alerts]` of `tarn.toml`:
//!
//! | alarm | raised when | default |
//! |---|---|---|
//! | `file_failed` | a dropped file could not be loaded and moved to `_tarn/failed/` | on |
//! | `rejected_rows` | a table rejected more rows than its threshold within `rejected_window` | 1 row in 10m |
//! | `refused_for` | ingest has refused every write (503) for longer than this | 60s |
//! | `maintenance_failed` | compaction, checkpoint or vacuum of a table failed | on |
//!
//! Each alert says the table, the count, the first error and where to look. Alerts of the
//! same alarm and table are rate-limited: after one is sent, the next waits `min_interval`,
//! and then says how many occurred meanwhile.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use tarn_ingest::{Events, IngestEvent};
use tokio::sync::{broadcast, watch};

use crate::notify::{Message, Notifier, Recipients};
use crate::schedule::parse_duration;
use crate::{Error, Result};

/// Rejected-row events per table within a window, and alarm-table pairs, kept at most.
const MAX_TRACKED: usize = 10_000;

/// `[alerts]` of `tarn.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// A URL that gets a POST of each alert as JSON.
    pub webhook: Option<String>,
    /// Addresses that get each alert by e-mail (needs `--smtp-url`).
    pub email: Vec<String>,
    /// Alert on dropped files that failed.
    pub file_failed: bool,
    /// Rows rejected by a table's contract within `rejected_window` above which an alert is
    /// sent (0: never).
    pub rejected_rows: u64,
    /// Per-table thresholds (`"default.leads" = 100`), instead of `rejected_rows`.
    pub rejected_rows_by_table: HashMap<String, u64>,
    /// The window rejected rows are counted in.
    pub rejected_window: String,
    /// Alert when ingest has refused every write for longer than this (`0s`: never).
    pub refused_for: String,
    /// Alert on failed maintenance.
    pub maintenance_failed: bool,
    /// The least time between two alerts of the same alarm and table.
    pub min_interval: String,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhook: None,
            email: Vec::new(),
            file_failed: true,
            rejected_rows: 1,
            rejected_rows_by_table: HashMap::new(),
            rejected_window: "10m".into(),
            refused_for: "60s".into(),
            maintenance_failed: true,
            min_interval: "15m".into(),
        }
    }
}

/// An alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertRule {
    /// A dropped file failed.
    FileFailed,
    /// Rows were rejected above the threshold.
    RejectedRows,
    /// Ingest refused writes for too long.
    Refusing,
    /// Maintenance failed.
    MaintenanceFailed,
}

impl AlertRule {
    fn as_str(self) -> &'static str {
        match self {
            AlertRule::FileFailed => "file_failed",
            AlertRule::RejectedRows => "rejected_rows",
            AlertRule::Refusing => "ingest_refused",
            AlertRule::MaintenanceFailed => "maintenance_failed",
        }
    }
}

/// One alert, before it is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// Which alarm.
    pub rule: AlertRule,
    /// The table concerned (`*` for all of ingest).
    pub table: String,
    /// How many (files, rows, seconds).
    pub count: u64,
    /// The first error.
    pub first_error: String,
    /// Where to look.
    pub look: String,
}

struct Limits {
    recipients: Recipients,
    rejected_default: u64,
    rejected_by_table: HashMap<String, u64>,
    window: Duration,
    refused_for: Option<Duration>,
    min_interval: Duration,
    file_failed: bool,
    maintenance_failed: bool,
}

#[derive(Default)]
struct State {
    /// Rejected rows per table: (when, rows, first error) within the window.
    rejected: HashMap<String, VecDeque<(DateTime<Utc>, u64, String)>>,
    /// Per (alarm, table): when the last alert went out, and the first alert held back since
    /// (its count the sum of all held back).
    sent: HashMap<(AlertRule, String), (DateTime<Utc>, Option<Alert>)>,
    /// The refusal run already alerted on.
    refusal_alerted: Option<DateTime<Utc>>,
}

/// The alarms of one server.
pub struct Alerts {
    limits: Limits,
    notifier: Notifier,
    state: Mutex<State>,
}

impl Alerts {
    /// Checks the configuration; `None` when it names no recipient (alarms off).
    pub fn new(config: &AlertsConfig, notifier: Notifier) -> Result<Option<Arc<Alerts>>> {
        let invalid = |field: &str, e: String| Error::InvalidAlerts(format!("alerts.{field}: {e}"));
        let webhook = match &config.webhook {
            Some(url) => Some(
                url::Url::parse(url).map_err(|e| invalid("webhook", format!("'{url}': {e}")))?,
            ),
            None => None,
        };
        let recipients = Recipients { webhook, email: config.email.clone() };
        let duration =
            |field: &str, text: &str| parse_duration(text).map_err(|e| invalid(field, e));
        let window = duration("rejected_window", &config.rejected_window)?;
        let refused_for = duration("refused_for", &config.refused_for)?;
        let min_interval = duration("min_interval", &config.min_interval)?;
        let mut rejected_by_table = HashMap::new();
        for (table, threshold) in &config.rejected_rows_by_table {
            let name = tarn_catalog::TableName::parse(table)
                .map_err(|e| invalid("rejected_rows_by_table", e.to_string()))?;
            rejected_by_table.insert(name.to_string(), *threshold);
        }
        if recipients.is_empty() {
            return Ok(None);
        }
        notifier.check(&recipients)?;
        let limits = Limits {
            recipients,
            rejected_default: config.rejected_rows,
            rejected_by_table,
            window,
            refused_for: (!refused_for.is_zero()).then_some(refused_for),
            min_interval,
            file_failed: config.file_failed,
            maintenance_failed: config.maintenance_failed,
        };
        Ok(Some(Arc::new(Alerts { limits, notifier, state: Mutex::default() })))
    }

    /// Watches `events` until `stop`: reacts to each event, and checks refusals every
    /// second.
    pub fn watch(self: &Arc<Self>, events: &Events, mut stop: watch::Receiver<bool>) {
        let mut receiver = events.subscribe();
        let events = events.clone();
        let alerts = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    event = receiver.recv() => match event {
                        Ok(event) => {
                            if let Some(alert) = alerts.on_event(event, Utc::now()) {
                                alerts.send(alert);
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(missed)) => {
                            tracing::warn!(missed, "the alarms fell behind ingest's events; some were not looked at");
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    _ = tick.tick() => {
                        let now = Utc::now();
                        if let Some(alert) = alerts.on_refusals(events.refusing_since(), now) {
                            alerts.send(alert);
                        }
                        for alert in alerts.held_back(now) {
                            alerts.send(alert);
                        }
                    }
                    _ = stop.changed() => return,
                }
            }
        });
    }

    /// The alert an event raises now, if any (after the rate limit).
    pub fn on_event(&self, event: IngestEvent, now: DateTime<Utc>) -> Option<Alert> {
        let alert = match event {
            IngestEvent::FileFailed { table, file, moved_to, error } if self.limits.file_failed => {
                Alert {
                    rule: AlertRule::FileFailed,
                    table,
                    count: 1,
                    first_error: format!("{file}: {error}"),
                    look: format!("{moved_to} and {moved_to}.error.txt in the lake"),
                }
            }
            IngestEvent::RowsRejected { table, rows, first_error, source } => {
                let key = table.to_string();
                let threshold = *self
                    .limits
                    .rejected_by_table
                    .get(&key)
                    .unwrap_or(&self.limits.rejected_default);
                if threshold == 0 {
                    return None;
                }
                let window = chrono::Duration::from_std(self.limits.window).unwrap_or_default();
                let mut state = self.state.lock().expect("alerts lock");
                let seen = state.rejected.entry(key.clone()).or_default();
                seen.push_back((now, rows, format!("{first_error} (from {source})")));
                while seen.front().is_some_and(|(at, _, _)| *at < now - window)
                    || seen.len() > MAX_TRACKED
                {
                    seen.pop_front();
                }
                let total: u64 = seen.iter().map(|(_, n, _)| n).sum();
                if total < threshold {
                    return None;
                }
                let first = seen.front().map(|(_, _, e)| e.clone()).unwrap_or_default();
                seen.clear();
                drop(state);
                Alert {
                    rule: AlertRule::RejectedRows,
                    count: total,
                    first_error: first,
                    look: format!(
                        "SELECT * FROM {ns}.{name}_rejected ORDER BY rejected_at DESC",
                        ns = table.namespace(),
                        name = table.name()
                    ),
                    table: key,
                }
            }
            IngestEvent::MaintenanceFailed { table, error } if self.limits.maintenance_failed => {
                Alert {
                    rule: AlertRule::MaintenanceFailed,
                    table: table.to_string(),
                    count: 1,
                    first_error: error,
                    look: format!("the server's log; `tarn optimize {table}` runs it by hand"),
                }
            }
            _ => return None,
        };
        self.limit(alert, now)
    }

    /// The alert of a run of refusals that lasted too long, once per run.
    pub fn on_refusals(&self, since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Option<Alert> {
        let threshold = self.limits.refused_for?;
        let since = since?;
        let lasted = (now - since).to_std().unwrap_or_default();
        if lasted < threshold {
            return None;
        }
        {
            let mut state = self.state.lock().expect("alerts lock");
            if state.refusal_alerted == Some(since) {
                return None;
            }
            state.refusal_alerted = Some(since);
        }
        let alert = Alert {
            rule: AlertRule::Refusing,
            table: "*".into(),
            count: lasted.as_secs(),
            first_error: format!(
                "ingest has answered 503 to every write since {} (the write-ahead log is full \
                 or storage is unreachable)",
                since.to_rfc3339()
            ),
            look: "GET /readyz, the server's log, and whether the lake's storage answers".into(),
        };
        self.limit(alert, now)
    }

    /// Rate limit: one alert per alarm and table per `min_interval`; what is held back is
    /// sent once the interval has passed ([`Alerts::held_back`]), counted together.
    fn limit(&self, alert: Alert, now: DateTime<Utc>) -> Option<Alert> {
        let interval = chrono::Duration::from_std(self.limits.min_interval).unwrap_or_default();
        let mut state = self.state.lock().expect("alerts lock");
        let key = (alert.rule, alert.table.clone());
        match state.sent.get_mut(&key) {
            Some((last, held)) if now - *last < interval => {
                match held {
                    Some(first) => first.count += alert.count,
                    None => *held = Some(alert),
                }
                None
            }
            Some((last, held)) => {
                *last = now;
                match held.take() {
                    Some(mut first) => {
                        first.count += alert.count;
                        Some(first)
                    }
                    None => Some(alert),
                }
            }
            None => {
                if state.sent.len() >= MAX_TRACKED {
                    state.sent.retain(|_, (at, held)| now - *at < interval || held.is_some());
                }
                state.sent.insert(key, (now, None));
                Some(alert)
            }
        }
    }

    /// The alerts held back whose interval has passed, to be sent now.
    pub fn held_back(&self, now: DateTime<Utc>) -> Vec<Alert> {
        let interval = chrono::Duration::from_std(self.limits.min_interval).unwrap_or_default();
        let mut state = self.state.lock().expect("alerts lock");
        let mut due = Vec::new();
        for (last, held) in state.sent.values_mut() {
            if now - *last >= interval {
                if let Some(alert) = held.take() {
                    *last = now;
                    due.push(alert);
                }
            }
        }
        due
    }

    /// Sends an alert in the background (delivery is retried and logged).
    fn send(&self, alert: Alert) {
        tracing::warn!(alarm = alert.rule.as_str(), table = %alert.table, count = alert.count, error = %alert.first_error, "alarm");
        let message = message(&alert);
        let notifier = self.notifier.clone();
        let recipients = self.limits.recipients.clone();
        tokio::spawn(async move {
            for delivery in notifier.send(&message, &recipients).await {
                tracing::info!(channel = %delivery.channel, delivered = delivery.delivered, attempts = delivery.attempts, "alarm notification");
            }
        });
    }
}

/// The message of an alert.
fn message(alert: &Alert) -> Message {
    let what = match alert.rule {
        AlertRule::FileFailed => "a dropped file failed to load",
        AlertRule::RejectedRows => "rows were rejected",
        AlertRule::Refusing => "ingest is refusing writes",
        AlertRule::MaintenanceFailed => "maintenance failed",
    };
    let subject = format!("Tarn alarm: {what} ({})", alert.table);
    let text = format!(
        "Alarm: {}\nTable: {}\nCount: {}\nFirst error: {}\nWhere to look: {}\n",
        alert.rule.as_str(),
        alert.table,
        alert.count,
        alert.first_error,
        alert.look
    );
    let json = json!({
        "alarm": alert.rule.as_str(),
        "table": alert.table,
        "count": alert.count,
        "first_error": alert.first_error,
        "where": alert.look,
        "at": Utc::now(),
    });
    Message { subject, text, json }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::RetryPolicy;
    use tarn_catalog::TableName;

    fn alerts(config: AlertsConfig) -> Arc<Alerts> {
        let notifier = Notifier::new(None, RetryPolicy::default()).unwrap();
        let config = AlertsConfig { webhook: Some("http://127.0.0.1:9/hook".into()), ..config };
        Alerts::new(&config, notifier).unwrap().unwrap()
    }

    fn rejected(rows: u64) -> IngestEvent {
        IngestEvent::RowsRejected {
            table: TableName::parse("leads").unwrap(),
            rows,
            first_error: "row 1: email is required".into(),
            source: "http".into(),
        }
    }

    #[test]
    fn no_recipient_means_no_alarms() {
        let notifier = Notifier::new(None, RetryPolicy::default()).unwrap();
        assert!(Alerts::new(&AlertsConfig::default(), notifier).unwrap().is_none());
    }

    #[test]
    fn rejected_rows_alert_above_the_threshold_within_the_window() {
        let a = alerts(AlertsConfig { rejected_rows: 10, ..Default::default() });
        let t0 = Utc::now();
        assert_eq!(a.on_event(rejected(6), t0), None);
        // Outside the window, the first 6 no longer count.
        let later = t0 + chrono::Duration::minutes(11);
        assert_eq!(a.on_event(rejected(6), later), None);
        let alert = a.on_event(rejected(5), later + chrono::Duration::seconds(1)).unwrap();
        assert_eq!(
            (alert.rule, alert.count, alert.table.as_str()),
            (AlertRule::RejectedRows, 11, "default.leads")
        );
        assert!(alert.first_error.contains("email is required"), "{alert:?}");
        assert!(alert.look.contains("default.leads_rejected"), "{alert:?}");
    }

    #[test]
    fn repeated_alerts_are_rate_limited_and_counted() {
        let a = alerts(AlertsConfig { min_interval: "15m".into(), ..Default::default() });
        let failed = |n: u32| IngestEvent::FileFailed {
            table: "members".into(),
            file: format!("f{n}.csv"),
            moved_to: format!("_tarn/failed/members/f{n}.csv"),
            error: "line 2: bad".into(),
        };
        let t0 = Utc::now();
        let first = a.on_event(failed(1), t0).unwrap();
        assert!(first.look.contains("_tarn/failed/members/f1.csv"), "{first:?}");
        assert_eq!(a.on_event(failed(2), t0 + chrono::Duration::minutes(1)), None);
        assert_eq!(a.on_event(failed(3), t0 + chrono::Duration::minutes(2)), None);
        assert_eq!(a.held_back(t0 + chrono::Duration::minutes(10)), vec![], "not yet");
        // Without a further event, what was held back goes out once the interval has passed.
        let held = a.held_back(t0 + chrono::Duration::minutes(15));
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].count, 2, "the two held back, counted together");
        assert!(held[0].first_error.starts_with("f2.csv"), "{held:?}");
        assert_eq!(a.held_back(t0 + chrono::Duration::minutes(31)), vec![]);
        assert_eq!(a.on_event(failed(4), t0 + chrono::Duration::minutes(16)), None);
        let next = a.on_event(failed(5), t0 + chrono::Duration::minutes(31)).unwrap();
        assert_eq!(next.count, 2, "f4 held back, counted into f5's alert");
    }

    #[test]
    fn refusals_alert_once_per_run_after_the_threshold() {
        let a = alerts(AlertsConfig { refused_for: "60s".into(), ..Default::default() });
        let since = Utc::now();
        assert_eq!(a.on_refusals(Some(since), since + chrono::Duration::seconds(30)), None);
        let alert = a.on_refusals(Some(since), since + chrono::Duration::seconds(61)).unwrap();
        assert_eq!((alert.rule, alert.count), (AlertRule::Refusing, 61));
        assert_eq!(a.on_refusals(Some(since), since + chrono::Duration::seconds(62)), None);
        assert_eq!(a.on_refusals(None, since + chrono::Duration::seconds(63)), None);
    }

    #[test]
    fn bad_settings_say_which() {
        let notifier = Notifier::new(None, RetryPolicy::default()).unwrap();
        let config = AlertsConfig {
            webhook: Some("http://x/".into()),
            refused_for: "soon".into(),
            ..Default::default()
        };
        let e = Alerts::new(&config, notifier.clone()).err().unwrap().to_string();
        assert!(e.contains("alerts.refused_for"), "{e}");
        let config = AlertsConfig { email: vec!["ops@example.com".into()], ..Default::default() };
        let e = Alerts::new(&config, notifier).err().unwrap().to_string();
        assert!(e.contains("SMTP"), "{e}");
    }
}
