//! Applying a table's contract to decoded rows: coercion, required values, derived columns,
//! rules. Rows that fail go to `<table>_rejected` with the reason; the rest are appended.
//!
//! The checks run in that order and a row is rejected for the first thing it fails, so its
//! reason names the real problem (a date that is not a date, rather than the rule about ages
//! that could not see it). Derived columns and rules are DataFusion physical expressions
//! evaluated on the whole batch; when an expression fails on the batch (a cast that cannot
//! succeed for one row), it is evaluated row by row to find the rows to reject.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::{cast, concat_batches, filter_record_batch};
use arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;
use tarn_catalog::spec::UTC;
use tarn_catalog::Contract;

use crate::coerce::coerce;

/// Why a row was rejected.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    /// The original record (JSON).
    pub record: String,
    /// What it broke: a rule's name, or `type`, `required`, `schema`, `derived`.
    pub rule: String,
    /// The column concerned, if one.
    pub field: Option<String>,
    /// For humans.
    pub reason: String,
}

impl Rejection {
    /// `field: reason`, or the reason alone: what an answer's `errors` list shows.
    pub fn summary(&self) -> String {
        match &self.field {
            Some(field) if !self.reason.contains(field.as_str()) => {
                format!("{field}: {}", self.reason)
            }
            _ => self.reason.clone(),
        }
    }
}

/// The outcome of [`check`].
#[derive(Debug)]
pub struct Checked {
    /// The rows that passed, in the table's schema (none: every row was rejected).
    pub batch: Option<RecordBatch>,
    /// For each row of `batch`, its row in the input.
    pub rows: Vec<usize>,
    /// The rows that failed, in input order.
    pub rejected: Vec<(usize, Rejection)>,
}

/// First failure per input row: (rule, field, reason).
type Reasons = Vec<Option<(String, Option<String>, String)>>;

/// Checks `input` (columns named like the declared ones, of any type; missing columns count
/// as empty) against `contract`. `text(row)` gives a row's original record for the rejected
/// table. With `empty_is_null`, empty text is a missing value (CSV cells, form fields).
pub fn check(
    contract: &Contract,
    input: &RecordBatch,
    empty_is_null: bool,
    text: &dyn Fn(usize) -> String,
) -> Checked {
    let n = input.num_rows();
    let mut reasons: Reasons = vec![None; n];
    let reject =
        |reasons: &mut Reasons, row: usize, rule: &str, field: Option<&str>, why: String| {
            reasons[row].get_or_insert((rule.to_string(), field.map(String::from), why));
        };

    // 1. Types.
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(contract.types.len());
    for (field, ty) in contract.declared_schema.fields().iter().zip(&contract.types) {
        let array = input
            .column_by_name(field.name())
            .cloned()
            .unwrap_or_else(|| arrow::array::new_null_array(field.data_type(), n));
        let (typed, bad) = coerce(&array, *ty, empty_is_null);
        for b in bad {
            reject(&mut reasons, b.row, "type", Some(field.name()), b.reason);
        }
        columns.push(typed);
    }
    // 2. Required values.
    for (i, field) in contract.table_schema.fields().iter().enumerate().take(columns.len()) {
        if !field.is_nullable() {
            for row in (0..n).filter(|&row| columns[i].is_null(row)) {
                let why = format!("a value for '{}' is required", field.name());
                reject(&mut reasons, row, "required", Some(field.name()), why);
            }
        }
    }
    let mut batch = RecordBatch::try_new(contract.declared_schema.clone(), columns)
        .expect("coerced columns have the declared types");
    let mut rows: Vec<usize> = (0..n).collect();
    keep_unrejected(&mut batch, &mut rows, &reasons);

    // 3. Derived columns, each over the columns before it.
    for derived in &contract.derived {
        let expr = match derived.expr.current() {
            Ok(expr) => expr,
            Err(e) => {
                for row in &rows {
                    let why = format!("cannot compute '{}': {e}", derived.name);
                    reject(&mut reasons, *row, "derived", Some(&derived.name), why);
                }
                keep_unrejected(&mut batch, &mut rows, &reasons);
                continue;
            }
        };
        let values = loop {
            match evaluate(&expr, &batch)
                .and_then(|v| cast(&v, &derived.data_type).map_err(|e| e.to_string()))
            {
                Ok(values) => break values,
                Err(_) if batch.num_rows() > 0 => {
                    for (i, row) in rows.iter().enumerate() {
                        if let Err(e) = evaluate(&expr, &batch.slice(i, 1)) {
                            let why = format!("cannot compute '{}': {e}", derived.name);
                            reject(&mut reasons, *row, "derived", Some(&derived.name), why);
                        }
                    }
                    let before = batch.num_rows();
                    keep_unrejected(&mut batch, &mut rows, &reasons);
                    if batch.num_rows() == before {
                        // Fails on the batch, never on one row: reject them all rather than
                        // loop; the reason says what DataFusion said.
                        let e = evaluate(&expr, &batch).err().unwrap_or_default();
                        for row in &rows {
                            let why = format!("cannot compute '{}': {e}", derived.name);
                            reject(&mut reasons, *row, "derived", Some(&derived.name), why);
                        }
                        keep_unrejected(&mut batch, &mut rows, &reasons);
                    }
                }
                Err(_) => break arrow::array::new_null_array(&derived.data_type, 0),
            }
        };
        let mut fields: Vec<Field> =
            batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(&derived.name, derived.data_type.clone(), true));
        let mut columns = batch.columns().to_vec();
        columns.push(values);
        batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
            .expect("derived values have the derived type");
    }

    // 4. Rules (SQL CHECK semantics: false rejects, null passes).
    for compiled in &contract.rules {
        let rule = &compiled.rule;
        let expr = compiled.expr.current();
        let verdicts = expr.as_ref().map_err(String::clone).and_then(|e| evaluate(e, &batch));
        for (i, row) in rows.iter().enumerate() {
            let failed = match &verdicts {
                Ok(array) => {
                    let b =
                        array.as_any().downcast_ref::<BooleanArray>().expect("rules are boolean");
                    b.is_valid(i) && !b.value(i)
                }
                Err(_) => matches!(
                    expr.as_ref()
                        .map_err(String::clone)
                        .and_then(|e| evaluate(e, &batch.slice(i, 1)))
                        .map(|a| {
                            let b = a
                                .as_any()
                                .downcast_ref::<BooleanArray>()
                                .map(|b| b.is_valid(0) && !b.value(0));
                            b.unwrap_or(true)
                        }),
                    Ok(true) | Err(_)
                ),
            };
            if failed {
                let why = rule.message.clone().unwrap_or_else(|| {
                    format!("rule '{}' does not hold: {}", rule.name, rule.check)
                });
                reject(&mut reasons, *row, &rule.name, None, why);
            }
        }
    }
    keep_unrejected(&mut batch, &mut rows, &reasons);

    let rejected = reasons
        .into_iter()
        .enumerate()
        .filter_map(|(row, reason)| {
            let (rule, field, reason) = reason?;
            Some((row, Rejection { record: text(row), rule, field, reason }))
        })
        .collect();
    let batch = (batch.num_rows() > 0).then(|| conform(batch, &contract.table_schema));
    Checked { batch, rows, rejected }
}

/// The checked batch with the table's schema (declared nullability, comments).
fn conform(batch: RecordBatch, schema: &SchemaRef) -> RecordBatch {
    RecordBatch::try_new(schema.clone(), batch.columns().to_vec())
        .expect("required columns were checked, types match the contract")
}

fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<ArrayRef, String> {
    expr.evaluate(batch)
        .and_then(|v| v.into_array(batch.num_rows()))
        .map_err(|e| e.strip_backtrace())
}

/// Drops the rows that have a reason from `batch` (and `rows`).
fn keep_unrejected(batch: &mut RecordBatch, rows: &mut Vec<usize>, reasons: &Reasons) {
    if rows.iter().all(|r| reasons[*r].is_none()) {
        return;
    }
    let keep: BooleanArray = rows.iter().map(|r| Some(reasons[*r].is_none())).collect();
    *batch = filter_record_batch(batch, &keep).expect("same length");
    rows.retain(|r| reasons[*r].is_none());
}

/// Rows of `<table>_rejected` for `rejections`.
pub fn rejected_batch(rejections: &[Rejection], source: &str, at_micros: i64) -> RecordBatch {
    let schema = tarn_catalog::companion::rejected_schema();
    let n = rejections.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rejections.iter().map(|r| r.record.as_str()))),
        Arc::new(StringArray::from_iter_values(rejections.iter().map(|r| r.rule.as_str()))),
        Arc::new(StringArray::from_iter(rejections.iter().map(|r| r.field.as_deref()))),
        Arc::new(StringArray::from_iter_values(rejections.iter().map(|r| r.reason.as_str()))),
        Arc::new(StringArray::from_iter_values(std::iter::repeat_n(source, n))),
        Arc::new(TimestampMicrosecondArray::from(vec![at_micros; n]).with_timezone(UTC)),
    ];
    RecordBatch::try_new(schema, columns).expect("rejected rows fit their schema")
}

/// The row of `<table>_raw` for one payload.
pub fn raw_batch(
    payload: Option<&str>,
    object: Option<&str>,
    content_type: Option<&str>,
    source: &str,
    at_micros: i64,
) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![payload])),
        Arc::new(StringArray::from(vec![object])),
        Arc::new(StringArray::from(vec![content_type])),
        Arc::new(StringArray::from(vec![source])),
        Arc::new(TimestampMicrosecondArray::from(vec![at_micros]).with_timezone(UTC)),
    ];
    RecordBatch::try_new(tarn_catalog::companion::raw_schema(), columns)
        .expect("raw rows fit their schema")
}

/// Concatenates batches of one schema (a no-op for one batch).
pub fn concat(schema: &SchemaRef, batches: &[RecordBatch]) -> RecordBatch {
    match batches {
        [one] => one.clone(),
        _ => concat_batches(schema, batches).expect("batches of one schema"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::util::pretty::pretty_format_batches;
    use serde_json::json;
    use tarn_catalog::TableSpec;

    fn contract() -> Contract {
        Contract::compile(
            &TableSpec::from_json(
                json!({
                    "columns": [
                        {"name": "name", "type": "string", "nullable": false},
                        {"name": "mobile_no", "type": "string"},
                        {"name": "date_of_birth", "type": "date"}
                    ],
                    "derived": [
                        {"name": "last_name", "expr": "split_part(name, ' ', 2)"},
                        {"name": "membership_id", "expr":
                         "concat(last_name, '_', left(encode(sha256(to_char(date_of_birth, '%Y%m%d')), 'hex'), 5))"}
                    ],
                    "rules": [
                        {"name": "mobile_8_digits", "check": "mobile_no ~ '^[0-9]{8}$'",
                         "message": "mobile number must be 8 digits"},
                        {"name": "adult", "check": "date_of_birth <= DATE '2004-01-01'"}
                    ]
                }),
                &[],
            )
            .unwrap(),
        )
        .unwrap()
    }

    fn text_batch(rows: &[[Option<&str>; 3]]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("name", arrow::datatypes::DataType::Utf8, true),
            Field::new("mobile_no", arrow::datatypes::DataType::Utf8, true),
            Field::new("date_of_birth", arrow::datatypes::DataType::Utf8, true),
        ]));
        let columns: Vec<ArrayRef> = (0..3)
            .map(|c| {
                Arc::new(StringArray::from(rows.iter().map(|r| r[c]).collect::<Vec<_>>()))
                    as ArrayRef
            })
            .collect();
        RecordBatch::try_new(schema, columns).unwrap()
    }

    #[test]
    fn good_rows_pass_bad_rows_say_why() {
        let input = text_batch(&[
            [Some("Ada Lovelace"), Some("12345678"), Some("1990-12-10")],
            [Some("Bob Young"), Some("1234"), Some("1995-01-01")],
            [Some("Cy Kid"), Some("87654321"), Some("2010-05-05")],
            [None, Some("11112222"), Some("1980-01-01")],
            [Some("Di Date"), Some("11112222"), Some("10/12/1990x")],
        ]);
        let checked = check(&contract(), &input, true, &|row| format!("record {row}"));
        let batch = checked.batch.unwrap();
        assert_eq!(checked.rows, vec![0]);
        let shown = pretty_format_batches(&[batch]).unwrap().to_string();
        assert!(
            shown.contains("| Ada Lovelace | 12345678  | 1990-12-10    | Lovelace  | Lovelace_"),
            "{shown}"
        );
        let reasons: Vec<(usize, &str, Option<&str>)> = checked
            .rejected
            .iter()
            .map(|(row, r)| (*row, r.rule.as_str(), r.field.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                (1, "mobile_8_digits", None),
                (2, "adult", None),
                (3, "required", Some("name")),
                (4, "type", Some("date_of_birth")),
            ]
        );
        assert_eq!(checked.rejected[0].1.reason, "mobile number must be 8 digits");
        assert_eq!(checked.rejected[0].1.record, "record 1");
        assert!(
            checked.rejected[3].1.summary().contains("is not a date"),
            "{:?}",
            checked.rejected[3]
        );
    }

    #[test]
    fn clock_functions_are_evaluated_at_ingest() {
        let contract = Contract::compile(
            &TableSpec::from_json(
                json!({
                    "columns": [{"name": "a", "type": "string"}],
                    "derived": [{"name": "received", "expr": "now()"}, {"name": "day", "expr": "current_date()"}]
                }),
                &[],
            )
            .unwrap(),
        )
        .unwrap();
        let schema =
            Arc::new(Schema::new(vec![Field::new("a", arrow::datatypes::DataType::Utf8, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["x"]))]).unwrap();
        let before = chrono::Utc::now().timestamp_micros();
        let checked = check(&contract, &batch, false, &|_| String::new());
        assert!(checked.rejected.is_empty(), "{:?}", checked.rejected);
        let batch = checked.batch.unwrap();
        let received =
            batch.column(1).as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap().value(0);
        assert!(received >= before && received <= chrono::Utc::now().timestamp_micros());
    }

    #[test]
    fn membership_id_is_last_name_and_birthday_hash() {
        // sha256("19901210") = 1218b…, computed with Python's hashlib.
        let expected = "Lovelace_1218b";
        let input = text_batch(&[[Some("Ada Lovelace"), Some("12345678"), Some("1990-12-10")]]);
        let checked = check(&contract(), &input, true, &|_| String::new());
        let batch = checked.batch.unwrap();
        let id = batch.column_by_name("membership_id").unwrap();
        let id = id.as_any().downcast_ref::<StringArray>().unwrap().value(0);
        assert_eq!(id, expected);
    }
}
