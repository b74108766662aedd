//! Filters made of several conditions (`a AND b AND c`), evaluated on fewer rows at each step
//! and without spreading the intermediate answers back over the whole batch.
//!
//! DataFusion evaluates `a AND b` as a binary expression: `a` over the batch, then, when `a`
//! keeps at most a fifth of the rows, `b` over those rows only, and the answers for those rows
//! are scattered back into a batch-long boolean array, row run by row run. In a chain of
//! conditions that is done once per `AND`, and when the kept rows are scattered (TPC-H Q6: a
//! ship date range over files in order key order, then discount and quantity tests) the
//! scatter costs more than the tests: `perf` of Q6 showed it at 12 % of the server's samples
//! (`pre_selection_scatter`) plus 8 % slicing boolean arrays for it.
//!
//! In a filter a null answer drops the row like a false one, so the chain can be evaluated
//! differently: [`Conjunction`] evaluates the conditions in their order on the whole batch,
//! combining their answers bit-wise, until the rows still kept are at most [`SPARSE`] of the
//! batch; from then on it evaluates the remaining conditions on just those rows (with the
//! columns they read), narrowing them condition by condition, and writes the kept rows'
//! positions into the answer once at the end. Each condition sees the rows DataFusion's own
//! evaluation would give it (all, or those the conditions before kept).
//!
//! [`Conjunctions`] is the physical optimizer rule that gives each `FilterExec` with two or more
//! conditions a [`Conjunction`] as its predicate, after DataFusion's rules (and on single-node
//! sessions only: the workers' plan codec knows DataFusion's expressions).

use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array,
};
use arrow::buffer::{BooleanBuffer, MutableBuffer};
use arrow::compute::{filter, filter_record_batch};
use arrow::datatypes::{DataType, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::Result;
use datafusion::logical_expr::ColumnarValue;
use datafusion::physical_expr::utils::{collect_columns, split_conjunction};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::ExecutionPlan;

/// Share of a batch's rows at or below which the remaining conditions are evaluated on the
/// kept rows only (DataFusion's `PRE_SELECTION_THRESHOLD`).
const SPARSE: f64 = 0.2;

/// A filter's conditions, all of which a row must meet (see the module docs). Null answers
/// count as false: only for a filter's predicate.
#[derive(Debug, Hash, PartialEq, Eq)]
pub(crate) struct Conjunction {
    terms: Vec<Arc<dyn PhysicalExpr>>,
}

impl Conjunction {
    /// The conjunction of `terms`, evaluated in this order.
    pub(crate) fn new(terms: Vec<Arc<dyn PhysicalExpr>>) -> Conjunction {
        Conjunction { terms }
    }
}

impl fmt::Display for Conjunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" AND ")?;
            }
            write!(f, "{term}")?;
        }
        Ok(())
    }
}

/// The rows a condition keeps: true and not null.
fn kept(answer: ColumnarValue, rows: usize) -> Result<BooleanBuffer> {
    let array = answer.into_array(rows)?;
    let answer = array.as_boolean();
    Ok(match answer.nulls() {
        Some(nulls) => answer.values() & nulls.inner(),
        None => answer.values().clone(),
    })
}

/// Rows kept so far, once they are few: their positions in the batch, and the batch's rows at
/// those positions (the columns the remaining conditions read; the others all null).
struct Narrowed {
    positions: UInt32Array,
    rows: RecordBatch,
}

impl Conjunction {
    /// The batch's rows at `keep`, with the columns the conditions from `next` on read.
    fn narrow(&self, batch: &RecordBatch, keep: &BooleanArray, next: usize) -> Result<RecordBatch> {
        let mut read = vec![false; batch.num_columns()];
        for term in &self.terms[next..] {
            for column in collect_columns(term) {
                if let Some(slot) = read.get_mut(column.index()) {
                    *slot = true;
                }
            }
        }
        let count = keep.true_count();
        let columns = batch
            .columns()
            .iter()
            .zip(&read)
            .map(|(column, read)| match read {
                true => filter(column, keep),
                false => Ok(new_null_array(column.data_type(), count)),
            })
            .collect::<std::result::Result<Vec<ArrayRef>, _>>()?;
        // The columns left out are all null, so their fields say they may be.
        let schema = batch.schema();
        let fields: Vec<_> = (schema.fields().iter().zip(&read))
            .map(|(field, read)| match read {
                true => field.clone(),
                false => Arc::new(field.as_ref().clone().with_nullable(true)),
            })
            .collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
        let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(count));
        Ok(RecordBatch::try_new_with_options(schema, columns, &options)?)
    }
}

impl PhysicalExpr for Conjunction {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, _input_schema: &Schema) -> Result<bool> {
        Ok(false)
    }

    fn evaluate(&self, batch: &RecordBatch) -> Result<ColumnarValue> {
        let rows = batch.num_rows();
        let none = || Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![false; rows]))));
        let mut keep: Option<BooleanBuffer> = None;
        let mut narrowed: Option<Narrowed> = None;
        for (i, term) in self.terms.iter().enumerate() {
            match &mut narrowed {
                None => {
                    let answer = kept(term.evaluate(batch)?, rows)?;
                    let both = match keep {
                        Some(before) => &before & &answer,
                        None => answer,
                    };
                    let count = both.count_set_bits();
                    if count == 0 {
                        return none();
                    }
                    let last = i + 1 == self.terms.len();
                    if !last && (count as f64) <= SPARSE * rows as f64 {
                        let mask = BooleanArray::new(both.clone(), None);
                        let positions: UInt32Array =
                            both.set_indices().map(|p| p as u32).collect::<Vec<_>>().into();
                        let rows = self.narrow(batch, &mask, i + 1)?;
                        narrowed = Some(Narrowed { positions, rows });
                    }
                    keep = Some(both);
                }
                Some(Narrowed { positions, rows: subset }) => {
                    let answer = kept(term.evaluate(subset)?, subset.num_rows())?;
                    let count = answer.count_set_bits();
                    if count == 0 {
                        return none();
                    }
                    if count < subset.num_rows() {
                        let mask = BooleanArray::new(answer, None);
                        *positions = filter(positions, &mask)?.as_primitive().clone();
                        *subset = filter_record_batch(subset, &mask)?;
                    }
                }
            }
        }
        let keep = match narrowed {
            // The kept positions, written into a batch-long answer once.
            Some(Narrowed { positions, .. }) => {
                let mut bits = MutableBuffer::new_null(rows);
                let slice = bits.as_slice_mut();
                for p in positions.values() {
                    arrow::util::bit_util::set_bit(slice, *p as usize);
                }
                BooleanBuffer::new(bits.into(), 0, rows)
            }
            None => keep.unwrap_or_else(|| BooleanBuffer::new_set(rows)),
        };
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::new(keep, None))))
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        self.terms.iter().collect()
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        Ok(Arc::new(Conjunction::new(children)))
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" AND ")?;
            }
            term.fmt_sql(f)?;
        }
        Ok(())
    }
}

/// The physical optimizer rule that gives filters of several conditions a [`Conjunction`].
#[derive(Debug)]
pub(crate) struct Conjunctions;

impl PhysicalOptimizerRule for Conjunctions {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            let Some(filter) = node.downcast_ref::<FilterExec>() else {
                return Ok(Transformed::no(node));
            };
            let predicate = filter.predicate();
            if predicate.downcast_ref::<Conjunction>().is_some() {
                return Ok(Transformed::no(node));
            }
            let terms: Vec<Arc<dyn PhysicalExpr>> =
                split_conjunction(predicate).into_iter().cloned().collect();
            if terms.len() < 2 {
                return Ok(Transformed::no(node));
            }
            let rebuilt = FilterExecBuilder::from(filter)
                .with_predicate(Arc::new(Conjunction::new(terms)))
                .build()?;
            Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "conjunctions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests;
