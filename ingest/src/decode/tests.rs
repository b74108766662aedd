//! Decoding examples, and the regression tests of what the property tests found.

use std::sync::Arc;

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::util::pretty::pretty_format_batches;

use super::*;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("price", DataType::Float64, true),
    ]))
}

fn table(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

#[test]
fn object_array_and_ndjson_decode_alike() {
    let one = decode(br#"{"id": 1, "name": "a", "price": 2.5}"#, Format::Json, schema()).unwrap();
    let array = decode(
        b"[\n {\"id\": 1, \"name\": \"a\", \"price\": 2.5},\n {\"id\": \"2\", \"name\": 7}\n]",
        Format::Json,
        schema(),
    )
    .unwrap();
    let ndjson = decode(
        b"{\"id\": 1, \"name\": \"a\", \"price\": 2.5}\r\n\n{\"id\": 2, \"name\": \"7\"}\n",
        Format::Ndjson,
        schema(),
    )
    .unwrap();
    assert_eq!(table(&one).lines().count(), 5);
    assert_eq!(table(&array), table(&ndjson));
    assert!(table(&array).contains("| 2  | 7    |       |"), "{}", table(&array));
}

#[test]
fn type_error_names_line_and_field() {
    let body = b"{\"id\": 1}\n{\"id\": 2}\n{\"id\": 3, \"price\": \"cheap\"}\n";
    let err = decode(body, Format::Ndjson, schema()).unwrap_err();
    assert_eq!(err.line, Some(3));
    let text = err.to_string();
    assert!(text.starts_with("line 3: "), "{text}");
    assert!(text.contains("price"), "{text}");
    assert!(text.contains("cheap"), "{text}");
}

#[test]
fn syntax_error_names_line_and_column() {
    let body = b"{\"id\": 1}\n{\"id\" 2}\n";
    let err = decode(body, Format::Ndjson, schema()).unwrap_err();
    assert_eq!((err.line, err.column), (Some(2), Some(7)), "{err}");
    assert!(err.to_string().contains("malformed JSON"), "{err}");

    let err = decode(b"[{\"id\": 1},\n {\"id\": 2]", Format::Json, schema()).unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
}

#[test]
fn array_element_error_names_its_line() {
    let body = b"[\n{\"id\": 1},\n{\"id\": 2},\n{\"id\": 3, \"price\": [1]}\n]";
    let err = decode(body, Format::Json, schema()).unwrap_err();
    assert_eq!(err.line, Some(4), "{err}");
}

#[test]
fn unknown_field_and_missing_required_are_errors() {
    let err = decode(b"{\"id\": 1, \"colour\": \"red\"}", Format::Json, schema()).unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
    let err = decode(b"{\"id\": 1}\n{\"name\": \"x\"}", Format::Ndjson, schema()).unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
}

#[test]
fn empty_bodies_are_refused() {
    for body in [&b""[..], b"  \n", b"[]"] {
        let err = decode(body, Format::Json, schema()).unwrap_err();
        assert!(err.to_string().contains("no records"), "{err}");
    }
}

#[test]
fn inference() {
    let body = b"{\"a\": 1, \"b\": 1.5, \"c\": \"x\", \"d\": null, \"e\": {\"f\": true}, \"g\": [1]}\n{\"a\": 2}";
    let schema = infer_schema(body, Format::Ndjson).unwrap();
    let types: Vec<String> =
        schema.fields().iter().map(|f| format!("{}:{}", f.name(), f.data_type())).collect();
    assert_eq!(types[0], "a:Int64");
    assert_eq!(types[1], "b:Float64");
    assert_eq!(types[2], "c:Utf8");
    assert_eq!(types[3], "d:Utf8");
    assert!(types[4].starts_with("e:Struct"), "{types:?}");
    assert!(types[5].starts_with("g:List"), "{types:?}");
    let err = infer_schema(b"{\"a\": 1}\n42\n", Format::Ndjson).unwrap_err();
    assert_eq!(err.to_string(), "line 2: expected a JSON object, got a number");
}

/// Runs `f` on a thread with the stack of a tokio worker (2 MiB), where the server decodes.
fn on_worker_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the decoder did not overflow the stack")
}

/// 200,000 `[` then 200,000 `]`: arrow-json printed the value it could not take into its
/// error message, recursing once per level, and overflowed the stack (the server aborted).
/// The same with objects under a column the table has.
#[test]
fn deep_nesting_is_refused_where_it_starts() {
    let arrays = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    let objects = format!("{}1{}", "{\"name\":".repeat(200_000), "}".repeat(200_000));
    for (body, column) in [(arrays, MAX_NESTING + 1), (objects, 8 * MAX_NESTING + 1)] {
        let errors = on_worker_stack(move || {
            let body = body.as_bytes();
            [
                decode(body, Format::Json, schema()).unwrap_err(),
                decode(body, Format::Ndjson, schema()).unwrap_err(),
                decode_lenient(body, Format::Json, schema(), &["name".into()]).unwrap_err(),
                infer_schema(body, Format::Json).unwrap_err(),
            ]
        });
        for err in errors {
            let expected = format!("line 1, column {column}: nested deeper than 64 levels");
            assert!(err.to_string().starts_with(&expected), "{err}");
        }
    }
}

/// `json` columns keep the value's text as sent: it went through serde_json's `Value`, whose
/// default number parsing is not exact (-1.7802483248678254e199 came back ...252e199).
#[test]
fn json_columns_keep_numbers_as_sent() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("doc", DataType::Utf8, true),
    ]));
    let body = b"{\"id\": 1, \"doc\": {\"x\": -1.7802483248678254e199, \"s\": \"a \\\" b\"}}\n{\"doc\": null}";
    let lenient = decode_lenient(body, Format::Ndjson, schema, &["doc".into()]).unwrap();
    let docs =
        lenient.batches[0].column(1).as_any().downcast_ref::<arrow::array::StringArray>().unwrap();
    assert_eq!(docs.value(0), r#"{"x":-1.7802483248678254e199,"s":"a \" b"}"#);
    assert!(docs.is_null(1));
}

/// Found by `prop_inferred_schema_takes_its_body`: a field that is an array in one record and a
/// scalar in another was inferred as a list; the table was created, then the very body that
/// made it was refused.
#[test]
fn inference_refuses_what_its_schema_cannot_decode() {
    let body = b"{\"point\": []}\n{\"point\": false}";
    let err = infer_schema(body, Format::Ndjson).unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.to_string().contains("point"), "{err}");
}

/// Found by probing a running server: records without fields (`{}`) and a CSV body without a
/// header made a new table with no columns, which Delta refuses (500); a CSV header could name
/// columns "" or "a b", which JSON inference refuses.
#[test]
fn inferred_tables_have_columns_other_engines_read() {
    for (body, format) in
        [(&b"{}"[..], Format::Json), (b"[{}, {}]", Format::Json), (b"", Format::Csv)]
    {
        let err = infer_schema(body, format).unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
    }
    for header in ["a b,c\n1,2\n", ",c\n1,2\n", "A,a\n1,2\n"] {
        let err = infer_schema(header.as_bytes(), Format::Csv).unwrap_err();
        assert_eq!(err.line, Some(1), "{err}");
    }
    let err = infer_schema(b"{\"id\": 1}\n{\"ID\": 2}", Format::Ndjson).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2: fields 'id' and 'ID' differ only in case; column names are compared without case"
    );
}

/// CSV quoting is a state machine in csv-core, not recursion: quotes by the hundred thousand,
/// unterminated or not, are a clean answer on a worker's stack.
#[test]
fn csv_quoting_does_not_recurse() {
    let bodies = [
        format!("a,b\n{}", "\"".repeat(400_001)),
        format!("a,b\n\"{}", "x\n,".repeat(200_000)),
        format!("a,b\n{}\n", "\"\"".repeat(200_000)),
    ];
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Utf8, true),
        Field::new("b", DataType::Int64, true),
    ]));
    let results = on_worker_stack(move || {
        bodies
            .iter()
            .map(|body| decode(body.as_bytes(), Format::Csv, schema.clone()))
            .collect::<Vec<_>>()
    });
    for result in results {
        if let Err(e) = result {
            assert!(e.line.is_some(), "{e}");
        }
    }
}

/// Found in review: a line of NDJSON holding two objects decoded to two rows, so the lenient
/// decoder's row-to-record index ran past its end and the request's task panicked.
#[test]
fn an_ndjson_line_holds_one_record() {
    let body = b"{\"id\": 1}\n{\"id\": 2} {\"id\": 3}\n{\"id\": 4}\n";
    let err = decode_lenient(body, Format::Ndjson, schema(), &[]).unwrap_err();
    assert_eq!(err.line, Some(2), "{err}");
    assert!(err.to_string().contains("trailing characters"), "{err}");
    // A JSON body may hold values one after another; each is one record.
    let lenient = decode_lenient(b"{\"id\": 1} {\"id\": 2}", Format::Json, schema(), &[]).unwrap();
    assert_eq!(lenient.rows, vec![0, 1]);
    assert_eq!(lenient.batches.iter().map(RecordBatch::num_rows).sum::<usize>(), 2);
}
