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
        assert_eq!(s.next_after(utc("2025-03-01T00:00:00Z")), Some(utc("2028-02-29T00:00:00Z")));
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
        assert_eq!(s.next_after(utc("2026-03-29T01:00:10.25Z")), Some(utc("2026-03-29T01:00:30Z")));
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
