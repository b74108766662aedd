//! The live files of one version of a Delta table, with the statistics the Delta log keeps for
//! each (rows, and per column min, max and null count), in the shapes DataFusion plans with:
//! a [`PartitionedFile`] per file carrying its [`Statistics`], the table's merged statistics,
//! and the same figures as columns for [`PruningPredicate`]s.
//!
//! Built once per table version (see [`super::FilesCache`]) from deltalake's snapshot; no data
//! file is opened.
//!
//! [`PruningPredicate`]: datafusion::physical_optimizer::pruning::PruningPredicate

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, PrimitiveArray, UInt64Array};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, FieldRef, Schema, SchemaRef, TimeUnit,
    TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
};
use chrono::{TimeZone, Utc};
use datafusion::common::stats::Precision;
use datafusion::common::{Column, ColumnStatistics, ScalarValue, Statistics};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_optimizer::pruning::PruningStatistics;
use object_store::path::Path;
use object_store::ObjectMeta;
use tarn_lake::LakeTable;
use url::Url;

/// Why a table is read through deltalake's own provider rather than Tarn's scan: a feature of
/// the table the scan does not implement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported(pub String);

/// The files of one table version and their statistics.
#[derive(Debug)]
pub(crate) struct TableFiles {
    /// The schema queries see, in the Delta schema's column order (strings and binaries as
    /// view types when the session asks for them, as DataFusion's own Parquet tables do).
    pub schema: SchemaRef,
    /// What the Parquet scan reads: the data columns, then the partition columns.
    pub scan_schema: SchemaRef,
    /// The data columns (in the files).
    pub file_schema: SchemaRef,
    /// The partition columns (in the paths), in the table's partition order.
    pub partition_fields: Vec<FieldRef>,
    /// For each column of `schema`, its index in `scan_schema`.
    pub to_scan: Vec<usize>,
    /// The files, each with its statistics over `scan_schema`.
    pub files: Vec<PartitionedFile>,
    /// The table's statistics over `scan_schema`: the files' merged.
    pub statistics: Statistics,
    /// The index in `scan_schema` of the table's single-column unique key.
    unique: Option<usize>,
    /// Per column of `scan_schema`: every file's min, max and null count, for pruning.
    pruning: Vec<ColumnPruning>,
    /// Every file's row count (null where the log does not say).
    rows: UInt64Array,
    /// Bytes this index holds, roughly (for the cache's bound).
    pub approx_bytes: usize,
}

/// One column's statistics over every file, as arrays (one entry per file).
#[derive(Debug, Default)]
struct ColumnPruning {
    min: Option<ArrayRef>,
    max: Option<ArrayRef>,
    nulls: Option<ArrayRef>,
}

impl TableFiles {
    /// Reads the file list and statistics of `table`'s loaded version, or says why Tarn's
    /// scan cannot read this table.
    ///
    /// `view_types`: strings and binaries are read as `Utf8View` / `BinaryView`
    /// (`datafusion.execution.parquet.schema_force_view_types`). `unique_column`: a column
    /// declared as the table's unique key, which has as many distinct values as rows.
    pub fn build(
        table: &LakeTable,
        view_types: bool,
        unique_column: Option<&str>,
    ) -> std::result::Result<Result<TableFiles>, Unsupported> {
        let state = match table.delta().snapshot() {
            Ok(state) => state,
            Err(e) => return Ok(Err(DataFusionError::External(Box::new(e)))),
        };
        if let Some(reason) = unsupported_protocol(state) {
            return Err(reason);
        }
        let log = state.log_data();
        let views: Vec<_> = log.iter().collect();
        if views.iter().any(|f| f.deletion_vector_descriptor().is_some()) {
            return Err(Unsupported("some of its files have deletion vectors".into()));
        }
        if let Some(f) = views.iter().find(|f| f.path().contains("://")) {
            return Err(Unsupported(format!(
                "its log names a file by an absolute URL ({})",
                f.path()
            )));
        }
        Ok(build(table, state, &log, &views, view_types, unique_column))
    }

    /// Every file's row count, where known.
    pub fn row_counts(&self) -> &UInt64Array {
        &self.rows
    }

    /// The statistics of the files at `selected` together.
    pub fn statistics_of(&self, selected: &[usize]) -> Result<Statistics> {
        if selected.len() == self.files.len() {
            return Ok(self.statistics.clone());
        }
        merged_statistics(selected.iter().map(|&i| &self.files[i]), &self.scan_schema, self.unique)
    }
}

/// The reader features this scan reads correctly (the others make it step aside).
/// `deletionVectors` and `columnMapping` are checked on their own: the first per file, the
/// second by the table's mapping mode.
const READER_FEATURES_READ: [&str; 6] = [
    "timestampNtz",
    "v2Checkpoint",
    "vacuumProtocolCheck",
    "checkpointProtection",
    "deletionVectors",
    "columnMapping",
];

fn unsupported_protocol(state: &deltalake::table::state::DeltaTableState) -> Option<Unsupported> {
    let mapping = state.metadata().configuration().get("delta.columnMapping.mode");
    if let Some(mode) = mapping.filter(|m| !m.eq_ignore_ascii_case("none")) {
        return Some(Unsupported(format!("it uses column mapping (mode '{mode}')")));
    }
    let protocol = serde_json::to_value(state.protocol()).ok()?;
    let features = protocol.get("readerFeatures").and_then(|f| f.as_array())?;
    features
        .iter()
        .find(|f| !f.as_str().is_some_and(|f| READER_FEATURES_READ.contains(&f)))
        .map(|f| Unsupported(format!("it has the reader feature {f}")))
}

fn build(
    table: &LakeTable,
    state: &deltalake::table::state::DeltaTableState,
    log: &deltalake::kernel::LogDataHandler<'_>,
    views: &[deltalake::kernel::LogicalFileView],
    view_types: bool,
    unique_column: Option<&str>,
) -> Result<TableFiles> {
    let delta_schema = state.snapshot().arrow_schema();
    let partition_columns = state.metadata().partition_columns();
    let schema = Arc::new(Schema::new_with_metadata(
        delta_schema.fields().iter().map(|f| map_view_types(f, view_types)).collect::<Vec<_>>(),
        delta_schema.metadata().clone(),
    ));
    let data_fields: Vec<FieldRef> =
        schema.fields().iter().filter(|f| !partition_columns.contains(f.name())).cloned().collect();
    let partition_fields: Vec<FieldRef> = partition_columns
        .iter()
        .map(|name| Ok(Arc::new(schema.field_with_name(name)?.clone())))
        .collect::<Result<_>>()?;
    let file_schema = Arc::new(Schema::new(data_fields.clone()));
    let scan_fields: Vec<FieldRef> =
        data_fields.iter().chain(partition_fields.iter()).cloned().collect();
    let scan_schema = Arc::new(Schema::new(scan_fields.clone()));
    let to_scan = schema
        .fields()
        .iter()
        .map(|f| scan_schema.index_of(f.name()))
        .collect::<std::result::Result<Vec<_>, _>>()?;

    let n = views.len();
    let rows: UInt64Array = match log.row_counts().filter(|rows| rows.len() == n) {
        Some(rows) => {
            cast(&rows, &DataType::UInt64)?.as_any().downcast_ref::<UInt64Array>().cloned()
        }
        None => None,
    }
    .unwrap_or_else(|| views.iter().map(|f| f.num_records().map(|r| r as u64)).collect());
    let rows_of = |i: usize| -> Precision<usize> {
        match rows.is_valid(i) {
            true => Precision::Exact(rows.value(i) as usize),
            false => Precision::Absent,
        }
    };

    // The data columns' statistics from the log, as arrays over the files.
    let mut pruning: Vec<ColumnPruning> = Vec::with_capacity(scan_fields.len());
    for field in &data_fields {
        pruning.push(column_pruning(log, field, n));
    }
    // The partition columns' values, typed.
    let mut partition_values: Vec<Vec<ScalarValue>> = vec![Vec::new(); n];
    let mut raw_values: Vec<_> = match partition_fields.is_empty() {
        true => Vec::new(),
        false => views.iter().map(|view| view.partition_values_map()).collect(),
    };
    for field in &partition_fields {
        let mut values = Vec::with_capacity(n);
        for (i, raw) in raw_values.iter_mut().enumerate() {
            let raw = raw.remove(field.name()).flatten();
            let value = match raw {
                Some(text) => partition_value(&text, field.data_type())?,
                None => ScalarValue::try_from(field.data_type())?,
            };
            partition_values[i].push(value.clone());
            values.push(value);
        }
        let array = ScalarValue::iter_to_array(values)?;
        let nulls: Vec<Option<u64>> = (0..n)
            .map(|i| match rows_of(i) {
                Precision::Exact(r) => Some(if array.is_null(i) { r as u64 } else { 0 }),
                _ => None,
            })
            .collect();
        pruning.push(ColumnPruning {
            min: Some(array.clone()),
            max: Some(array),
            nulls: Some(Arc::new(UInt64Array::from(nulls))),
        });
    }

    let table_url = table.delta().table_url().clone();
    let base = Path::from_url_path(table_url.path())?;
    let mut files = Vec::with_capacity(n);
    let mut approx_bytes = 0;
    for (i, view) in views.iter().enumerate() {
        let relative = view.object_store_path();
        let location = Path::from_iter(base.parts().chain(relative.parts()));
        approx_bytes += 256 + location.as_ref().len();
        let num_rows = rows_of(i);
        let column_statistics = scan_fields
            .iter()
            .enumerate()
            .map(|(c, field)| {
                let stats = &pruning[c];
                // Partition values are the values themselves.
                let is_partition = c >= data_fields.len();
                let exact = is_partition || exact_bounds(field.data_type());
                let bound = |array: &Option<ArrayRef>| match array {
                    Some(a) if a.is_valid(i) => match ScalarValue::try_from_array(a, i) {
                        Ok(v) if exact => Precision::Exact(v),
                        Ok(v) => Precision::Inexact(v),
                        Err(_) => Precision::Absent,
                    },
                    _ => Precision::Absent,
                };
                let null_count = match &stats.nulls {
                    Some(a) if a.is_valid(i) => a
                        .as_any()
                        .downcast_ref::<UInt64Array>()
                        .map(|a| Precision::Exact(a.value(i) as usize))
                        .unwrap_or(Precision::Absent),
                    _ => Precision::Absent,
                };
                let distinct_count = if is_partition {
                    Precision::Exact(1)
                } else if Some(field.name().as_str()) == unique_column {
                    num_rows.to_inexact()
                } else {
                    Precision::Absent
                };
                approx_bytes += 96;
                ColumnStatistics {
                    null_count,
                    min_value: bound(&stats.min),
                    max_value: bound(&stats.max),
                    distinct_count,
                    sum_value: Precision::Absent,
                    byte_size: Precision::Absent,
                }
            })
            .collect();
        let meta = ObjectMeta {
            location,
            last_modified: Utc
                .timestamp_millis_opt(view.modification_time())
                .single()
                .unwrap_or_default(),
            size: view.size().max(0) as u64,
            e_tag: None,
            version: None,
        };
        let mut file = PartitionedFile::new_from_meta(meta);
        file.partition_values = std::mem::take(&mut partition_values[i]);
        file.statistics = Some(Arc::new(Statistics {
            num_rows,
            total_byte_size: Precision::Inexact(view.size().max(0) as usize),
            column_statistics,
        }));
        files.push(file);
    }
    let unique = unique_column.and_then(|c| scan_schema.index_of(c).ok());
    let statistics = merged_statistics(&files, &scan_schema, unique)?;
    for column in &pruning {
        for array in [&column.min, &column.max, &column.nulls].into_iter().flatten() {
            approx_bytes += array.get_array_memory_size();
        }
    }
    Ok(TableFiles {
        schema,
        scan_schema,
        file_schema,
        partition_fields,
        to_scan,
        files,
        statistics,
        unique,
        pruning,
        rows,
        approx_bytes,
    })
}

/// The statistics of `files` together; the unique key has as many distinct values as rows.
fn merged_statistics<'a>(
    files: impl IntoIterator<Item = &'a PartitionedFile>,
    scan_schema: &Schema,
    unique: Option<usize>,
) -> Result<Statistics> {
    let mut files = files.into_iter().peekable();
    if files.peek().is_none() {
        let mut statistics = Statistics::new_unknown(scan_schema);
        statistics.num_rows = Precision::Exact(0);
        statistics.total_byte_size = Precision::Exact(0);
        return Ok(statistics);
    }
    let mut statistics =
        Statistics::try_merge_iter(files.filter_map(|f| f.statistics.as_deref()), scan_schema)?;
    if let Some(unique) = unique {
        statistics.column_statistics[unique].distinct_count = statistics.num_rows.to_inexact();
    }
    Ok(statistics)
}

/// `field` with strings and binaries as view types, when asked (nested fields too).
fn map_view_types(field: &FieldRef, view_types: bool) -> FieldRef {
    if !view_types {
        return field.clone();
    }
    let data_type = match field.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8View,
        DataType::Binary | DataType::LargeBinary => DataType::BinaryView,
        DataType::Struct(fields) => {
            DataType::Struct(fields.iter().map(|f| map_view_types(f, true)).collect())
        }
        DataType::List(inner) => DataType::List(map_view_types(inner, true)),
        DataType::LargeList(inner) => DataType::LargeList(map_view_types(inner, true)),
        _ => return field.clone(),
    };
    Arc::new(Field::clone(field).with_data_type(data_type))
}

/// Whether the log's min and max of a column of this type are the column's true min and max.
/// Strings may be truncated by the writer, timestamps are kept to the millisecond, floats
/// leave NaN out: for those they are bounds only (good for pruning, not for answering
/// `min()` / `max()` without reading the data).
fn exact_bounds(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Date32
            | DataType::Date64
            | DataType::Boolean
            | DataType::Decimal128(_, _)
            | DataType::Decimal256(_, _)
    )
}

/// The log's min, max and null count of a data column over every file, as arrays of the
/// column's type (absent for nested types, which are not pruned on).
fn column_pruning(
    log: &deltalake::kernel::LogDataHandler<'_>,
    field: &FieldRef,
    n: usize,
) -> ColumnPruning {
    if field.data_type().is_nested() {
        return ColumnPruning::default();
    }
    let column = Column::new_unqualified(field.name());
    let typed = |array: Option<ArrayRef>| -> Option<ArrayRef> {
        let array = array.filter(|a| a.len() == n)?;
        if array.data_type() == field.data_type() {
            return Some(array);
        }
        cast(&array, field.data_type()).ok()
    };
    let (min, max) = match field.data_type() {
        // Timestamps are kept to the millisecond in the log (and in checkpoints): widen the
        // bounds to whole milliseconds so that they stay bounds.
        DataType::Timestamp(unit, _) => (
            typed(log.min_values(&column)).map(|a| widen_timestamps(&a, *unit, false)),
            typed(log.max_values(&column)).map(|a| widen_timestamps(&a, *unit, true)),
        ),
        _ => (typed(log.min_values(&column)), typed(log.max_values(&column))),
    };
    let nulls = log
        .null_counts(&column)
        .filter(|a| a.len() == n)
        .and_then(|a| cast(&a, &DataType::UInt64).ok());
    ColumnPruning { min, max, nulls }
}

/// Timestamps rounded down to the millisecond, or (`up`) to the last instant of their
/// millisecond.
fn widen_timestamps(array: &ArrayRef, unit: TimeUnit, up: bool) -> ArrayRef {
    fn widen<T: ArrowPrimitiveType<Native = i64>>(
        array: &ArrayRef,
        per_ms: i64,
        up: bool,
    ) -> ArrayRef {
        let Some(values) = array.as_any().downcast_ref::<PrimitiveArray<T>>() else {
            return array.clone();
        };
        let widened: PrimitiveArray<T> = values.unary(|v| {
            let floor = v - v.rem_euclid(per_ms);
            if up {
                floor.saturating_add(per_ms - 1)
            } else {
                floor
            }
        });
        let widened = match array.data_type() {
            DataType::Timestamp(_, tz) => {
                widened.with_data_type(DataType::Timestamp(unit_of::<T>(), tz.clone()))
            }
            _ => widened,
        };
        Arc::new(widened)
    }
    fn unit_of<T: ArrowPrimitiveType>() -> TimeUnit {
        match T::DATA_TYPE {
            DataType::Timestamp(unit, _) => unit,
            _ => TimeUnit::Microsecond,
        }
    }
    match unit {
        TimeUnit::Microsecond => widen::<TimestampMicrosecondType>(array, 1_000, up),
        TimeUnit::Nanosecond => widen::<TimestampNanosecondType>(array, 1_000_000, up),
        TimeUnit::Millisecond => widen::<TimestampMillisecondType>(array, 1, up),
        TimeUnit::Second => array.clone(),
    }
}

/// A partition value from the log (its text form) as a value of the column's type.
fn partition_value(text: &str, data_type: &DataType) -> Result<ScalarValue> {
    let value = match data_type {
        DataType::Utf8View => ScalarValue::Utf8View(Some(text.to_string())),
        DataType::Utf8 => ScalarValue::Utf8(Some(text.to_string())),
        DataType::LargeUtf8 => ScalarValue::LargeUtf8(Some(text.to_string())),
        // Delta writes partition timestamps in UTC, without a zone ("2024-01-02 03:04:05").
        DataType::Timestamp(_, Some(_)) if !text.ends_with('Z') && !text.contains('+') => {
            ScalarValue::try_from_string(format!("{text}Z"), data_type)?
        }
        _ => ScalarValue::try_from_string(text.to_string(), data_type)?,
    };
    Ok(value)
}

impl PruningStatistics for TableFiles {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.pruning.get(self.scan_schema.index_of(&column.name).ok()?)?.min.clone()
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.pruning.get(self.scan_schema.index_of(&column.name).ok()?)?.max.clone()
    }

    fn num_containers(&self) -> usize {
        self.files.len()
    }

    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        self.pruning.get(self.scan_schema.index_of(&column.name).ok()?)?.nulls.clone()
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(self.rows.clone()))
    }

    fn contained(&self, _column: &Column, _values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// The URL of the object store a table's files are in (scheme and bucket), as DataFusion
/// registers stores.
pub(crate) fn store_url(table_url: &Url) -> String {
    table_url[..url::Position::BeforePath].to_string()
}

#[cfg(test)]
mod tests {
    use arrow::array::TimestampMicrosecondArray;

    use super::*;

    #[test]
    fn timestamp_bounds_widen_to_whole_milliseconds() {
        let values: ArrayRef = Arc::new(
            TimestampMicrosecondArray::from(vec![Some(1_234_567), Some(-1), None])
                .with_timezone("UTC"),
        );
        let down = widen_timestamps(&values, TimeUnit::Microsecond, false);
        let up = widen_timestamps(&values, TimeUnit::Microsecond, true);
        let down = down.as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        let up = up.as_any().downcast_ref::<TimestampMicrosecondArray>().unwrap();
        assert_eq!((down.value(0), up.value(0)), (1_234_000, 1_234_999));
        assert_eq!((down.value(1), up.value(1)), (-1_000, -1));
        assert!(down.is_null(2) && up.is_null(2));
        assert_eq!(down.data_type(), values.data_type(), "the time zone is kept");
    }

    #[test]
    fn partition_values_are_typed_from_the_logs_text() {
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(
            partition_value("2024-01-02 03:04:05", &utc).unwrap(),
            ScalarValue::TimestampMicrosecond(Some(1_704_164_645_000_000), Some("UTC".into()))
        );
        assert_eq!(
            partition_value("2024-01-02", &DataType::Date32).unwrap(),
            ScalarValue::Date32(Some(19_724))
        );
        assert_eq!(
            partition_value("b", &DataType::Utf8View).unwrap(),
            ScalarValue::Utf8View(Some("b".into()))
        );
        assert!(partition_value("x", &DataType::Int64).is_err());
    }

    #[test]
    fn only_bounds_the_log_keeps_exactly_are_exact() {
        assert!(exact_bounds(&DataType::Int64));
        assert!(exact_bounds(&DataType::Date32));
        assert!(exact_bounds(&DataType::Decimal128(15, 2)));
        assert!(!exact_bounds(&DataType::Utf8));
        assert!(!exact_bounds(&DataType::Float64));
        assert!(!exact_bounds(&DataType::Timestamp(TimeUnit::Microsecond, None)));
    }
}
