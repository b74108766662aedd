//! The Delta statistics of a stitched file, merged from the statistics of the files it was
//! stitched from (as the log records them): row counts and null counts add up, the minimum is
//! the least of the minimums, the maximum the greatest of the maximums.
//!
//! Values are compared by the column's type and copied as the log wrote them (raw JSON text),
//! so nothing is rounded: numbers are compared exactly as decimal literals, timestamps as
//! instants, strings byte-wise. A bound that cannot be merged exactly (a type without an
//! order here, a file with values but no bound for the column) is left out, which only costs
//! pruning: readers treat a missing bound as unknown.

use std::cmp::Ordering;
use std::collections::HashMap;

use arrow::datatypes::{DataType, Field, Fields};
use serde_json::value::RawValue;

/// The merged statistics JSON of files whose statistics are `stats` (one JSON document per
/// file), for a table whose columns are `fields`. `None` when a file has no row count.
pub(crate) fn merge(fields: &Fields, stats: &[&str]) -> Option<String> {
    let files: Vec<FileStats> = stats.iter().map(|s| FileStats::parse(s)).collect::<Option<_>>()?;
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let mut out = vec![("numRecords".to_string(), rows.to_string())];
    let levels: Vec<Level> = files
        .iter()
        .map(|f| Level {
            rows: f.rows,
            min: f.min.as_ref(),
            max: f.max.as_ref(),
            nulls: f.nulls.as_ref(),
        })
        .collect();
    let merged = merge_fields(fields, &levels);
    out.push(("minValues".into(), raw_object(&merged.min)));
    out.push(("maxValues".into(), raw_object(&merged.max)));
    out.push(("nullCount".into(), raw_object(&merged.nulls)));
    if let Some(tight) = files.iter().map(|f| f.tight).collect::<Option<Vec<bool>>>() {
        out.push(("tightBounds".into(), tight.iter().all(|t| *t).to_string()));
    }
    Some(raw_object(&out))
}

/// One file's statistics, its objects kept as raw JSON.
struct FileStats {
    rows: u64,
    min: Option<Object>,
    max: Option<Object>,
    nulls: Option<Object>,
    tight: Option<bool>,
}

/// A JSON object whose values are kept as written (numbers are not parsed into floats).
type Object = HashMap<String, Box<RawValue>>;

impl FileStats {
    fn parse(stats: &str) -> Option<FileStats> {
        let top: Object = serde_json::from_str(stats).ok()?;
        let rows = serde_json::from_str::<u64>(top.get("numRecords")?.get()).ok()?;
        let object = |key: &str| top.get(key).and_then(|raw| object(raw.get()));
        let tight = top.get("tightBounds").and_then(|raw| serde_json::from_str(raw.get()).ok());
        Some(FileStats {
            rows,
            min: object("minValues"),
            max: object("maxValues"),
            nulls: object("nullCount"),
            tight,
        })
    }
}

fn object(text: &str) -> Option<Object> {
    serde_json::from_str(text).ok()
}

/// The statistics of one level of nesting (the table's columns, or a struct's fields) in
/// one file: raw JSON text per column name.
struct Level<'a> {
    rows: u64,
    min: Option<&'a Object>,
    max: Option<&'a Object>,
    nulls: Option<&'a Object>,
}

/// Merged bounds and null counts of one level, as raw JSON text per column name.
#[derive(Default)]
struct Merged {
    min: Vec<(String, String)>,
    max: Vec<(String, String)>,
    nulls: Vec<(String, String)>,
}

/// A JSON object of raw values, written as they are.
fn raw_object(entries: &[(String, String)]) -> String {
    let fields: Vec<String> = entries
        .iter()
        .map(|(key, raw)| format!("{}:{raw}", serde_json::Value::from(key.as_str())))
        .collect();
    format!("{{{}}}", fields.join(","))
}

/// The raw text of `name` in an object of this level, if any.
fn text<'a>(object: Option<&'a Object>, name: &str) -> Option<&'a str> {
    Some(object?.get(name)?.get())
}

fn merge_fields(fields: &Fields, files: &[Level]) -> Merged {
    let mut merged = Merged::default();
    for field in fields {
        let name = field.name();
        if let DataType::Struct(children) = field.data_type() {
            // Each file's objects one level down.
            let nested: Vec<(Option<Object>, Option<Object>, Option<Object>)> = files
                .iter()
                .map(|f| {
                    let down = |o: Option<&Object>| text(o, name).and_then(object);
                    (down(f.min), down(f.max), down(f.nulls))
                })
                .collect();
            let levels: Vec<Level> = files
                .iter()
                .zip(&nested)
                .map(|(f, (min, max, nulls))| Level {
                    rows: f.rows,
                    min: min.as_ref(),
                    max: max.as_ref(),
                    nulls: nulls.as_ref(),
                })
                .collect();
            let inner = merge_fields(children, &levels);
            for (entries, out) in [
                (&inner.min, &mut merged.min),
                (&inner.max, &mut merged.max),
                (&inner.nulls, &mut merged.nulls),
            ] {
                if !entries.is_empty() {
                    out.push((name.clone(), raw_object(entries)));
                }
            }
            continue;
        }
        let nulls: Option<Vec<u64>> = files
            .iter()
            .map(|f| text(f.nulls, name).and_then(|t| serde_json::from_str(t).ok()))
            .collect();
        if let Some(nulls) = &nulls {
            merged.nulls.push((name.clone(), nulls.iter().sum::<u64>().to_string()));
        }
        if !orderable(field.data_type()) {
            continue;
        }
        for (want, out) in [(Ordering::Less, &mut merged.min), (Ordering::Greater, &mut merged.max)]
        {
            let mut best: Option<&str> = None;
            let mut known = true;
            for (i, file) in files.iter().enumerate() {
                let bound = if want == Ordering::Less { file.min } else { file.max };
                match text(bound, name) {
                    Some(value) => {
                        best = match best {
                            None => Some(value),
                            Some(current) => match compare(field, value, current) {
                                Some(order) if order == want => Some(value),
                                Some(_) => Some(current),
                                None => {
                                    known = false;
                                    break;
                                }
                            },
                        }
                    }
                    // A file without a bound only when all its values are null.
                    None => {
                        let all_null = nulls.as_ref().is_some_and(|n| n[i] == file.rows);
                        if !all_null {
                            known = false;
                            break;
                        }
                    }
                }
            }
            if let (true, Some(best)) = (known, best) {
                out.push((name.clone(), best.to_string()));
            }
        }
    }
    merged
}

/// Whether bounds of this type are compared here (the others are left out).
fn orderable(data_type: &DataType) -> bool {
    use DataType::*;
    data_type.is_numeric()
        || matches!(
            data_type,
            Utf8 | LargeUtf8 | Utf8View | Date32 | Date64 | Timestamp(..) | Boolean
        )
}

/// The order of two bounds of `field` written as JSON, or `None` when they cannot be compared
/// exactly here.
fn compare(field: &Field, a: &str, b: &str) -> Option<Ordering> {
    use DataType::*;
    match field.data_type() {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Float16 | Float32
        | Float64 | Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..) => {
            Some(Number::parse(a)?.cmp(&Number::parse(b)?))
        }
        Utf8 | LargeUtf8 | Utf8View => {
            let (a, b): (String, String) =
                (serde_json::from_str(a).ok()?, serde_json::from_str(b).ok()?);
            Some(a.as_bytes().cmp(b.as_bytes()))
        }
        Date32 | Date64 => {
            let day = |t: &str| {
                let s: String = serde_json::from_str(t).ok()?;
                chrono::NaiveDate::parse_from_str(&s, "%Y-%m-%d").ok()
            };
            Some(day(a)?.cmp(&day(b)?))
        }
        Timestamp(..) => Some(instant(a)?.cmp(&instant(b)?)),
        Boolean => {
            let (a, b): (bool, bool) =
                (serde_json::from_str(a).ok()?, serde_json::from_str(b).ok()?);
            Some(a.cmp(&b))
        }
        _ => None,
    }
}

/// A timestamp bound as the instant it names (RFC 3339 with an offset, or without one for
/// timestamps without a time zone).
fn instant(text: &str) -> Option<chrono::NaiveDateTime> {
    let s: String = serde_json::from_str(text).ok()?;
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(&s) {
        return Some(at.naive_utc());
    }
    chrono::NaiveDateTime::parse_from_str(&s, "%Y-%m-%dT%H:%M:%S%.f").ok()
}

/// A JSON number as sign, significant digits and a power of ten, for exact comparison.
#[derive(PartialEq, Eq)]
struct Number {
    negative: bool,
    /// Significant digits without leading or trailing zeros; empty for zero.
    digits: Vec<u8>,
    /// The value is `0.digits × 10^exponent`.
    exponent: i64,
}

impl Number {
    fn parse(text: &str) -> Option<Number> {
        let text = text.trim();
        let (negative, rest) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().ok()?),
            None => (rest, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let all: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let leading = all.iter().take_while(|d| **d == 0).count();
        let mut digits = all[leading..].to_vec();
        while digits.last() == Some(&0) {
            digits.pop();
        }
        let exponent = int.len() as i64 - leading as i64 + exp;
        Some(Number { negative: negative && !digits.is_empty(), digits, exponent })
    }

    fn magnitude(&self, other: &Number) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => {
                self.exponent.cmp(&other.exponent).then_with(|| self.digits.cmp(&other.digits))
            }
        }
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        match (self.negative, other.negative) {
            (false, false) => self.magnitude(other),
            (true, true) => other.magnitude(self),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::{Schema, TimeUnit};

    use super::*;

    #[test]
    fn numbers_compare_exactly_as_decimal_literals() {
        let order = |a: &str, b: &str| Number::parse(a).unwrap().cmp(&Number::parse(b).unwrap());
        assert_eq!(order("1", "2"), Ordering::Less);
        assert_eq!(order("-1", "0"), Ordering::Less);
        assert_eq!(order("-2.5", "-2.25"), Ordering::Less);
        assert_eq!(order("10", "9.99"), Ordering::Greater);
        assert_eq!(order("0.001", "1e-3"), Ordering::Equal);
        assert_eq!(order("-0", "0.0"), Ordering::Equal);
        assert_eq!(order("1.5E2", "149.99"), Ordering::Greater);
        // Beyond a double's precision: equal as f64, not as numbers.
        assert_eq!(order("12345678901234567890.12", "12345678901234567890.13"), Ordering::Less);
        assert_eq!(order("9007199254740993", "9007199254740992"), Ordering::Greater);
    }

    fn fields() -> Fields {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())), true),
            Field::new("price", DataType::Decimal128(38, 2), true),
            Field::new("flags", DataType::Binary, true),
            Field::new(
                "geo",
                DataType::Struct(
                    vec![
                        Field::new("country", DataType::Utf8, true),
                        Field::new("lat", DataType::Float64, true),
                    ]
                    .into(),
                ),
                true,
            ),
        ])
        .fields()
        .clone()
    }

    #[test]
    fn bounds_merge_by_type_and_counts_add_up() {
        let a = r#"{"numRecords":3,"minValues":{"id":5,"name":"b","at":"2026-12-01T10:00:00Z","price":123456789012345678.01,"flags":"AA==","geo":{"country":"DE","lat":-1.5}},"maxValues":{"id":9,"name":"zz","at":"2026-12-01T10:00:00Z","price":123456789012345678.02,"flags":"AQ==","geo":{"country":"FR","lat":2.0}},"nullCount":{"id":0,"name":1,"at":0,"price":0,"flags":0,"geo":{"country":0,"lat":1}},"tightBounds":true}"#;
        let b = r#"{"numRecords":2,"minValues":{"id":-3,"name":"a","at":"2026-12-01T10:00:00.500Z","price":123456789012345678.00,"geo":{"country":"AT","lat":0.25}},"maxValues":{"id":4,"name":"z","at":"2026-12-01T10:00:00.500Z","price":123456789012345678.03,"geo":{"country":"NL","lat":1e1}},"nullCount":{"id":0,"name":0,"at":0,"price":0,"flags":2,"geo":{"country":0,"lat":0}},"tightBounds":true}"#;
        let text = merge(&fields(), &[a, b]).unwrap();
        // Decimals beyond a double's precision keep every digit.
        assert!(text.contains(r#""price":123456789012345678.00"#), "{text}");
        assert!(text.contains(r#""price":123456789012345678.03"#), "{text}");
        let mut merged: serde_json::Value = serde_json::from_str(&text).unwrap();
        // (Parsed, they are floats: compared as text above.)
        for bound in ["minValues", "maxValues"] {
            merged[bound].as_object_mut().unwrap().remove("price");
        }
        assert_eq!(
            merged,
            serde_json::json!({
                "numRecords": 5,
                // "flags" is all null in b (2 of 2), so a's bounds stand, but binary bounds
                // have no order here and are left out.
                "minValues": {"id": -3, "name": "a", "at": "2026-12-01T10:00:00Z",
                    "geo": {"country": "AT", "lat": -1.5}},
                // Byte-wise "zz" > "z"; 00.500 is later than 00 although "." < "Z".
                "maxValues": {"id": 9, "name": "zz", "at": "2026-12-01T10:00:00.500Z",
                    "geo": {"country": "NL", "lat": 1e1}},
                "nullCount": {"id": 0, "name": 1, "at": 0, "price": 0, "flags": 2,
                    "geo": {"country": 0, "lat": 1}},
                "tightBounds": true,
            })
        );
    }

    #[test]
    fn a_missing_bound_on_a_file_with_values_drops_the_column() {
        // b has values of "name" (no nulls) but no bound for it: the merged bounds would be a
        // guess, so they are left out. b's "id" is all null: a's bounds stand.
        let a = r#"{"numRecords":2,"minValues":{"id":1,"name":"m"},"maxValues":{"id":2,"name":"n"},"nullCount":{"id":0,"name":0}}"#;
        let b = r#"{"numRecords":4,"minValues":{},"maxValues":{},"nullCount":{"id":4,"name":0}}"#;
        let merged: serde_json::Value =
            serde_json::from_str(&merge(&fields(), &[a, b]).unwrap()).unwrap();
        assert_eq!(merged["minValues"], serde_json::json!({"id": 1}));
        assert_eq!(merged["maxValues"], serde_json::json!({"id": 2}));
        assert_eq!(merged["nullCount"], serde_json::json!({"id": 4, "name": 0}));
        assert!(merged.get("tightBounds").is_none());
        // Without a row count there is nothing to merge.
        assert_eq!(merge(&fields(), &[a, r#"{"minValues":{}}"#]), None);
    }
}
