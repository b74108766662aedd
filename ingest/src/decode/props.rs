//! Property tests of the decoders: hostile bodies never panic and their errors say where;
//! records that fit come back as they were sent. `scripts/fuzz` runs them for longer.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use proptest::prelude::*;
use serde_json::{Map, Value};

use super::*;

/// The schemas bodies are decoded against: flat, typed and nested.
fn schemas() -> Vec<SchemaRef> {
    let point = Fields::from(vec![
        Field::new("x", DataType::Float64, true),
        Field::new("y", DataType::Float64, true),
    ]);
    vec![
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
            Field::new("price", DataType::Float64, true),
        ])),
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new_list("tags", Field::new_list_field(DataType::Utf8, true), true),
            Field::new("point", DataType::Struct(point), true),
        ])),
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)])),
    ]
}

/// Keys that collide with the schemas' columns, and some that no engine takes.
const KEYS: &[&str] = &["id", "name", "price", "ok", "tags", "point", "x", "a", "", "é", "a b"];

/// Any JSON value: unicode strings, extreme numbers, arrays and objects a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..5).prop_map(|kv| {
                Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}

/// Records: mostly objects, sometimes not.
fn records() -> impl Strategy<Value = Vec<Value>> {
    let record = prop_oneof![
        8 => prop::collection::vec((prop::sample::select(KEYS), json_value()), 0..6)
            .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        1 => json_value(),
    ];
    prop::collection::vec(record, 0..6)
}

/// How a body lays out its records.
#[derive(Debug, Clone, Copy)]
enum Layout {
    Ndjson,
    Array,
    PrettyArray,
    Stream,
}

fn layout() -> impl Strategy<Value = Layout> {
    prop::sample::select(vec![Layout::Ndjson, Layout::Array, Layout::PrettyArray, Layout::Stream])
}

/// The body for `records`, and the format it is sent as.
fn body(records: &[Value], layout: Layout) -> (Vec<u8>, Format) {
    let lines = |sep: &str| records.iter().map(Value::to_string).collect::<Vec<_>>().join(sep);
    match layout {
        Layout::Ndjson => (lines("\n").into_bytes(), Format::Ndjson),
        Layout::Array => (format!("[{}]", lines(",")).into_bytes(), Format::Json),
        Layout::PrettyArray => {
            (serde_json::to_vec_pretty(&Value::Array(records.to_vec())).unwrap(), Format::Json)
        }
        Layout::Stream => (lines(" \n\t").into_bytes(), Format::Json),
    }
}

/// How many records a body of `records` holds, when that is plain: a JSON stream that starts
/// with an array is an array of records (the first record's elements), not a record.
fn record_count(records: &[Value], layout: Layout) -> Option<usize> {
    match records.first() {
        Some(Value::Array(elements)) if matches!(layout, Layout::Stream) => {
            (records.len() == 1).then_some(elements.len())
        }
        _ => Some(records.len()),
    }
}

/// Bytes a client might send: JSON-ish tokens (huge numbers, escapes, stray brackets, deep
/// nesting), a valid body cut or corrupted, or anything at all.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"id\"",
        "\"name\"",
        "\"price\"",
        "\"a\"",
        "1",
        "-0",
        "1e400",
        "-1e-400",
        "123456789012345678901234567890",
        "9223372036854775808",
        "2.5",
        "\"x\"",
        "\"\\u00e9\"",
        "\"\\ud800\"",
        "\"\\\"\"",
        "\"[{\"",
        "null",
        "true",
        "nul",
        "\n",
        " ",
        "\r\n",
        "\"",
        "\\",
        "é",
        "\u{0}",
        "\u{feff}",
    ];
    let deep = (1usize..100, any::<bool>()).prop_map(|(depth, objects)| {
        let (open, close) = if objects { ("{\"id\":", "}") } else { ("[", "]") };
        format!("{{\"name\":{}1{}}}", open.repeat(depth), close.repeat(depth)).into_bytes()
    });
    let corrupted = (records(), layout(), any::<prop::sample::Index>(), any::<u8>(), any::<bool>())
        .prop_map(|(records, layout, at, byte, cut)| {
            let (mut body, _) = body(&records, layout);
            if !body.is_empty() {
                let i = at.index(body.len());
                if cut {
                    body.truncate(i);
                } else {
                    body[i] = byte;
                }
            }
            body
        });
    prop_oneof![
        prop::collection::vec(prop::sample::select(TOKENS), 0..40)
            .prop_map(|t| t.concat().into_bytes()),
        deep,
        corrupted,
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// The checks every error of a JSON decoder passes: it names a line of the body, and a
/// column when the body is malformed or too deep.
fn check_error(body: &[u8], e: &DecodeError) -> Result<(), TestCaseError> {
    let lines = body.iter().filter(|b| **b == b'\n').count() + 1;
    let line = e.line.ok_or_else(|| TestCaseError::fail(format!("no line in: {e}")))?;
    prop_assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
    if e.message.starts_with("malformed JSON") || e.message.starts_with("nested deeper") {
        prop_assert!(e.column.is_some_and(|c| c >= 1), "no column in: {e}");
    }
    Ok(())
}

/// The rows of `batches` as JSON objects (nulls left out, as arrow-json writes them).
fn rows_of(batches: &[RecordBatch]) -> Vec<Value> {
    let mut out = Vec::new();
    let mut writer = arrow::json::LineDelimitedWriter::new(&mut out);
    for batch in batches {
        writer.write(batch).unwrap();
    }
    writer.finish().unwrap();
    out.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect()
}

/// `value` as arrow-json writes it back: no nulls in objects, numbers compared as numbers.
fn same(sent: &Value, back: Option<&Value>) -> bool {
    match (sent, back) {
        (Value::Null, None | Some(Value::Null)) => true,
        // serde_json's default number parsing (of what arrow-json wrote) is off in the last
        // digits now and then; arrow-json itself decodes exactly.
        (Value::Number(a), Some(Value::Number(b))) => match (a.as_i64(), b.as_i64()) {
            (Some(a), Some(b)) => a == b,
            _ => {
                let (a, b) = (a.as_f64().unwrap(), b.as_f64().unwrap());
                a == b || (a - b).abs() <= (a.abs() * 1e-14).max(1e-320)
            }
        },
        (Value::Array(a), Some(Value::Array(b))) => {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, Some(b)))
        }
        (Value::Object(a), Some(Value::Object(b))) => {
            a.iter().all(|(k, v)| same(v, b.get(k)))
                && b.keys().all(|k| a.get(k).is_some_and(|v| !v.is_null()))
        }
        (Value::Object(a), None) => a.values().all(Value::is_null),
        (a, Some(b)) => a == b,
        (_, None) => false,
    }
}

/// A record that fits the second schema, with every column sometimes missing or null.
fn typed_record() -> impl Strategy<Value = Value> {
    let opt = |v: BoxedStrategy<Value>| prop_oneof![1 => Just(None), 1 => Just(Some(Value::Null)), 4 => v.prop_map(Some)];
    let float = any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from);
    let point = (opt(float.clone().boxed()), opt(float.boxed())).prop_map(|(x, y)| {
        let mut m = Map::new();
        x.map(|x| m.insert("x".into(), x));
        y.map(|y| m.insert("y".into(), y));
        Value::Object(m)
    });
    let tags = prop::collection::vec(
        prop_oneof![Just(Value::Null), any::<String>().prop_map(Value::String)],
        0..4,
    )
    .prop_map(Value::Array);
    (
        opt(any::<i64>().prop_map(Value::from).boxed()),
        opt(any::<bool>().prop_map(Value::Bool).boxed()),
        opt(tags.boxed()),
        opt(point.boxed()),
    )
        .prop_map(|(id, ok, tags, point)| {
            let mut m = Map::new();
            for (k, v) in [("id", id), ("ok", ok), ("tags", tags), ("point", point)] {
                if let Some(v) = v {
                    m.insert(k.into(), v);
                }
            }
            Value::Object(m)
        })
}

/// What `prepare` relies on: one row of the batches for each entry of `rows`, and every
/// record either kept or refused, once.
fn check_lenient(lenient: &Lenient) -> Result<(), TestCaseError> {
    let decoded: usize = lenient.batches.iter().map(RecordBatch::num_rows).sum();
    prop_assert_eq!(decoded, lenient.rows.len());
    prop_assert_eq!(lenient.rows.len() + lenient.refused.len(), lenient.records.len());
    Ok(())
}

proptest! {
    #[test]
    fn prop_json_decoders_never_panic_and_errors_say_where(body in hostile_body()) {
        for format in [Format::Json, Format::Ndjson] {
            for schema in schemas() {
                if let Err(e) = decode(&body, format, schema.clone()) {
                    check_error(&body, &e)?;
                }
                match decode_lenient(&body, format, schema, &["name".into()]) {
                    Ok(lenient) => check_lenient(&lenient)?,
                    Err(e) => check_error(&body, &e)?,
                }
            }
            if let Err(e) = infer_schema(&body, format) {
                check_error(&body, &e)?;
            }
        }
    }

    #[test]
    fn prop_json_values_never_panic_and_errors_say_where(records in records(), layout in layout()) {
        let (body, format) = body(&records, layout);
        let expected = record_count(&records, layout);
        for schema in schemas() {
            if let Err(e) = decode(&body, format, schema.clone()) {
                check_error(&body, &e)?;
            }
            match decode_lenient(&body, format, schema, &["name".into()]) {
                Ok(lenient) => {
                    check_lenient(&lenient)?;
                    if let Some(expected) = expected {
                        prop_assert_eq!(lenient.rows.len() + lenient.refused.len(), expected);
                    }
                }
                Err(e) => check_error(&body, &e)?,
            }
        }
        if let Err(e) = infer_schema(&body, format) {
            check_error(&body, &e)?;
        }
    }

    #[test]
    fn prop_records_that_fit_come_back(
        records in prop::collection::vec(typed_record(), 1..8),
        layout in layout(),
    ) {
        let schema = schemas()[1].clone();
        let (body, format) = body(&records, layout);
        let batches = decode(&body, format, schema.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back = rows_of(&batches);
        prop_assert_eq!(back.len(), records.len());
        for (sent, back) in records.iter().zip(&back) {
            prop_assert!(same(sent, Some(back)), "sent {sent}, got {back}");
        }
        let lenient = decode_lenient(&body, format, schema, &[]).unwrap();
        prop_assert!(lenient.refused.is_empty(), "{:?}", lenient.refused);
        prop_assert_eq!(rows_of(&lenient.batches), back);
    }

    #[test]
    fn prop_inferred_schema_takes_its_body(records in records(), layout in layout()) {
        let (body, format) = body(&records, layout);
        if let Ok(schema) = infer_schema(&body, format) {
            let decoded = decode(&body, format, Arc::new(schema.clone()));
            prop_assert!(decoded.is_ok(), "{schema:?}: {}", decoded.unwrap_err());
            let rows: usize = decoded.unwrap().iter().map(|b| b.num_rows()).sum();
            if let Some(expected) = record_count(&records, layout) {
                prop_assert_eq!(rows, expected);
            }
        }
    }
}

/// CSV-ish text: cells, quotes, separators, line ends, unicode, and now and then a byte that
/// is not UTF-8.
fn csv_text() -> impl Strategy<Value = Vec<u8>> {
    const PIECES: &[&str] = &[
        "a",
        "b",
        "id",
        "name",
        "ok",
        "1",
        "-2.5",
        "x y",
        ",",
        ",",
        "\"",
        "\"\"",
        "\n",
        "\n",
        "\r\n",
        "\r",
        " ",
        "é",
        "true",
        "2026-11-22",
        "\"q,\nr\"",
    ];
    let text = prop::collection::vec(prop::sample::select(PIECES), 0..60)
        .prop_map(|pieces| pieces.concat().into_bytes());
    prop_oneof![
        4 => text.clone(),
        1 => (text, any::<prop::sample::Index>(), 0x80u8..=0xff).prop_map(|(mut body, at, byte)| {
            let i = at.index(body.len() + 1);
            body.insert(i, byte);
            body
        }),
    ]
}

/// The table CSV bodies are decoded against.
fn csv_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("name", DataType::Utf8, true),
        Field::new("ok", DataType::Boolean, true),
    ]))
}

/// A CSV cell as a spreadsheet writes it: quoted when it holds a separator, quote or line end.
fn cell(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

/// A row of the CSV table: id, name (any text, line breaks too), ok.
fn csv_row() -> impl Strategy<Value = (i64, String, Option<bool>)> {
    (any::<i64>(), "[^\u{0}]{1,12}", proptest::option::of(any::<bool>()))
}

proptest! {
    #[test]
    fn prop_csv_decoders_never_panic_and_errors_name_the_line(body in csv_text()) {
        let lines = body.iter().filter(|b| **b == b'\n').count() + 1;
        let results = [
            csv::decode_text(&body).err(),
            csv::decode_strict(&body, &csv_schema()).err(),
            infer_schema(&body, Format::Csv).err(),
            decode(&body, Format::Csv, csv_schema()).err(),
        ];
        for e in results.into_iter().flatten() {
            let line = e.line.ok_or_else(|| TestCaseError::fail(format!("no line in: {e}")))?;
            prop_assert!((1..=lines).contains(&line), "line {line} of {lines}: {e}");
        }
    }

    #[test]
    fn prop_csv_rows_come_back_and_bad_cells_say_where(
        rows in prop::collection::vec((csv_row(), 0usize..3), 1..12),
        crlf in any::<bool>(),
        bad in proptest::option::of((any::<prop::sample::Index>(), any::<bool>())),
    ) {
        let end = if crlf { "\r\n" } else { "\n" };
        let mut body = format!("id,name,ok{end}");
        let mut line = 2;
        let mut lines = Vec::new();
        let bad_at = bad.map(|(at, in_id)| (at.index(rows.len()), in_id));
        for (i, ((id, name, ok), blank)) in rows.iter().enumerate() {
            body.push_str(&end.repeat(*blank));
            line += blank;
            lines.push(line);
            let id = match bad_at {
                Some((row, true)) if row == i => "1x".to_string(),
                _ => id.to_string(),
            };
            let ok = match (bad_at, ok) {
                (Some((row, false)), _) if row == i => "maybe".to_string(),
                (_, Some(ok)) => ok.to_string(),
                (_, None) => String::new(),
            };
            let row = format!("{id},{},{ok}{end}", cell(name));
            line += row.matches('\n').count();
            body.push_str(&row);
        }
        match (csv::decode_strict(body.as_bytes(), &csv_schema()), bad_at) {
            (Ok(batches), None) => {
                let back = rows_of(&batches);
                prop_assert_eq!(back.len(), rows.len());
                for (((id, name, ok), _), back) in rows.iter().zip(&back) {
                    prop_assert_eq!(back["id"].as_i64(), Some(*id));
                    prop_assert_eq!(back["name"].as_str(), Some(name.as_str()));
                    prop_assert_eq!(back.get("ok").and_then(Value::as_bool), *ok);
                }
            }
            (Err(e), Some((row, in_id))) => {
                prop_assert_eq!(e.line, Some(lines[row]), "{}", e);
                let (column, value) = if in_id { ("id", "\"1x\"") } else { ("ok", "\"maybe\"") };
                let text = e.to_string();
                prop_assert!(text.contains(&format!("column '{column}'")), "{}", text);
                prop_assert!(text.contains(value), "{}", text);
            }
            (result, bad) => prop_assert!(false, "{result:?} with a bad cell at {bad:?}\n{body}"),
        }
    }
}
