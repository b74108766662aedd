//! Durations as job definitions write them (`30s`, `1h30m`).

use std::time::Duration;

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
