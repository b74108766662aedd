//! Decimal constants written at the scale of the decimal they are added to.
//!
//! `1 - l_discount` (TPC-H's revenue, in Q1, Q3, Q5, Q7-Q10, Q14, Q19) adds an integer to a
//! `Decimal128(15, 2)`: type coercion makes the `1` a `Decimal128(20, 0)`, and arrow's kernel
//! for operands of different scales multiplies *each row* by 10^2 (a checked 128-bit multiply)
//! before subtracting. [`ScaleDecimalLiterals`] writes the constant at the other operand's scale
//! instead (`1` becomes `1.00`, a `Decimal128(22, 2)`), so the kernel only subtracts. The result
//! type is the same (its scale is the larger scale, its integer digits the larger integer
//! digits, both unchanged), and so is every result: the constant is the same number.
//!
//! Measured over 6M rows of `l_extendedprice * (1 - l_discount)` in arrow alone: 74 ms against
//! 35 ms (BENCHMARKS.md, "Decimal constants at the column's scale").

use std::sync::Arc;

use arrow::datatypes::{DataType, DECIMAL128_MAX_PRECISION};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DFSchemaRef, Result, ScalarValue};
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{BinaryExpr, Expr, ExprSchemable, LogicalPlan, Operator};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};

/// The logical optimizer rule: see the [module documentation](self).
#[derive(Debug, Default)]
pub struct ScaleDecimalLiterals;

impl OptimizerRule for ScaleDecimalLiterals {
    fn name(&self) -> &str {
        "scale_decimal_literals"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        // The columns a node's expressions see: its inputs' (a table scan's filters see the
        // whole table).
        let schema: DFSchemaRef = if !plan.inputs().is_empty() {
            Arc::new(merge_schema(&plan.inputs()))
        } else if let LogicalPlan::TableScan(scan) = &plan {
            Arc::new(DFSchema::try_from_qualified_schema(
                scan.table_name.clone(),
                &scan.source.schema(),
            )?)
        } else {
            return Ok(Transformed::no(plan));
        };
        // A rewritten expression keeps its name, so the node's schema does not change.
        let names = NamePreserver::new(&plan);
        plan.map_expressions(|expr| {
            let name = names.save(&expr);
            let rewritten = expr.transform_up(|e| scale_literal(e, &schema))?;
            Ok(rewritten.update_data(|e| name.restore(e)))
        })
    }
}

/// `e` with its decimal constant written at the other operand's scale, when `e` adds a decimal
/// constant to (or subtracts it from, or subtracts from it) a decimal of a larger scale.
fn scale_literal(mut e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
    let changed = match &mut e {
        Expr::BinaryExpr(BinaryExpr { left, op: Operator::Plus | Operator::Minus, right }) => {
            rescale_in_place(left, right, schema) || rescale_in_place(right, left, schema)
        }
        _ => false,
    };
    Ok(Transformed::new_transformed(e, changed))
}

/// Rewrites `literal`, when it is a decimal constant, at the scale of `other` (see
/// [`rescaled`]); true if it did.
fn rescale_in_place(literal: &mut Expr, other: &Expr, schema: &DFSchema) -> bool {
    let Expr::Literal(value, _) = literal else {
        return false;
    };
    match rescaled(value, other, schema) {
        Some(scaled) => {
            *value = scaled;
            true
        }
        None => false,
    }
}

/// `value` (a decimal constant) at the scale of `other` (a decimal expression), when that scale
/// is larger and the constant still fits a `Decimal128`: the same number, with as many more
/// digits of precision as of scale, so that the operation's result type does not change.
fn rescaled(value: &ScalarValue, other: &Expr, schema: &DFSchema) -> Option<ScalarValue> {
    let ScalarValue::Decimal128(Some(v), p, s) = value else {
        return None;
    };
    let Ok(DataType::Decimal128(_, target)) = other.get_type(schema) else {
        return None;
    };
    if *s < 0 || target <= *s {
        return None;
    }
    let more = (target - *s) as u8;
    let precision = p.checked_add(more).filter(|p| *p <= DECIMAL128_MAX_PRECISION)?;
    let v = v.checked_mul(10i128.checked_pow(u32::from(more))?)?;
    Some(ScalarValue::Decimal128(Some(v), precision, target))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{Decimal128Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::ScaleDecimalLiterals;

    /// A session over `t(price Decimal(15,2), discount Decimal(15,2), big Decimal(38,10))`
    /// with nulls and negative values, with or without the rule.
    fn session(with_rule: bool) -> SessionContext {
        let decimal = |values: Vec<Option<i128>>, p: u8, s: i8| {
            Arc::new(Decimal128Array::from(values).with_precision_and_scale(p, s).unwrap())
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("price", DataType::Decimal128(15, 2), true),
            Field::new("discount", DataType::Decimal128(15, 2), true),
            Field::new("big", DataType::Decimal128(38, 10), true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                decimal(vec![Some(123_456), None, Some(-99), Some(999_999_999_999_999)], 15, 2),
                decimal(vec![Some(5), Some(7), None, Some(-10)], 15, 2),
                decimal(vec![Some(1), Some(-25_000_000_000), None, Some(i128::MAX / 1000)], 38, 10),
            ],
        )
        .unwrap();
        let mut builder = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(1))
            .with_default_features();
        if with_rule {
            builder = builder.with_optimizer_rule(Arc::new(ScaleDecimalLiterals));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        ctx.register_table("t", Arc::new(MemTable::try_new(schema, vec![vec![batch]]).unwrap()))
            .unwrap();
        ctx
    }

    async fn answer(ctx: &SessionContext, sql: &str) -> (String, String) {
        let df = ctx.sql(sql).await.unwrap();
        let schema = format!("{:?}", df.schema().fields());
        let batches = df.collect().await.unwrap();
        (schema, pretty_format_batches(&batches).unwrap().to_string())
    }

    async fn optimized(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let text = plan.display_indent_schema().to_string();
        text
    }

    /// Same names, types and values with and without the rule, for constants on either side,
    /// inside aggregates and filters, and where the rule must leave the constant alone (a
    /// larger scale than the column's; no room left in 38 digits).
    #[tokio::test]
    async fn same_answers_and_types() {
        let queries = [
            "SELECT price * (1 - discount), price * (1 + discount), discount - 1, 2.5 + price FROM t",
            "SELECT sum(price * (1 - discount)) AS s, avg(1 - discount) FROM t",
            "SELECT price FROM t WHERE 1 - discount > 0.94 ORDER BY price",
            "SELECT discount + CAST(0.001 AS DECIMAL(4,3)), big + 1, big - 1.5, 1 - big FROM t",
            "SELECT price - CAST(NULL AS DECIMAL(10,0)), price + 1::DECIMAL(38,0) FROM t",
        ];
        let (with, without) = (session(true), session(false));
        for sql in queries {
            assert_eq!(answer(&with, sql).await, answer(&without, sql).await, "{sql}");
        }
    }

    /// The constant is rewritten at the column's scale where it can be, and only there.
    #[tokio::test]
    async fn rewrites_the_constant() {
        let ctx = session(true);
        let plan = optimized(&ctx, "SELECT price * (1 - discount) AS r FROM t").await;
        assert!(plan.contains("Decimal128(1.00,22,2) - t.discount"), "{plan}");
        // 38 digits of precision leave no room to rescale `1::DECIMAL(38,0)`.
        let plan = optimized(&ctx, "SELECT price + 1::DECIMAL(38,0) AS r FROM t").await;
        assert!(plan.contains("Decimal128(1,38,0)"), "{plan}");
        // A constant of a larger scale than the column's stays as it is.
        let plan =
            optimized(&ctx, "SELECT discount + CAST(0.001 AS DECIMAL(4,3)) AS r FROM t").await;
        assert!(plan.contains("Decimal128(0.001,4,3)"), "{plan}");
    }
}
