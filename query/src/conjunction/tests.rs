use arrow::array::{Float64Array, Int64Array, StringArray};
use arrow::compute::prep_null_mask_filter;
use arrow::datatypes::Field;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{col, lit, BinaryExpr};
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

/// 10,000 rows: `a` 0..10,000 with every 7th null, `b` one of 5 strings with every 11th
/// null, `c` a float with every 13th null, `d` the row number, never null.
fn batch() -> RecordBatch {
    let n = 10_000i64;
    let a: Int64Array = (0..n).map(|i| (i % 7 != 3).then_some(i)).collect();
    let b: StringArray = (0..n)
        .map(|i| (i % 11 != 5).then(|| ["x", "y", "z", "w", "v"][(i % 5) as usize]))
        .collect();
    let c: Float64Array = (0..n).map(|i| (i % 13 != 0).then_some((i * 37 % 1000) as f64)).collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("a", DataType::Int64, true),
        Field::new("b", DataType::Utf8, true),
        Field::new("c", DataType::Float64, true),
        Field::new("d", DataType::Int64, false),
    ]));
    let d: Int64Array = (0..n).collect();
    let columns: Vec<ArrayRef> = vec![Arc::new(a), Arc::new(b), Arc::new(c), Arc::new(d)];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn term(
    column: &str,
    op: Operator,
    value: datafusion::common::ScalarValue,
) -> Arc<dyn PhysicalExpr> {
    let schema = batch().schema();
    Arc::new(BinaryExpr::new(col(column, &schema).unwrap(), op, lit(value)))
}

/// DataFusion's own answer for the chain `t0 AND t1 AND ...`, nulls as false.
fn expected(terms: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> BooleanArray {
    let chain = terms
        .iter()
        .cloned()
        .reduce(|l, r| Arc::new(BinaryExpr::new(l, Operator::And, r)) as Arc<dyn PhysicalExpr>)
        .unwrap();
    let answer = chain.evaluate(batch).unwrap().into_array(batch.num_rows()).unwrap();
    prep_null_mask_filter(answer.as_boolean())
}

#[test]
fn answers_as_the_and_chain_does_in_a_filter() {
    use datafusion::common::ScalarValue as S;
    let batch = batch();
    let selective = term("a", Operator::Lt, S::Int64(Some(150))); // 1.3 %, narrows at once
    let half = term("c", Operator::GtEq, S::Float64(Some(500.0))); // about half, with nulls
    let some = term("b", Operator::Eq, S::Utf8(Some("y".into()))); // a fifth, with nulls
    let most = term("a", Operator::Gt, S::Int64(Some(20))); // nearly all
    let none = term("a", Operator::Lt, S::Int64(Some(0)));
    // Not null: the rows narrowed to leave it out while other conditions are evaluated.
    let even = Arc::new(BinaryExpr::new(
        Arc::new(BinaryExpr::new(col("d", &batch.schema()).unwrap(), Operator::Modulo, lit(2i64))),
        Operator::Eq,
        lit(0i64),
    )) as Arc<dyn PhysicalExpr>;
    let cases: Vec<Vec<Arc<dyn PhysicalExpr>>> = vec![
        vec![selective.clone(), half.clone(), some.clone()],
        vec![half.clone(), some.clone(), most.clone()],
        vec![most.clone(), half.clone(), selective.clone(), some.clone()],
        vec![some.clone(), half.clone()],
        vec![half.clone(), none.clone(), most.clone()],
        vec![selective.clone(), none.clone()],
        vec![most.clone(), most.clone()],
        vec![selective.clone(), half.clone(), even.clone()],
        vec![even.clone(), selective.clone(), some.clone()],
    ];
    for terms in cases {
        let want = expected(&terms, &batch);
        let conjunction = Conjunction::new(terms.clone());
        let got = conjunction.evaluate(&batch).unwrap().into_array(batch.num_rows()).unwrap();
        assert_eq!(got.as_boolean(), &want, "{conjunction}");
        assert_eq!(got.null_count(), 0);
    }
    // An empty batch keeps nothing.
    let empty = batch.slice(0, 0);
    let got = Conjunction::new(vec![half, some]).evaluate(&empty).unwrap();
    assert_eq!(got.into_array(0).unwrap().len(), 0);
}

#[tokio::test]
async fn filters_get_a_conjunction_and_the_same_answers() {
    let batch = batch();
    let sql = "SELECT a, b, d FROM t WHERE a < 2000 AND c >= 500 AND b IN ('x', 'y') ORDER BY a";
    let mut answers = Vec::new();
    for rule in [false, true] {
        let mut builder = SessionStateBuilder::new()
            .with_config(SessionConfig::new().with_target_partitions(2))
            .with_default_features();
        if rule {
            builder = builder.with_physical_optimizer_rule(Arc::new(Conjunctions));
        }
        let ctx = SessionContext::new_with_state(builder.build());
        let partitions = vec![vec![batch.slice(0, 6_000)], vec![batch.slice(6_000, 4_000)]];
        let table = MemTable::try_new(batch.schema(), partitions).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        let mut conjunctions = 0;
        plan.apply(|node| {
            if let Some(filter) = node.downcast_ref::<FilterExec>() {
                if filter.predicate().downcast_ref::<Conjunction>().is_some() {
                    conjunctions += 1;
                }
            }
            Ok(TreeNodeRecursion::Continue)
        })
        .unwrap();
        assert_eq!(conjunctions, usize::from(rule));
        let rows = collect(plan, ctx.task_ctx()).await.unwrap();
        answers.push(arrow::util::pretty::pretty_format_batches(&rows).unwrap().to_string());
    }
    assert_eq!(answers[0], answers[1]);
    assert!(answers[1].lines().count() > 100, "{}", answers[1]);
}
