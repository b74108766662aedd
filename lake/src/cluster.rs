//! Clustering: the rows of a data file sorted by the table's `cluster_by` columns, so that the
//! file's (and each row group's) min/max statistics of those columns cover narrow ranges and
//! filters on them skip data.

use arrow::array::RecordBatch;
use arrow::compute::{
    concat_batches, lexsort_to_indices, take_record_batch, SortColumn, SortOptions,
};

use crate::Result;

/// The rows of `batches` as one batch sorted by `columns` (in that order, ascending, nulls
/// last). Columns the batches do not have are left out of the order; with none left, or no
/// rows, the batches are returned as they are.
pub fn sort_rows(batches: Vec<RecordBatch>, columns: &[String]) -> Result<Vec<RecordBatch>> {
    let Some(first) = batches.first() else { return Ok(batches) };
    let schema = first.schema();
    let positions: Vec<usize> = columns.iter().filter_map(|c| schema.index_of(c).ok()).collect();
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if positions.is_empty() || rows < 2 {
        return Ok(batches);
    }
    let all = concat_batches(&schema, &batches)?;
    drop(batches);
    let options = SortOptions { descending: false, nulls_first: false };
    let keys: Vec<SortColumn> = positions
        .iter()
        .map(|&i| SortColumn { values: all.column(i).clone(), options: Some(options) })
        .collect();
    let order = lexsort_to_indices(&keys, None)?;
    Ok(vec![take_record_batch(&all, &order)?])
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(days: &[Option<&str>], ids: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("day", DataType::Utf8, true),
            Field::new("id", DataType::Int64, false),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(days.to_vec())),
                Arc::new(Int64Array::from(ids.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn rows_are_sorted_across_batches_by_the_columns_in_order_nulls_last() {
        let batches = vec![
            batch(&[Some("b"), None, Some("a")], &[3, 9, 2]),
            batch(&[Some("a"), Some("b")], &[1, 0]),
        ];
        let sorted = sort_rows(batches, &["day".into(), "id".into(), "missing".into()]).unwrap();
        assert_eq!(sorted.len(), 1);
        let ids = sorted[0].column(1).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(ids.values().to_vec(), vec![1, 2, 0, 3, 9]);
        let unsorted = vec![batch(&[Some("b")], &[1]), batch(&[Some("a")], &[2])];
        let kept = sort_rows(unsorted, &["nope".into()]).unwrap();
        assert_eq!(kept.len(), 2, "no known column: left as it is");
    }
}
