//! The schedule of a scheduled SQL job: when it runs.
//!
//! A job declares a `schedule` and an optional `timezone` (an IANA name such as
//! `Europe/Oslo`; the default is `UTC`). A schedule is one of:
//!
//! - **A 5-field cron expression** `minute hour day-of-month month day-of-week`, with the
//!   usual Vixie cron syntax: `*`, numbers, ranges `a-b`, steps `*/n`, `a-b/n` and `a/n`
//!   (from `a` to the field's maximum), and lists `a,b,c` of any of these. Months may be
//!   written `JAN`-`DEC` and weekdays `SUN`-`SAT` (any case); the day of week is 0-7, where
//!   both 0 and 7 are Sunday. When both the day-of-month and the day-of-week field are
//!   restricted (neither starts with `*`), a day matches if *either* matches; otherwise it
//!   must match both. A cron expression that can never fire (such as `0 0 30 2 *`) is
//!   refused.
//! - **A macro**: `@hourly` (`0 * * * *`), `@daily` and `@midnight` (`0 0 * * *`), `@weekly`
//!   (`0 0 * * 0`), `@monthly` (`0 0 1 * *`), `@yearly` and `@annually` (`0 0 1 1 *`).
//! - **A fixed period** `every <n><unit>` with the unit `s`, `m` or `h` (`every 30s`,
//!   `every 5m`, `every 2h`), at least 1s and at most 366 days. Its occurrences are the
//!   multiples of the period since the Unix epoch, so every server computes the same
//!   instants; the time zone plays no part.
//!
//! Errors are plain `String`s that say what is wrong and where, e.g.
//! `the hour field '25' is out of range 0-23`.
//!
//! # Time zones and daylight saving: neither skip nor double
//!
//! Cron fields are matched against the *local wall-clock time* of the job's zone. The
//! occurrences of a cron schedule are the set of wall-clock minutes that match, each mapped
//! to one UTC instant:
//!
//! - a wall time that exists once maps to that instant;
//! - a wall time that occurs twice (when clocks fall back) maps to the *earlier* instant
//!   only: in `Europe/Oslo`, 2026-10-25 02:30 happens at 00:30 UTC and again at 01:30 UTC,
//!   and a job due then runs at 00:30 UTC only;
//! - a wall time that does not exist (when clocks spring forward) maps to the first instant
//!   after the gap: in `Europe/Oslo`, 2026-03-29 02:30 does not exist (clocks go from
//!   02:00 CET to 03:00 CEST, at 01:00 UTC), so a job due then runs at 01:00 UTC.
//!
//! Since the occurrences form a *set* of instants, wall times that map to the same instant
//! (several times in one gap, or a gap time and the real time right after the gap) are one
//! occurrence. So `30 2 * * *` in `Europe/Oslo` runs exactly once on every local day,
//! including 2026-03-29 (at 01:00 UTC) and 2026-10-25 (at 00:30 UTC), and `0 * * * *`
//! runs 23 times on the short day and 24 times on the long day.
//!
//! Cron occurrences fall on whole minutes, `every` occurrences on whole seconds.
//! [`Schedule::next_after`] and [`Schedule::latest_at_or_before`] skip non-matching months
//! and days and only look at the matching minutes of matching days, so even a schedule
//! that fires once in four years (`0 0 29 2 *`) answers in microseconds.

use std::time::Duration;

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

mod duration;

pub use duration::{format_duration, parse_duration};

/// How far [`Schedule::next_after`] looks ahead: a little over 400 years, the period of the
/// Gregorian calendar (weekdays included), so a cron expression that matches any day at
/// all always has a next occurrence within it.
const HORIZON_DAYS: u64 = 146_097 + 366;

/// How far back [`Schedule::latest_at_or_before`] looks.
const LOOKBACK_DAYS: i64 = 366;

/// The longest period an `every` schedule may have, in seconds (366 days).
const MAX_EVERY_SECS: u64 = 366 * 86_400;

/// How many occurrences [`Schedule::min_period`] looks at for a cron schedule.
const MIN_PERIOD_SAMPLES: usize = 64;

/// A parsed schedule with its zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The trimmed text it was parsed from.
    text: String,
    /// The zone whose wall clock cron fields are matched against.
    tz: Tz,
    /// What the text means.
    kind: Kind,
    /// See [`Schedule::min_period`]; computed once at parse time.
    min_period: Duration,
}

/// The two kinds of schedule.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// `every <period>`: the multiples of this many seconds since the Unix epoch.
    Every(u64),
    /// A cron expression (macros are expanded to one).
    Cron(Cron),
}

/// A parsed cron expression: one bit set per field, bit `v` set when value `v` matches.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cron {
    /// Bits 0-59.
    minutes: u64,
    /// Bits 0-23.
    hours: u64,
    /// Bits 1-31.
    days: u64,
    /// Bits 1-12.
    months: u64,
    /// Bits 0-6, 0 being Sunday (a 7 in the text is folded into 0).
    weekdays: u64,
    /// The day-of-month field starts with `*` (Vixie's rule: then days and weekdays must
    /// both match, otherwise either may).
    days_star: bool,
    /// The day-of-week field starts with `*`.
    weekdays_star: bool,
}

impl Schedule {
    /// Parses `schedule` in `timezone` (None: UTC).
    ///
    /// Both are trimmed first. See the module docs for the syntax; the error says what is
    /// wrong and where.
    pub fn parse(schedule: &str, timezone: Option<&str>) -> Result<Schedule, String> {
        let text = schedule.trim();
        let tz = match timezone.map(str::trim) {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| format!("unknown time zone '{name}'"))?,
        };
        if text.is_empty() {
            return Err("the schedule is empty; write a cron expression such as '0 7 * * *', \
                        a macro such as '@daily', or a period such as 'every 5m'"
                .to_string());
        }
        let (first_word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
        let kind = if first_word.eq_ignore_ascii_case("every") {
            Kind::Every(parse_every(text, rest)?)
        } else if let Some(name) = text.strip_prefix('@') {
            Kind::Cron(parse_cron(text, expand_macro(text, name)?)?)
        } else {
            Kind::Cron(parse_cron(text, text)?)
        };
        let min_period = match &kind {
            Kind::Every(secs) => Duration::from_secs(*secs),
            Kind::Cron(cron) => cron_min_period(cron),
        };
        Ok(Schedule { text: text.to_string(), tz, kind, min_period })
    }

    /// The text it was parsed from (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The zone's IANA name (`UTC` when none was given).
    pub fn timezone(&self) -> &str {
        self.tz.name()
    }

    /// The first occurrence strictly after `after`. None only if there is none in the next
    /// 10 years (cannot happen for a schedule that parsed, but keep it total).
    ///
    /// In fact a cron schedule is searched for about 400 years ahead, a whole cycle of the
    /// Gregorian calendar, so None only comes at the end of chrono's date range.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(period) => {
                let period = i64::try_from(*period).ok()?;
                let k = after.timestamp().div_euclid(period).checked_add(1)?;
                DateTime::from_timestamp(k.checked_mul(period)?, 0)
            }
            Kind::Cron(cron) => cron_next_after(cron, self.tz, after),
        }
    }

    /// The latest occurrence at or before `at` (for catching up missed runs at start), or
    /// None when there is none in the 366 days before `at`.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let limit = at.checked_sub_signed(TimeDelta::days(LOOKBACK_DAYS))?;
        let latest = match &self.kind {
            Kind::Every(period) => {
                let period = i64::try_from(*period).ok()?;
                let k = at.timestamp().div_euclid(period);
                DateTime::from_timestamp(k.checked_mul(period)?, 0)?
            }
            Kind::Cron(cron) => cron_latest_at_or_before(cron, self.tz, at, limit)?,
        };
        (latest >= limit).then_some(latest)
    }

    /// The typical gap between occurrences, e.g. for sizing lease timeouts.
    ///
    /// For `every` it is the period. For cron it is the smallest gap between consecutive
    /// occurrences among the first 64 occurrences after 2000-01-01T00:00Z, evaluated in UTC
    /// (so ignoring daylight saving, which can make single gaps shorter or longer): e.g.
    /// 15 minutes for `*/15 9-17 * * *`, a day for `0 9 * * 1-5`, 28 days for `@monthly`.
    pub fn min_period(&self) -> Duration {
        self.min_period
    }
}

/// Parses the argument of `every` (`rest`; `text` is the whole schedule for messages) into
/// a number of seconds.
fn parse_every(text: &str, rest: &str) -> Result<u64, String> {
    let arg = rest.trim();
    if arg.is_empty() {
        return Err(format!("'{text}': say the period, e.g. 'every 5m'"));
    }
    let digits = arg.find(|c: char| !c.is_ascii_digit()).unwrap_or(arg.len());
    let (number, unit) = arg.split_at(digits);
    if number.is_empty() {
        return Err(format!(
            "'{text}': the period is a whole number and a unit s, m or h, e.g. 'every 5m'"
        ));
    }
    if unit.is_empty() {
        return Err(format!("'{text}': say the unit: 'every {number}s'"));
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        _ => {
            return Err(format!("'{text}': unknown unit '{unit}' (use s, m or h, e.g. 'every 5m')"))
        }
    };
    let too_long = || {
        format!(
            "'{text}': the period must be at most 366 days (8784h); use a cron expression \
             for rarer jobs"
        )
    };
    let n: u64 = number.parse().map_err(|_| too_long())?;
    let secs = n.checked_mul(unit_secs).ok_or_else(too_long)?;
    if secs == 0 {
        return Err(format!("'{text}': the period must be at least 1s"));
    }
    if secs > MAX_EVERY_SECS {
        return Err(too_long());
    }
    Ok(secs)
}

/// The cron expression a macro (`name`, without the `@`) stands for.
fn expand_macro(text: &str, name: &str) -> Result<&'static str, String> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "hourly" => "0 * * * *",
        "daily" | "midnight" => "0 0 * * *",
        "weekly" => "0 0 * * 0",
        "monthly" => "0 0 1 * *",
        "yearly" | "annually" => "0 0 1 1 *",
        _ => {
            return Err(format!(
                "unknown schedule macro '{text}' (use @hourly, @daily, @midnight, @weekly, \
                 @monthly, @yearly or @annually)"
            ))
        }
    })
}

/// What one cron field accepts.
struct FieldSpec {
    /// The field's name in messages.
    name: &'static str,
    /// The smallest value.
    min: u32,
    /// The largest value.
    max: u32,
    /// Names accepted for values, the first standing for `min`.
    names: &'static [&'static str],
    /// Said after "is not a number" in messages.
    names_hint: &'static str,
}

const MINUTE: FieldSpec = FieldSpec { name: "minute", min: 0, max: 59, names: &[], names_hint: "" };
const HOUR: FieldSpec = FieldSpec { name: "hour", min: 0, max: 23, names: &[], names_hint: "" };
const DAY_OF_MONTH: FieldSpec =
    FieldSpec { name: "day-of-month", min: 1, max: 31, names: &[], names_hint: "" };
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    names_hint: " or a month name (JAN-DEC)",
};
const DAY_OF_WEEK: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    names_hint: " or a weekday name (SUN-SAT)",
};

/// Parses the 5 fields of `fields` (`text` is what the user wrote, for messages).
fn parse_cron(text: &str, fields: &str) -> Result<Cron, String> {
    let f: Vec<&str> = fields.split_whitespace().collect();
    if f.len() != 5 {
        let hint = if f.len() == 1 {
            " (or use a macro such as '@daily', or a period such as 'every 5m')"
        } else {
            ""
        };
        return Err(format!(
            "a cron schedule has 5 fields (minute hour day-of-month month day-of-week); \
             '{text}' has {}{hint}",
            f.len()
        ));
    }
    let mut weekdays = parse_field(&DAY_OF_WEEK, f[4])?;
    if weekdays & (1 << 7) != 0 {
        weekdays = (weekdays & !(1 << 7)) | 1;
    }
    let cron = Cron {
        minutes: parse_field(&MINUTE, f[0])?,
        hours: parse_field(&HOUR, f[1])?,
        days: parse_field(&DAY_OF_MONTH, f[2])?,
        months: parse_field(&MONTH, f[3])?,
        weekdays,
        days_star: f[2].starts_with('*'),
        weekdays_star: f[4].starts_with('*'),
    };
    // The calendar repeats every 400 years, and the horizon covers that.
    if cron_next_after(&cron, Tz::UTC, year_2000()).is_none() {
        return Err(format!(
            "'{text}' can never fire: no day matches its day-of-month, month and day-of-week \
             fields together"
        ));
    }
    Ok(cron)
}

/// The error for `token` (a part of `field`, or all of it) in the field `spec`.
fn field_error(spec: &FieldSpec, field: &str, token: &str, what: &str) -> String {
    if token == field {
        format!("the {} field '{field}' {what}", spec.name)
    } else {
        format!("the {} field '{field}': '{token}' {what}", spec.name)
    }
}

/// Parses one value (a number or a name) of `item` in `field`.
fn parse_value(spec: &FieldSpec, field: &str, item: &str, token: &str) -> Result<u32, String> {
    if token.is_empty() {
        return Err(field_error(spec, field, item, "is missing a value"));
    }
    if token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(v) if (spec.min..=spec.max).contains(&v) => Ok(v),
            _ => Err(field_error(
                spec,
                field,
                token,
                &format!("is out of range {}-{}", spec.min, spec.max),
            )),
        };
    }
    match spec.names.iter().zip(spec.min..).find(|(name, _)| name.eq_ignore_ascii_case(token)) {
        Some((_, value)) => Ok(value),
        None => {
            Err(field_error(spec, field, token, &format!("is not a number{}", spec.names_hint)))
        }
    }
}

/// Parses one cron field into a bit set of the values it matches.
fn parse_field(spec: &FieldSpec, field: &str) -> Result<u64, String> {
    let mut bits = 0u64;
    for item in field.split(',') {
        if item.is_empty() {
            return Err(format!("the {} field '{field}' has an empty list item", spec.name));
        }
        let (range, step) = match item.split_once('/') {
            None => (item, None),
            Some((range, step)) => {
                let n = if !step.is_empty() && step.bytes().all(|b| b.is_ascii_digit()) {
                    step.parse::<u32>().ok()
                } else {
                    None
                };
                match n {
                    Some(0) => {
                        return Err(field_error(
                            spec,
                            field,
                            item,
                            "has a step of 0; a step must be at least 1",
                        ))
                    }
                    Some(n) => (range, Some(n)),
                    None => {
                        return Err(field_error(
                            spec,
                            field,
                            item,
                            "has a step that is not a whole number",
                        ))
                    }
                }
            }
        };
        let (lo, hi) = if range == "*" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let lo = parse_value(spec, field, item, a)?;
            let hi = parse_value(spec, field, item, b)?;
            if lo > hi {
                return Err(field_error(
                    spec,
                    field,
                    item,
                    "is a range whose start is after its end",
                ));
            }
            (lo, hi)
        } else {
            let v = parse_value(spec, field, item, range)?;
            // `a/n` means from `a` to the maximum in steps of `n`.
            (v, if step.is_some() { spec.max } else { v })
        };
        let step = usize::try_from(step.unwrap_or(1)).unwrap_or(usize::MAX);
        for v in (lo..=hi).step_by(step) {
            bits |= 1 << v;
        }
    }
    Ok(bits)
}

/// Whether bit `v` of `bits` is set.
fn has(bits: u64, v: u32) -> bool {
    v < 64 && bits & (1 << v) != 0
}

impl Cron {
    /// Whether the cron matches any time on `date` (month, day of month and day of week).
    fn day_matches(&self, date: NaiveDate) -> bool {
        if !has(self.months, date.month()) {
            return false;
        }
        let day = has(self.days, date.day());
        let weekday = has(self.weekdays, date.weekday().num_days_from_sunday());
        if self.days_star || self.weekdays_star {
            day && weekday
        } else {
            day || weekday
        }
    }

    /// The matching (hour, minute) pairs of a day, in increasing order.
    fn times(&self) -> impl DoubleEndedIterator<Item = (u32, u32)> + '_ {
        (0..24u32)
            .filter(|h| has(self.hours, *h))
            .flat_map(move |h| (0..60u32).filter(|m| has(self.minutes, *m)).map(move |m| (h, m)))
    }
}

/// The UTC instant that the wall-clock time `wall` in `tz` maps to: the instant if it exists
/// once, the earlier one if twice, the first instant after the gap if it does not exist.
fn resolve(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&wall).earliest() {
        Some(t) => Some(t.with_timezone(&Utc)),
        None => gap_end(tz, wall),
    }
}

/// The first instant whose local time in `tz` is at or after `wall` (a wall time in a
/// gap): a binary search over the seconds within a day of it.
fn gap_end(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let local = |ts: i64| DateTime::from_timestamp(ts, 0).map(|t| t.with_timezone(&tz));
    let base = wall.and_utc().timestamp();
    // UTC offsets are within ±1 day, so the local time is before `wall` at `lo` and at or
    // after it at `hi`.
    let (mut lo, mut hi) = (base - 86_400, base + 86_400);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local(mid)?.naive_local() >= wall {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// The first day of the month after `date`'s.
fn first_of_next_month(date: NaiveDate) -> Option<NaiveDate> {
    if date.month() == 12 {
        NaiveDate::from_ymd_opt(date.year().checked_add(1)?, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(date.year(), date.month() + 1, 1)
    }
}

/// The last day of the month before `date`'s.
fn last_of_previous_month(date: NaiveDate) -> Option<NaiveDate> {
    date.with_day(1)?.pred_opt()
}

/// The first occurrence of `cron` in `tz` strictly after `after`.
///
/// A wall time `w` maps to the first instant whose local time is at or after `w`, so this
/// mapping never decreases as `w` increases: the first matching wall time whose instant is
/// after `after` gives the answer. Wall times at or before the local time of `after` map to
/// instants at or before `after` and are skipped without a zone lookup.
fn cron_next_after(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let start = after.with_timezone(&tz).naive_local();
    let mut date = start.date();
    let last = date.checked_add_days(Days::new(HORIZON_DAYS))?;
    while date <= last {
        if !has(cron.months, date.month()) {
            date = first_of_next_month(date)?;
            continue;
        }
        if cron.day_matches(date) {
            for (h, m) in cron.times() {
                let wall = date.and_hms_opt(h, m, 0)?;
                if wall <= start {
                    continue;
                }
                if let Some(t) = resolve(tz, wall).filter(|t| *t > after) {
                    return Some(t);
                }
            }
        }
        date = date.succ_opt()?;
    }
    None
}

/// The latest occurrence of `cron` in `tz` at or before `at`, if there is one at or after
/// `limit`.
///
/// Scans matching wall times backwards (see [`cron_next_after`] for why the first one found
/// is the answer). A wall time `w` can map to an instant at or before `at` only if some
/// instant in the day before `at` has a local time at or after `w` (when clocks fall back,
/// this can be later than the local time of `at`), so later wall times are skipped.
fn cron_latest_at_or_before(
    cron: &Cron,
    tz: Tz,
    at: DateTime<Utc>,
    limit: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let day_before = at.checked_sub_signed(TimeDelta::hours(26))?;
    let upper = at
        .with_timezone(&tz)
        .naive_local()
        .max(day_before.with_timezone(&tz).naive_local().checked_add_signed(TimeDelta::hours(26))?);
    let first = limit.with_timezone(&tz).naive_local().date().pred_opt()?;
    let mut date = upper.date();
    while date >= first {
        if !has(cron.months, date.month()) {
            date = last_of_previous_month(date)?;
            continue;
        }
        if cron.day_matches(date) {
            for (h, m) in cron.times().rev() {
                let wall = date.and_hms_opt(h, m, 0)?;
                if wall > upper {
                    continue;
                }
                if let Some(t) = resolve(tz, wall).filter(|t| *t <= at) {
                    return Some(t);
                }
            }
        }
        date = date.pred_opt()?;
    }
    None
}

/// 2000-01-01T00:00:00Z, the fixed reference instant for parse-time checks.
fn year_2000() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::seconds(946_684_800)
}

/// See [`Schedule::min_period`].
fn cron_min_period(cron: &Cron) -> Duration {
    let mut t = year_2000();
    let mut smallest: Option<Duration> = None;
    let mut previous: Option<DateTime<Utc>> = None;
    for _ in 0..MIN_PERIOD_SAMPLES {
        let Some(next) = cron_next_after(cron, Tz::UTC, t) else { break };
        if let Some(gap) = previous.and_then(|p| (next - p).to_std().ok()) {
            smallest = Some(smallest.map_or(gap, |s| s.min(gap)));
        }
        previous = Some(next);
        t = next;
    }
    smallest.unwrap_or(Duration::from_secs(MAX_EVERY_SECS))
}

#[cfg(test)]
mod tests;
