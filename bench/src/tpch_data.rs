//! TPC-H tables generated with `tpchgen-arrow`, as Tarn stores them (strings as plain `Utf8`).
//!
//! Shared by `tarn-bench tpch` and by the query crate's test that compares Tarn's Delta scan
//! with deltalake's provider (which includes this file by path), so it depends on nothing but
//! arrow, tpchgen and tpchgen-arrow.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;
use tpchgen::generators as tg;
use tpchgen_arrow as ta;

/// The 8 tables, smallest first.
pub const TABLES: [&str; 8] =
    ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"];

/// Batches of one table, as the generator makes them.
pub type Batches = Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>;

/// The Arrow schema and batch generator of one TPC-H table at `scale` (the whole table: part
/// 1 of 1), in batches of `batch_rows`.
pub fn generator(table: &str, scale: f64, batch_rows: usize) -> (SchemaRef, Batches) {
    macro_rules! arrow_generator {
        ($arrow:ty, $generator:ty) => {{
            let batches = <$arrow>::new(<$generator>::new(scale, 1, 1)).with_batch_size(batch_rows);
            (<$arrow>::schema_ref(), Box::new(batches) as Batches)
        }};
    }
    match table {
        "region" => arrow_generator!(ta::RegionArrow, tg::RegionGenerator),
        "nation" => arrow_generator!(ta::NationArrow, tg::NationGenerator),
        "supplier" => arrow_generator!(ta::SupplierArrow, tg::SupplierGenerator),
        "customer" => arrow_generator!(ta::CustomerArrow, tg::CustomerGenerator),
        "part" => arrow_generator!(ta::PartArrow, tg::PartGenerator),
        "partsupp" => arrow_generator!(ta::PartSuppArrow, tg::PartSuppGenerator),
        "orders" => arrow_generator!(ta::OrderArrow, tg::OrderGenerator),
        "lineitem" => arrow_generator!(ta::LineItemArrow, tg::LineItemGenerator),
        other => unreachable!("no TPC-H table {other}"),
    }
}

/// `schema` with `Utf8View` columns as `Utf8` (tpchgen-arrow makes strings `Utf8View`; the
/// tables store them as plain strings, the type Tarn's own writers give them).
pub fn plain_strings(schema: &Schema) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8View => f.as_ref().clone().with_data_type(DataType::Utf8),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// `batch` brought to `schema` (its `Utf8View` columns cast to `Utf8`).
pub fn cast_strings(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, ArrowError> {
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| arrow::compute::cast(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}
