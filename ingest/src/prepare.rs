//! From a body (or a decoded chunk of a file) to what will be appended: decode, coerce to the
//! declared types, required values, derived columns, rules. Pure: no storage, no state; the
//! same for requests ([`crate::Ingestor`]) and file loads ([`crate::Loader`]).

use arrow::array::RecordBatch;
use tarn_catalog::ColumnType;

use crate::contract::{self, Rejection};
use crate::plan::TablePlan;
use crate::{decode, Format, Result};

/// What a request (or a chunk of a file) will append, before it is logged or committed.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Rows for the table, in its schema.
    pub valid: Vec<RecordBatch>,
    /// Rows for `<table>_rejected`.
    pub rejected: Vec<Rejection>,
}

impl Prepared {
    /// Adds `other`'s rows after these.
    pub fn extend(&mut self, other: Prepared) {
        self.valid.extend(other.valid);
        self.rejected.extend(other.rejected);
    }
}

/// Decodes and checks a body: the rows to append and the rows to reject.
pub fn prepare(plan: &TablePlan, body: &[u8], format: Format) -> Result<Prepared> {
    let Some(contract) = &plan.contract else {
        // An inferred schema: all or nothing.
        let valid = decode(body, format, plan.schema.clone())?;
        return Ok(Prepared { valid, rejected: Vec::new() });
    };
    let mut valid = Vec::new();
    let mut rejected: Vec<(usize, Rejection)> = Vec::new();
    match format {
        Format::Csv => {
            let (header, batches) = crate::csv::decode_text(body)?;
            crate::csv::check_header(&header, &contract.declared_schema)?;
            let mut base = 0;
            for batch in &batches {
                let checked =
                    contract::check(contract, batch, true, &|row| crate::csv::row_json(batch, row));
                valid.extend(checked.batch);
                rejected.extend(checked.rejected.into_iter().map(|(row, r)| (base + row, r)));
                base += batch.num_rows();
            }
        }
        Format::Json | Format::Ndjson => {
            let lenient = crate::decode::decode_lenient(
                body,
                format,
                contract.input_schema.clone(),
                &plan.json_columns,
            )?;
            for (index, rule, field, reason) in &lenient.refused {
                rejected.push((
                    *index,
                    Rejection {
                        record: lenient.text(*index),
                        rule: rule.to_string(),
                        field: field.clone(),
                        reason: reason.clone(),
                    },
                ));
            }
            let mut base = 0;
            for batch in &lenient.batches {
                let rows = &lenient.rows[base..base + batch.num_rows()];
                let checked =
                    contract::check(contract, batch, false, &|row| lenient.text(rows[row]));
                valid.extend(checked.batch);
                rejected.extend(checked.rejected.into_iter().map(|(row, r)| (rows[row], r)));
                base += batch.num_rows();
            }
        }
    }
    rejected.sort_by_key(|(index, _)| *index);
    Ok(Prepared { valid, rejected: rejected.into_iter().map(|(_, r)| r).collect() })
}

/// Checks a decoded batch (a CSV or Parquet chunk): for declared tables row by row, for
/// others all or nothing. `text(row)` gives a row's record for the rejected table.
pub fn prepare_batch(
    plan: &TablePlan,
    batch: &RecordBatch,
    empty_is_null: bool,
    text: &dyn Fn(usize) -> String,
) -> Result<Prepared> {
    let Some(contract) = &plan.contract else {
        let mut columns = Vec::with_capacity(plan.schema.fields().len());
        for field in plan.schema.fields() {
            let Some(column) = batch.column_by_name(field.name()) else {
                columns.push(arrow::array::new_null_array(field.data_type(), batch.num_rows()));
                continue;
            };
            let ty = ColumnType::from_arrow(field.data_type());
            let (typed, bad) = match ty {
                Some(ty) => crate::coerce::coerce(column, ty, empty_is_null),
                None => match arrow::compute::cast(column, field.data_type()) {
                    Ok(cast) => (cast, Vec::new()),
                    Err(e) => {
                        return Err(crate::DecodeError {
                            line: None,
                            column: None,
                            message: format!("column '{}': {e}", field.name()),
                        }
                        .into())
                    }
                },
            };
            if let Some(bad) = bad.first() {
                return Err(crate::DecodeError {
                    line: Some(bad.row + 1),
                    column: None,
                    message: format!("column '{}': {}", field.name(), bad.reason),
                }
                .into());
            }
            columns.push(typed);
        }
        let valid =
            RecordBatch::try_new(plan.schema.clone(), columns).map_err(tarn_lake::Error::from)?;
        return Ok(Prepared { valid: vec![valid], rejected: Vec::new() });
    };
    if let Some(unknown) = batch
        .schema()
        .fields()
        .iter()
        .find(|f| contract.declared_schema.field_with_name(f.name()).is_err())
    {
        return Err(crate::DecodeError {
            line: None,
            column: None,
            message: format!("column '{}' is not a column of the table", unknown.name()),
        }
        .into());
    }
    let checked = contract::check(contract, batch, empty_is_null, text);
    Ok(Prepared {
        valid: checked.batch.into_iter().collect(),
        rejected: checked.rejected.into_iter().map(|(_, r)| r).collect(),
    })
}
