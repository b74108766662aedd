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

/// Parses a duration as written in job definitions: `500ms`, `30s`, `10m`, `2h`, `1d`, and
/// combinations like `1h30m`; a bare number is refused ("say the unit: '30s'").
///
/// The units are `d`, `h`, `m`, `s`, `ms`, `us` and `ns`, written from the largest to the
/// smallest, each at most once, with whole numbers and no spaces.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the duration is empty; say e.g. '30s'".to_string());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{t}' has no unit; say the unit: '{t}s'"));
    }
    let unit_list = "d, h, m, s, ms, us or ns";
    let mut total: u128 = 0;
    let mut last_unit: Option<usize> = None;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let letters = after.find(|c: char| !c.is_ascii_alphabetic()).unwrap_or(after.len());
        let (unit, after) = after.split_at(letters);
        if number.is_empty() {
            return Err(match after.chars().next().filter(|_| unit.is_empty()) {
                Some(c) => format!("'{t}': unexpected '{c}'; write e.g. '1h30m'"),
                None => format!("'{t}': expected a number before '{unit}'"),
            });
        }
        if unit.is_empty() {
            return Err(match after.chars().next() {
                Some('.') | Some(',') => format!("'{t}': use whole numbers, e.g. '1h30m'"),
                Some(c) => format!("'{t}': unexpected '{c}' after '{number}'"),
                None => format!("'{t}': say the unit after '{number}', e.g. '{number}s'"),
            });
        }
        let Some(index) = DURATION_UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(format!("'{t}': unknown unit '{unit}' (use {unit_list})"));
        };
        if last_unit.is_some_and(|last| last >= index) {
            return Err(format!(
                "'{t}': write the units from the largest to the smallest, each once \
                 (e.g. '1h30m')"
            ));
        }
        last_unit = Some(index);
        let too_large = || format!("'{t}' is too large");
        let n: u128 = number.parse().map_err(|_| too_large())?;
        let nanos = n.checked_mul(DURATION_UNITS[index].1).ok_or_else(too_large)?;
        total = total.checked_add(nanos).ok_or_else(too_large)?;
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| format!("'{t}' is too large"))?;
    let nanos = u32::try_from(total % 1_000_000_000)
        .expect("invariant: a remainder modulo 1e9 fits in u32");
    Ok(Duration::new(secs, nanos))
}

/// Writes a duration the way parse_duration reads it (`90s` → `1m30s`, `0s`); round-trips.
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let parts = [
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
        u64::from(nanos / 1_000_000),
        u64::from(nanos / 1_000 % 1_000),
        u64::from(nanos % 1_000),
    ];
    let mut out = String::new();
    for (value, (unit, _)) in parts.iter().zip(DURATION_UNITS.iter()) {
        if *value != 0 {
            out.push_str(&value.to_string());
            out.push_str(unit);
        }
    }
    out
}

/// Duration units from the largest to the smallest, with their length in nanoseconds.
const DURATION_UNITS: [(&str, u128); 7] = [
    ("d", 86_400_000_000_000),
    ("h", 3_600_000_000_000),
    ("m", 60_000_000_000),
    ("s", 1_000_000_000),
    ("ms", 1_000_000),
    ("us", 1_000),
    ("ns", 1),
];

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
mod tests {
    use super::*;
    use chrono::{LocalResult, Offset, Timelike};
    use proptest::prelude::*;
    use std::time::Instant;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn parse(s: &str) -> Schedule {
        Schedule::parse(s, None).unwrap()
    }

    fn cron_of(s: &Schedule) -> &Cron {
        match &s.kind {
            Kind::Cron(c) => c,
            Kind::Every(_) => panic!("not a cron schedule"),
        }
    }

    fn bits(values: &[u32]) -> u64 {
        values.iter().fold(0, |b, v| b | 1 << v)
    }

    fn err(s: &str, tz: Option<&str>) -> String {
        Schedule::parse(s, tz).unwrap_err()
    }

    /// All occurrences in [from, to).
    fn occurrences(s: &Schedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<DateTime<Utc>> {
        let mut out = Vec::new();
        let mut t = from - TimeDelta::seconds(1);
        while let Some(n) = s.next_after(t) {
            if n >= to {
                break;
            }
            out.push(n);
            t = n;
        }
        out
    }

    // ---- parsing ----

    #[test]
    fn parses_each_field_form() {
        let s = parse("*/15 9-17/2 1,15 * *");
        let c = cron_of(&s);
        assert_eq!(c.minutes, bits(&[0, 15, 30, 45]));
        assert_eq!(c.hours, bits(&[9, 11, 13, 15, 17]));
        assert_eq!(c.days, bits(&[1, 15]));
        assert_eq!(c.months, bits(&(1..=12).collect::<Vec<_>>()));
        assert_eq!(c.weekdays, bits(&(0..=6).collect::<Vec<_>>()));
        assert!(!c.days_star && c.weekdays_star);

        let c = cron_of(&parse("5/20 0 */10 jan-Mar,DEC Mon-fri")).clone();
        assert_eq!(c.minutes, bits(&[5, 25, 45]));
        assert_eq!(c.hours, bits(&[0]));
        assert_eq!(c.days, bits(&[1, 11, 21, 31]));
        assert_eq!(c.months, bits(&[1, 2, 3, 12]));
        assert_eq!(c.weekdays, bits(&[1, 2, 3, 4, 5]));
        assert!(c.days_star && !c.weekdays_star);

        // 0 and 7 are both Sunday.
        assert_eq!(cron_of(&parse("0 0 * * 7")).weekdays, bits(&[0]));
        assert_eq!(cron_of(&parse("0 0 * * 5-7")).weekdays, bits(&[0, 5, 6]));
        assert_eq!(cron_of(&parse("0 0 * * SUN")).weekdays, bits(&[0]));
        assert_eq!(cron_of(&parse("0 0 * * sat,SUN")).weekdays, bits(&[0, 6]));
        assert_eq!(cron_of(&parse("0 0 * * */2")).weekdays, bits(&[0, 2, 4, 6]));
        assert_eq!(cron_of(&parse("0 0 * Feb *")).months, bits(&[2]));
        assert_eq!(cron_of(&parse("59 23 31 12 *")).minutes, bits(&[59]));

        let s = Schedule::parse("  0 7 * * 1-5 \n", Some(" Europe/Oslo ")).unwrap();
        assert_eq!(s.text(), "0 7 * * 1-5");
        assert_eq!(s.timezone(), "Europe/Oslo");
        assert_eq!(parse("@daily").timezone(), "UTC");
    }

    #[test]
    fn macros_expand() {
        for (m, cron) in [
            ("@hourly", "0 * * * *"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@weekly", "0 0 * * 0"),
            ("@monthly", "0 0 1 * *"),
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@DAILY", "0 0 * * *"),
        ] {
            let s = parse(m);
            assert_eq!(s.text(), m);
            assert_eq!(s.kind, parse(cron).kind, "{m}");
        }
    }

    #[test]
    fn parses_every() {
        assert_eq!(parse("every 30s").kind, Kind::Every(30));
        assert_eq!(parse("every 5m").kind, Kind::Every(300));
        assert_eq!(parse("every 2h").kind, Kind::Every(7200));
        assert_eq!(parse("EVERY   1s").kind, Kind::Every(1));
        assert_eq!(parse("every 30s").text(), "every 30s");
    }

    #[test]
    fn error_messages() {
        assert_eq!(err("0 25 * * *", None), "the hour field '25' is out of range 0-23");
        assert!(err("0 1,25 * * *", None).contains("the hour field '1,25': '25' is out of range"));
        assert!(err("60 * * * *", None).contains("minute field '60'"));
        assert!(err("0 0 0 * *", None).contains("day-of-month field '0' is out of range 1-31"));
        assert!(err("0 0 * 13 *", None).contains("month field '13' is out of range 1-12"));
        assert!(err("0 0 * * 8", None).contains("day-of-week field '8' is out of range 0-7"));
        assert!(err("0 0 * JANUARY *", None)
            .contains("month field 'JANUARY' is not a number or a month name"));
        assert!(err("0 0 * * MON-FUN", None).contains("day-of-week field 'MON-FUN': 'FUN'"));
        assert!(err("x * * * *", None).contains("minute field 'x' is not a number"));
        assert!(err("*/0 * * * *", None).contains("minute field '*/0' has a step of 0"));
        assert!(err("*/x * * * *", None).contains("'*/x' has a step that is not a whole number"));
        assert!(err("0 5-2 * * *", None).contains("hour field '5-2' is a range whose start"));
        assert!(err("0 1,,2 * * *", None).contains("hour field '1,,2' has an empty list item"));
        assert!(err("0 -2 * * *", None).contains("hour field '-2' is missing a value"));
        assert_eq!(
            err("0 7 * *", None),
            "a cron schedule has 5 fields (minute hour day-of-month month day-of-week); \
             '0 7 * *' has 4"
        );
        assert!(err("0 0 7 * * *", None).contains("'0 0 7 * * *' has 6"));
        assert!(err("daily", None).contains("has 1 (or use a macro"));
        assert_eq!(err("@daily", Some("Europe/Osloo")), "unknown time zone 'Europe/Osloo'");
        assert_eq!(err("every 0s", None), "'every 0s': the period must be at least 1s");
        assert!(err("every 30", None).contains("say the unit: 'every 30s'"));
        assert!(err("every 5d", None).contains("unknown unit 'd'"));
        assert!(err("every 500ms", None).contains("unknown unit 'ms'"));
        assert!(err("every", None).contains("say the period"));
        assert!(err("every m", None).contains("'every m': the period is a whole number"));
        assert!(err("every 9000h", None).contains("at most 366 days"));
        assert!(err("every 99999999999999999999h", None).contains("at most 366 days"));
        assert!(err("@reboot", None).contains("unknown schedule macro '@reboot'"));
        assert!(err("   ", None).contains("the schedule is empty"));
        assert!(err("0 0 30 2 *", None).contains("'0 0 30 2 *' can never fire"));
        assert!(err("0 0 31 4,6,9,11 *", None).contains("can never fire"));
        // Vixie OR: Feb 30 never exists, but Mondays in February do.
        assert!(Schedule::parse("0 0 30 2 MON", None).is_ok());
        assert!(Schedule::parse("0 0 29 2 *", None).is_ok());
    }

    // ---- occurrences ----

    #[test]
    fn utc_basics() {
        let s = parse("0 7 * * *");
        assert_eq!(s.next_after(utc("2026-01-01T06:59:59Z")), Some(utc("2026-01-01T07:00:00Z")));
        assert_eq!(s.next_after(utc("2026-01-01T07:00:00Z")), Some(utc("2026-01-02T07:00:00Z")));
        assert_eq!(
            s.latest_at_or_before(utc("2026-01-01T07:00:00Z")),
            Some(utc("2026-01-01T07:00:00Z"))
        );
        assert_eq!(
            s.latest_at_or_before(utc("2026-01-01T06:59:59Z")),
            Some(utc("2025-12-31T07:00:00Z"))
        );
        let s = parse("*/20 * * * *");
        assert_eq!(s.next_after(utc("2026-01-01T00:00:00.5Z")), Some(utc("2026-01-01T00:20:00Z")));
        assert_eq!(
            s.latest_at_or_before(utc("2026-01-01T00:59:59.9Z")),
            Some(utc("2026-01-01T00:40:00Z"))
        );
    }

    #[test]
    fn leap_day_is_fast_and_lookback_is_bounded() {
        let s = parse("0 0 29 2 *");
        let start = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                s.next_after(utc("2025-03-01T00:00:00Z")),
                Some(utc("2028-02-29T00:00:00Z"))
            );
        }
        // Generous for a debug build; a release build takes microseconds per call.
        assert!(start.elapsed() < std::time::Duration::from_millis(500), "{:?}", start.elapsed());
        assert_eq!(s.latest_at_or_before(utc("2027-01-01T00:00:00Z")), None);
        assert_eq!(
            s.latest_at_or_before(utc("2028-06-01T00:00:00Z")),
            Some(utc("2028-02-29T00:00:00Z"))
        );
        // A Feb 29 that is also a Sunday: every 28 years.
        let s = parse("0 0 29 2 */7");
        assert_eq!(s.next_after(utc("2005-01-01T00:00:00Z")), Some(utc("2032-02-29T00:00:00Z")));
    }

    #[test]
    fn vixie_day_of_month_or_day_of_week() {
        let jan = |s: &str| {
            occurrences(&parse(s), utc("2026-01-01T00:00:00Z"), utc("2026-02-01T00:00:00Z"))
                .iter()
                .map(|t| t.day())
                .collect::<Vec<_>>()
        };
        // January 2026: Fridays are the 2nd, 9th, 16th, 23rd and 30th; the 13th is a Tuesday.
        assert_eq!(jan("0 0 13 * FRI"), vec![2, 9, 13, 16, 23, 30]);
        assert_eq!(jan("0 0 13 * *"), vec![13]);
        assert_eq!(jan("0 0 * * FRI"), vec![2, 9, 16, 23, 30]);
        // A day-of-month starting with `*` means both must match: odd days that are Fridays.
        assert_eq!(jan("0 0 */2 * FRI"), vec![9, 23]);
        // Likewise a day-of-week starting with `*`: the 13th, if a Sunday.
        assert_eq!(jan("0 0 13 * */7"), Vec::<u32>::new());
        assert_eq!(jan("0 0 1-3 * 5"), vec![1, 2, 3, 9, 16, 23, 30]);
    }

    #[test]
    fn oslo_daily_across_spring_gap() {
        let s = Schedule::parse("30 2 * * *", Some("Europe/Oslo")).unwrap();
        let got = occurrences(&s, utc("2026-03-27T00:00:00Z"), utc("2026-03-31T00:00:00Z"));
        let want: Vec<_> = [
            "2026-03-27T01:30:00Z",
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z",
        ]
        .iter()
        .map(|s| utc(s))
        .collect();
        assert_eq!(got, want);
        for t in &want {
            assert_eq!(s.latest_at_or_before(*t), Some(*t));
        }
        assert_eq!(
            s.latest_at_or_before(utc("2026-03-29T00:59:59Z")),
            Some(utc("2026-03-28T01:30:00Z"))
        );
    }

    #[test]
    fn oslo_daily_across_autumn_overlap() {
        let s = Schedule::parse("30 2 * * *", Some("Europe/Oslo")).unwrap();
        let got = occurrences(&s, utc("2026-10-23T00:00:00Z"), utc("2026-10-27T00:00:00Z"));
        let want: Vec<_> = [
            "2026-10-23T00:30:00Z",
            "2026-10-24T00:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
        ]
        .iter()
        .map(|s| utc(s))
        .collect();
        assert_eq!(got, want);
        // During the repeated hour (02:30 CET, the second time), the latest run is the first.
        assert_eq!(
            s.latest_at_or_before(utc("2026-10-25T01:45:00Z")),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        assert_eq!(s.next_after(utc("2026-10-25T00:30:00Z")), Some(utc("2026-10-26T01:30:00Z")));
    }

    #[test]
    fn hourly_on_dst_days() {
        let count = |tz: &str, from: &str, to: &str| {
            let s = Schedule::parse("0 * * * *", Some(tz)).unwrap();
            let got = occurrences(&s, utc(from), utc(to));
            let mut dedup = got.clone();
            dedup.dedup();
            assert_eq!(dedup, got);
            got.len()
        };
        // Local days, from local midnight to local midnight.
        assert_eq!(count("Europe/Oslo", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z"), 24);
        assert_eq!(count("Europe/Oslo", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z"), 23);
        assert_eq!(count("America/New_York", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z"), 23);
        assert_eq!(count("America/New_York", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z"), 24);
        assert_eq!(count("Europe/Oslo", "2026-06-01T22:00:00Z", "2026-06-02T22:00:00Z"), 24);
    }

    #[test]
    fn lord_howe_half_hour_gap_is_one_occurrence() {
        // Clocks go from 02:00 (+10:30) to 02:30 (+11:00) on 2026-10-04, at 15:30 UTC on
        // the 3rd: 02:00, 02:15 and 02:30 all map to that instant.
        let s = Schedule::parse("*/15 2 * * *", Some("Australia/Lord_Howe")).unwrap();
        let got = occurrences(&s, utc("2026-10-03T12:00:00Z"), utc("2026-10-04T12:00:00Z"));
        assert_eq!(got, vec![utc("2026-10-03T15:30:00Z"), utc("2026-10-03T15:45:00Z")]);
    }

    #[test]
    fn every_is_epoch_aligned() {
        for tz in [None, Some("Europe/Oslo"), Some("Asia/Kolkata")] {
            let s = Schedule::parse("every 30s", tz).unwrap();
            assert_eq!(
                s.next_after(utc("2026-03-29T01:00:10.25Z")),
                Some(utc("2026-03-29T01:00:30Z"))
            );
            let t = utc("2026-03-29T01:00:30Z");
            assert_eq!(s.latest_at_or_before(t), Some(t));
            assert_eq!(s.next_after(t), Some(utc("2026-03-29T01:01:00Z")));
            assert_eq!(
                s.latest_at_or_before(utc("2026-03-29T01:00:59.999Z")),
                Some(utc("2026-03-29T01:00:30Z"))
            );
        }
        let s = parse("every 7m");
        assert_eq!(s.next_after(DateTime::UNIX_EPOCH), DateTime::from_timestamp(420, 0));
        let t = utc("2026-05-05T10:11:12Z");
        let n = s.next_after(t).unwrap();
        assert_eq!(n.timestamp() % 420, 0);
        assert!(n > t && n - t <= TimeDelta::seconds(420));
        assert_eq!(
            s.latest_at_or_before(DateTime::from_timestamp(-1, 0).unwrap()),
            DateTime::from_timestamp(-420, 0)
        );
    }

    #[test]
    fn min_periods() {
        let p = |s: &str| parse(s).min_period();
        assert_eq!(p("every 30s"), Duration::from_secs(30));
        assert_eq!(p("every 2h"), Duration::from_secs(7200));
        assert_eq!(p("* * * * *"), Duration::from_secs(60));
        assert_eq!(p("*/15 9-17 * * *"), Duration::from_secs(900));
        assert_eq!(p("0 0 * * *"), Duration::from_secs(86_400));
        assert_eq!(p("0 9 * * 1-5"), Duration::from_secs(86_400));
        assert_eq!(p("@monthly"), Duration::from_secs(28 * 86_400));
        assert_eq!(p("0 0,12 * * *"), Duration::from_secs(12 * 3600));
        assert!(p("@yearly") >= Duration::from_secs(365 * 86_400));
    }

    // ---- durations ----

    #[test]
    fn durations() {
        let d = |s: &str| parse_duration(s).unwrap();
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("10m"), Duration::from_secs(600));
        assert_eq!(d("2h"), Duration::from_secs(7200));
        assert_eq!(d("1d"), Duration::from_secs(86_400));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1m90s"), Duration::from_secs(150));
        assert_eq!(d(" 0s "), Duration::ZERO);
        assert_eq!(d("1s5us7ns"), Duration::new(1, 5_007));

        assert_eq!(parse_duration("30").unwrap_err(), "'30' has no unit; say the unit: '30s'");
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("1h30").unwrap_err().contains("say the unit after '30'"));
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit 'x'"));
        assert!(parse_duration("1.5h").unwrap_err().contains("whole numbers"));
        assert!(parse_duration("30m1h").unwrap_err().contains("largest to the smallest"));
        assert!(parse_duration("1m1m").unwrap_err().contains("each once"));
        assert!(parse_duration("h").unwrap_err().contains("expected a number before 'h'"));
        assert!(parse_duration("-5s").unwrap_err().contains("unexpected '-'"));
        assert!(parse_duration("1h 30m").unwrap_err().contains("unexpected ' '"));
        assert!(parse_duration("99999999999999999999999d").unwrap_err().contains("too large"));

        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
        assert_eq!(format_duration(Duration::from_secs(86_400 + 7200)), "1d2h");
        assert_eq!(parse_duration(&format_duration(Duration::MAX)), Ok(Duration::MAX));
    }

    proptest! {
        #[test]
        fn durations_round_trip(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let d = Duration::new(secs, nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }

    // ---- the reference: a brute-force, minute-by-minute reading of the rule ----

    const ZONES: [&str; 5] =
        ["UTC", "Europe/Oslo", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"];

    /// The instant a wall minute maps to, straight from the rule.
    fn reference_instant(tz: Tz, wall: NaiveDateTime) -> DateTime<Utc> {
        match tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => a.min(b).with_timezone(&Utc),
            LocalResult::None => {
                // The first instant after the gap: that of the first wall minute after it.
                let mut w = wall;
                loop {
                    w += TimeDelta::minutes(1);
                    if let Some(t) = tz.from_local_datetime(&w).earliest() {
                        return t.with_timezone(&Utc);
                    }
                }
            }
        }
    }

    fn wall_matches(c: &Cron, w: NaiveDateTime) -> bool {
        c.day_matches(w.date()) && has(c.hours, w.hour()) && has(c.minutes, w.minute())
    }

    /// Calls `visit` with the matching wall minutes of the days from `from` to `to`
    /// (inclusive), in order, forwards or backwards; stops when it returns false.
    fn scan(
        c: &Cron,
        from: NaiveDate,
        to: NaiveDate,
        backwards: bool,
        mut visit: impl FnMut(NaiveDateTime) -> bool,
    ) {
        let mut day = from;
        loop {
            if c.day_matches(day) {
                let mut minutes: Vec<u32> = (0..1440).collect();
                if backwards {
                    minutes.reverse();
                }
                for m in minutes {
                    let w = day.and_hms_opt(m / 60, m % 60, 0).unwrap();
                    if wall_matches(c, w) && !visit(w) {
                        return;
                    }
                }
            }
            if day == to {
                return;
            }
            day = if backwards { day.pred_opt().unwrap() } else { day.succ_opt().unwrap() };
        }
    }

    /// The smallest occurrence after `t`, scanning up to 400 days ahead; once one is found
    /// it keeps going for one more day of wall time, in case of non-monotonic mappings.
    fn reference_next(c: &Cron, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&tz).naive_local().date();
        let (from, to) = (local.pred_opt().unwrap(), local + Days::new(400));
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        scan(c, from, to, false, |w| {
            let i = reference_instant(tz, w);
            if i > t && best.is_none_or(|(b, _)| i < b) {
                best = Some((i, best.map_or(w, |(_, first)| first)));
            }
            best.is_none_or(|(_, first)| w <= first + TimeDelta::days(1))
        });
        best.map(|(b, _)| b)
    }

    /// The largest occurrence at or before `t`, scanning up to 366 days back, then one more
    /// day of wall time.
    fn reference_latest(c: &Cron, tz: Tz, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(&tz).naive_local().date();
        let (from, to) = (local.succ_opt().unwrap(), local - Days::new(367));
        let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
        scan(c, from, to, true, |w| {
            let i = reference_instant(tz, w);
            if i <= t && best.is_none_or(|(b, _)| i > b) {
                best = Some((i, best.map_or(w, |(_, first)| first)));
            }
            best.is_none_or(|(_, first)| w >= first - TimeDelta::days(1))
        });
        best.map(|(b, _)| b).filter(|b| *b >= t - TimeDelta::days(LOOKBACK_DAYS))
    }

    /// A random cron field between `min` and `max`, `*` more often than not.
    fn field(min: u32, max: u32, star_weight: u32) -> impl Strategy<Value = String> {
        prop_oneof![
            star_weight => Just("*".to_string()),
            2 => (min..=max).prop_map(|v| v.to_string()),
            1 => (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            1 => (1..=(max - min + 1)).prop_map(|n| format!("*/{n}")),
            1 => (min..=max, min..=max, 1..6u32)
                .prop_map(|(a, b, n)| format!("{}-{}/{n}", a.min(b), a.max(b))),
            1 => (min..=max, 1..10u32).prop_map(|(a, n)| format!("{a}/{n}")),
            1 => (min..=max, min..=max).prop_map(|(a, b)| format!("{a},{b}")),
        ]
    }

    /// Hours near the usual DST switches (00:00-03:00) turn up often.
    fn hour_field() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => field(0, 23, 2),
            2 => (0..=3u32).prop_map(|h| h.to_string()),
            1 => (0..=3u32, 1..=4u32).prop_map(|(a, n)| format!("{a}-{}", a + n)),
        ]
    }

    /// Any cron expression, `*` more often than not in the day and month fields.
    fn any_cron() -> impl Strategy<Value = String> {
        (field(0, 59, 2), hour_field(), field(1, 31, 8), field(1, 12, 8), field(0, 7, 6))
            .prop_map(|(mi, h, d, mo, w)| format!("{mi} {h} {d} {mo} {w}"))
    }

    /// A cron expression aimed at the hours around DST switches, on the days they happen.
    fn cron_near_switch() -> impl Strategy<Value = String> {
        let select = |v: &[&'static str]| prop::sample::select(v.to_vec());
        (
            field(0, 59, 2),
            select(&["2", "1-3", "2,3", "0-2", "*/2", "1/1", "2-4/2", "3", "2/5", "1,2"]),
            select(&["*", "*", "1-31", "*/2", "1-14"]),
            select(&["*", "*", "3-11", "3,4,10,11"]),
            select(&["*", "*", "0", "SUN", "1-6"]),
        )
            .prop_map(|(mi, h, d, mo, w)| format!("{mi} {h} {d} {mo} {w}"))
    }

    /// Instants in 2020-2030, half of them in months with DST switches.
    fn instant() -> impl Strategy<Value = DateTime<Utc>> {
        // 2020-01-01 .. 2031-01-01
        let uniform =
            (1_577_836_800i64..1_924_992_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap());
        let dst_months = prop::sample::select(vec![3u32, 4, 10, 11]);
        let in_dst_months =
            (2020..=2030i32, dst_months, 1..=28u32, 0..86_400i64).prop_map(|(y, m, d, s)| {
                let day = NaiveDate::from_ymd_opt(y, m, d).unwrap();
                day.and_hms_opt(0, 0, 0).unwrap().and_utc() + TimeDelta::seconds(s)
            });
        prop_oneof![uniform, in_dst_months]
    }

    /// The instants in `year` at which `tz`'s UTC offset changes.
    fn transitions(tz: Tz, year: i32) -> Vec<DateTime<Utc>> {
        let offset =
            |ts: i64| DateTime::from_timestamp(ts, 0).unwrap().with_timezone(&tz).offset().fix();
        let mut out = Vec::new();
        let mut day =
            NaiveDate::from_ymd_opt(year, 1, 1).unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
        while day.year() == year {
            let (mut lo, mut hi) = (day.timestamp(), day.timestamp() + 86_400);
            if offset(lo) != offset(hi) {
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if offset(mid) == offset(lo) {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                out.push(DateTime::from_timestamp(hi, 0).unwrap());
            }
            day += TimeDelta::days(1);
        }
        out
    }

    /// An instant within 4 hours of one of the offset changes of `zone` (which has some),
    /// on a whole minute or not.
    fn near_switch(zone: &'static str) -> impl Strategy<Value = DateTime<Utc>> {
        // Often just after a switch, where a fall-back repeats an hour.
        let minutes = prop_oneof![-240..240i64, 0..90i64];
        (2020..=2030i32, any::<prop::sample::Index>(), minutes, any::<bool>(), 0..60i64).prop_map(
            move |(year, index, minutes, whole, seconds)| {
                let changes = transitions(zone.parse().unwrap(), year);
                let delta = minutes * 60 + if whole { 0 } else { seconds };
                changes[index.index(changes.len())] + TimeDelta::seconds(delta)
            },
        )
    }

    /// (cron expression, zone, instant): a third of them anything, the others aimed at DST
    /// switches in the zones that have them.
    fn case() -> impl Strategy<Value = (String, &'static str, DateTime<Utc>)> {
        let anything = (any_cron(), prop::sample::select(ZONES.to_vec()), instant());
        let dst_zones = prop::sample::select(ZONES[1..4].to_vec());
        let at_switch = (prop_oneof![1 => any_cron(), 3 => cron_near_switch()], dst_zones)
            .prop_flat_map(|(text, zone)| (Just(text), Just(zone), near_switch(zone)));
        prop_oneof![1 => anything, 2 => at_switch]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_brute_force(
            (text, zone, t) in case(),
        ) {
            let Ok(s) = Schedule::parse(&text, Some(zone)) else {
                return Ok(()); // e.g. `0 0 31 2 *`: refused, and rightly (checked elsewhere)
            };
            let c = cron_of(&s).clone();
            let next = s.next_after(t);
            match reference_next(&c, s.tz, t) {
                Some(want) => prop_assert_eq!(next, Some(want), "{} in {} after {}", text, zone, t),
                None => prop_assert!(next.is_none_or(|n| n > t + TimeDelta::days(398))),
            }
            if let Some(n) = next {
                prop_assert!(n > t);
                prop_assert_eq!(s.latest_at_or_before(n), Some(n));
                // Nothing strictly between t and n.
                let before = s.latest_at_or_before(n - TimeDelta::seconds(1));
                prop_assert!(before.is_none_or(|b| b <= t), "{:?} between {} and {}", before, t, n);
            }
            prop_assert_eq!(s.latest_at_or_before(t), reference_latest(&c, s.tz, t));
        }
    }
}
