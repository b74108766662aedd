//! Comparisons of a string column with constants, a 16-byte view at a time.
//!
//! Tarn reads Parquet strings as `Utf8View`: 16 bytes per value holding its length and, up to
//! 12 bytes, the value itself (a longer value: its first 4 bytes and where the rest is). Arrow's
//! `=` of such a column with a constant takes several branches per row (inline or not, same
//! length, same prefix), and on TPC-H's `l_shipmode`, whose values differ unpredictably in
//! length, that costs ~5 ns a row. But a constant of at most 12 bytes equals a value exactly
//! when their views are equal (Arrow requires the unused bytes of an inline view to be zero),
//! so `l_shipmode = 'MAIL'` is one 128-bit comparison per row, which the compiler vectorizes:
//! 6M rows in 5 ms instead of 30 (BENCHMARKS.md, "Strings compared a view at a time"). A
//! longer constant is compared by length and first 4 bytes the same way, then byte by byte
//! on the rows that match those.
//!
//! [`CompareViews`] is the physical optimizer rule that gives filters and projections (not
//! aggregate arguments) a [`ViewsIn`] for `column = 'constant'`, `<>`, `column [NOT] IN ('a',
//! 'b', ...)`, an `OR` of equalities and an `AND` of inequalities of one column, over string
//! and binary view columns. Null semantics are SQL's, as before: a null value gives null. Not
//! with workers: their plans must be DataFusion's own operators and expressions
//! (datafusion-proto).

use std::fmt;
use std::sync::Arc;

use arrow::array::{make_view, Array, AsArray, BooleanArray, ByteView, GenericByteViewArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{ByteViewType, DataType, Schema};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{internal_err, Result, ScalarValue};
use datafusion::logical_expr::{ColumnarValue, Operator};
use datafusion::physical_expr::expressions::{BinaryExpr, InListExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr_common::physical_expr::is_volatile;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::{FilterExec, FilterExecBuilder};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::ExecutionPlan;

/// Most constants one [`ViewsIn`] compares with (each costs a pass over the views; a longer
/// `IN` list is left to DataFusion's hash set).
const MAX_CONSTANTS: usize = 16;

/// `value [NOT] IN (constants)` over a string or binary view column: see the
/// [module documentation](self).
#[derive(Debug, Eq)]
pub(crate) struct ViewsIn {
    value: Arc<dyn PhysicalExpr>,
    constants: Vec<Vec<u8>>,
    negated: bool,
}

impl ViewsIn {
    /// `value IN (constants)`, or `NOT IN` when `negated`.
    pub(crate) fn new(
        value: Arc<dyn PhysicalExpr>,
        constants: Vec<Vec<u8>>,
        negated: bool,
    ) -> ViewsIn {
        ViewsIn { value, constants, negated }
    }

    /// Whether each value of `array` is one of the constants (nulls aside).
    fn matches<T: ByteViewType + ?Sized>(&self, array: &GenericByteViewArray<T>) -> BooleanBuffer {
        let views = array.views();
        let mut found: Option<BooleanBuffer> = None;
        for constant in &self.constants {
            let view = make_view(constant, 0, 0);
            let one = if constant.len() <= 12 {
                BooleanBuffer::collect_bool(views.len(), |i| views[i] == view)
            } else {
                // The low 8 bytes of a long value's view: its length and first 4 bytes.
                let head = view as u64;
                BooleanBuffer::collect_bool(views.len(), |i| {
                    views[i] as u64 == head
                        && long_value(array, views[i]) == Some(constant.as_slice())
                })
            };
            found = Some(match found {
                Some(before) => &before | &one,
                None => one,
            });
        }
        found.unwrap_or_else(|| BooleanBuffer::new_unset(views.len()))
    }

    fn answer<T: ByteViewType + ?Sized>(&self, array: &GenericByteViewArray<T>) -> BooleanArray {
        let found = self.matches(array);
        let values = if self.negated { !&found } else { found };
        BooleanArray::new(values, array.nulls().cloned())
    }

    fn fmt_with(
        &self,
        f: &mut fmt::Formatter<'_>,
        value: impl Fn(&mut fmt::Formatter<'_>) -> fmt::Result,
    ) -> fmt::Result {
        value(f)?;
        if let [constant] = self.constants.as_slice() {
            let op = if self.negated { "!=" } else { "=" };
            return write!(f, " {op} {}", String::from_utf8_lossy(constant));
        }
        f.write_str(if self.negated { " NOT IN (" } else { " IN (" })?;
        for (i, constant) in self.constants.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}", String::from_utf8_lossy(constant))?;
        }
        f.write_str(")")
    }
}

impl PartialEq for ViewsIn {
    fn eq(&self, other: &Self) -> bool {
        self.value.eq(&other.value)
            && self.constants == other.constants
            && self.negated == other.negated
    }
}

impl std::hash::Hash for ViewsIn {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.value.hash(state);
        self.constants.hash(state);
        self.negated.hash(state);
    }
}

/// The bytes of the long (more than 12 bytes) value `view` points to; `None` for a view that
/// points nowhere (the view of a null slot is not required to be valid).
fn long_value<T: ByteViewType + ?Sized>(
    array: &GenericByteViewArray<T>,
    view: u128,
) -> Option<&[u8]> {
    let view = ByteView::from(view);
    let start = view.offset as usize;
    array.data_buffers().get(view.buffer_index as usize)?.get(start..start + view.length as usize)
}

impl fmt::Display for ViewsIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, |f| write!(f, "{}", self.value))
    }
}

impl PhysicalExpr for ViewsIn {
    fn data_type(&self, _input_schema: &Schema) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn nullable(&self, input_schema: &Schema) -> Result<bool> {
        self.value.nullable(input_schema)
    }

    fn evaluate(&self, batch: &arrow::array::RecordBatch) -> Result<ColumnarValue> {
        let value = self.value.evaluate(batch)?;
        let scalar = matches!(value, ColumnarValue::Scalar(_));
        let array = value.into_array(if scalar { 1 } else { batch.num_rows() })?;
        let answer = match array.data_type() {
            DataType::Utf8View => self.answer(array.as_string_view()),
            DataType::BinaryView => self.answer(array.as_binary_view()),
            other => return internal_err!("ViewsIn of a {other} value"),
        };
        Ok(match scalar {
            true => ColumnarValue::Scalar(ScalarValue::try_from_array(&answer, 0)?),
            false => ColumnarValue::Array(Arc::new(answer)),
        })
    }

    fn children(&self) -> Vec<&Arc<dyn PhysicalExpr>> {
        vec![&self.value]
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn PhysicalExpr>>,
    ) -> Result<Arc<dyn PhysicalExpr>> {
        match <[_; 1]>::try_from(children) {
            Ok([value]) => Ok(Arc::new(ViewsIn::new(value, self.constants.clone(), self.negated))),
            Err(children) => internal_err!("ViewsIn has one child, not {}", children.len()),
        }
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_with(f, |f| self.value.fmt_sql(f))
    }
}

/// The physical optimizer rule: see the [module documentation](self).
#[derive(Debug, Default)]
pub(crate) struct CompareViews;

impl PhysicalOptimizerRule for CompareViews {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                let schema = filter.input().schema();
                let predicate = rewrite(filter.predicate().clone(), &schema)?;
                if !predicate.transformed {
                    return Ok(Transformed::no(node));
                }
                let rebuilt =
                    FilterExecBuilder::from(filter).with_predicate(predicate.data).build()?;
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
            if let Some(projection) = node.downcast_ref::<ProjectionExec>() {
                let schema = projection.input().schema();
                let mut changed = false;
                let mut exprs = projection.expr().to_vec();
                for projected in &mut exprs {
                    let rewritten = rewrite(projected.expr.clone(), &schema)?;
                    changed |= rewritten.transformed;
                    projected.expr = rewritten.data;
                }
                if !changed {
                    return Ok(Transformed::no(node));
                }
                // The same output schema, metadata included.
                let rebuilt = ProjectionExec::try_new_with_schema_metadata(
                    exprs,
                    projection.input().clone(),
                    &projection.schema(),
                )?;
                return Ok(Transformed::yes(Arc::new(rebuilt) as Arc<dyn ExecutionPlan>));
            }
            Ok(Transformed::no(node))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "compare_views"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// `expr` with its comparisons of view columns and constants as [`ViewsIn`].
fn rewrite(
    expr: Arc<dyn PhysicalExpr>,
    schema: &Schema,
) -> Result<Transformed<Arc<dyn PhysicalExpr>>> {
    expr.transform_up(|e| {
        Ok(match views_in(&e, schema)? {
            Some(rewritten) => Transformed::yes(Arc::new(rewritten) as Arc<dyn PhysicalExpr>),
            None => Transformed::no(e),
        })
    })
}

/// `e` as a [`ViewsIn`], when it is one of the forms it computes.
fn views_in(e: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<Option<ViewsIn>> {
    if let Some(binary) = e.downcast_ref::<BinaryExpr>() {
        let (left, right) = (binary.left(), binary.right());
        return Ok(match binary.op() {
            Operator::Eq | Operator::NotEq => {
                let negated = *binary.op() == Operator::NotEq;
                let (value, constant) = match (constant_bytes(left), constant_bytes(right)) {
                    (None, Some(constant)) => (left, constant),
                    (Some(constant), None) => (right, constant),
                    _ => return Ok(None),
                };
                is_view(value, schema)?
                    .then(|| ViewsIn::new(value.clone(), vec![constant], negated))
            }
            // `a = 'x' OR a = 'y'` (how DataFusion writes a short `IN` list), and `a <> 'x' AND
            // a <> 'y'` (a short `NOT IN`): one pass per constant, no intermediate arrays.
            Operator::Or | Operator::And => {
                let negated = *binary.op() == Operator::And;
                let (Some(l), Some(r)) =
                    (left.downcast_ref::<ViewsIn>(), right.downcast_ref::<ViewsIn>())
                else {
                    return Ok(None);
                };
                let fits = l.constants.len() + r.constants.len() <= MAX_CONSTANTS;
                // One value, computed once instead of twice: not for a volatile one.
                let same = l.negated == negated
                    && r.negated == negated
                    && l.value.eq(&r.value)
                    && !is_volatile(&l.value);
                (same && fits).then(|| {
                    let constants = l.constants.iter().chain(&r.constants).cloned().collect();
                    ViewsIn::new(l.value.clone(), constants, negated)
                })
            }
            _ => None,
        });
    }
    if let Some(in_list) = e.downcast_ref::<InListExpr>() {
        if in_list.list().len() > MAX_CONSTANTS || !is_view(in_list.expr(), schema)? {
            return Ok(None);
        }
        // A NULL among the constants makes "not found" null: left to DataFusion.
        let constants: Option<Vec<Vec<u8>>> = in_list.list().iter().map(constant_bytes).collect();
        return Ok(constants
            .map(|constants| ViewsIn::new(in_list.expr().clone(), constants, in_list.negated())));
    }
    Ok(None)
}

/// Whether `value` is a string or binary view in `schema`.
fn is_view(value: &Arc<dyn PhysicalExpr>, schema: &Schema) -> Result<bool> {
    Ok(matches!(value.data_type(schema)?, DataType::Utf8View | DataType::BinaryView))
}

/// The bytes of a non-null string or binary constant.
fn constant_bytes(e: &Arc<dyn PhysicalExpr>) -> Option<Vec<u8>> {
    match e.downcast_ref::<Literal>()?.value() {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s.as_bytes().to_vec()),
        ScalarValue::Binary(Some(b))
        | ScalarValue::BinaryView(Some(b))
        | ScalarValue::LargeBinary(Some(b)) => Some(b.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
