use arrow::array::{ArrayRef, BinaryViewArray, RecordBatch, StringArray, StringViewArray};
use arrow::datatypes::Field;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::MemTable;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::physical_expr::expressions::{col, in_list, lit};
use datafusion::physical_plan::collect;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::*;

/// Values of every kind a view can hold: empty, inline (up to 12 bytes, 12 exactly), long,
/// long ones sharing a constant's length and first 4 bytes but not its tail, nulls.
fn values() -> Vec<Option<&'static str>> {
    let kinds = [
        Some("MAIL"),
        Some("SHIP"),
        Some("REG AIR"),
        Some(""),
        None,
        Some("twelve bytes"),
        Some("thirteen byte"),
        Some("DELIVER IN PERSON"),
        Some("DELIVER IN PERSOM"),
        Some("DELIVER IN PERSON, SOON"),
        Some("MAI"),
        Some("MAIL "),
        Some("TAKE BACK RETURN"),
    ];
    // An irregular order, so every 64-row word of the answer mixes kinds.
    (0..1000).map(|i| kinds[(i * 7 + i / 13) % kinds.len()]).collect()
}

fn constants() -> Vec<&'static str> {
    vec!["MAIL", "", "twelve bytes", "thirteen byte", "DELIVER IN PERSON", "MAI", "absent"]
}

fn batch(array: ArrayRef) -> RecordBatch {
    let field = Field::new("s", array.data_type().clone(), true);
    RecordBatch::try_new(Arc::new(Schema::new(vec![field])), vec![array]).unwrap()
}

fn evaluate(expr: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> BooleanArray {
    let answer = expr.evaluate(batch).unwrap().into_array(batch.num_rows()).unwrap();
    answer.as_boolean().clone()
}

/// Every form, against DataFusion's own expressions, over string and binary views, inline-only
/// arrays (no data buffers), arrays with buffers, and slices.
#[test]
fn answers_as_datafusion_does() {
    let strings = StringViewArray::from(values());
    let inline = StringViewArray::from(
        values().into_iter().map(|v| v.filter(|v| v.len() <= 12)).collect::<Vec<_>>(),
    );
    assert!(inline.data_buffers().is_empty() && !strings.data_buffers().is_empty());
    let binaries: BinaryViewArray =
        values().into_iter().map(|v| v.map(str::as_bytes)).collect::<Vec<_>>().into();
    let arrays: Vec<ArrayRef> = vec![
        Arc::new(strings.clone()),
        Arc::new(inline),
        Arc::new(binaries.clone()),
        Arc::new(strings.slice(37, 600)),
        Arc::new(binaries.slice(3, 900)),
    ];
    for array in arrays {
        let binary = *array.data_type() == DataType::BinaryView;
        let batch = batch(array);
        let schema = batch.schema();
        let s = col("s", &schema).unwrap();
        let constant = |c: &str| match binary {
            true => lit(ScalarValue::BinaryView(Some(c.as_bytes().to_vec()))),
            false => lit(ScalarValue::Utf8View(Some(c.to_string()))),
        };
        let mut checked = 0;
        for c in constants() {
            for op in [Operator::Eq, Operator::NotEq] {
                let theirs: Arc<dyn PhysicalExpr> =
                    Arc::new(BinaryExpr::new(s.clone(), op, constant(c)));
                let ours = views_in(&theirs, &schema).unwrap().expect("rewritten");
                assert_eq!(
                    ours.evaluate(&batch)
                        .unwrap()
                        .into_array(batch.num_rows())
                        .unwrap()
                        .as_boolean(),
                    &evaluate(&theirs, &batch),
                    "{theirs} over {}",
                    schema.field(0)
                );
                // The constant on the left.
                let swapped: Arc<dyn PhysicalExpr> =
                    Arc::new(BinaryExpr::new(constant(c), op, s.clone()));
                let ours: Arc<dyn PhysicalExpr> =
                    Arc::new(views_in(&swapped, &schema).unwrap().expect("rewritten"));
                assert_eq!(evaluate(&ours, &batch), evaluate(&swapped, &batch), "{swapped}");
                checked += 2;
            }
        }
        for list in [vec!["MAIL", "SHIP"], constants(), vec!["DELIVER IN PERSON", ""]] {
            for negated in [false, true] {
                let items = list.iter().map(|c| constant(c)).collect();
                let theirs = in_list(s.clone(), items, &negated, &schema).unwrap();
                let ours: Arc<dyn PhysicalExpr> =
                    Arc::new(views_in(&theirs, &schema).unwrap().expect("rewritten"));
                assert_eq!(evaluate(&ours, &batch), evaluate(&theirs, &batch), "{theirs}");
                checked += 1;
            }
            // DataFusion's way of writing a short list: equalities joined by OR, and a short
            // `NOT IN`: inequalities joined by AND.
            for (op, join, negated) in
                [(Operator::Eq, Operator::Or, false), (Operator::NotEq, Operator::And, true)]
            {
                let theirs = list
                    .iter()
                    .map(|c| Arc::new(BinaryExpr::new(s.clone(), op, constant(c))) as _)
                    .reduce(|l, r| Arc::new(BinaryExpr::new(l, join, r)) as _)
                    .unwrap();
                let ours = rewrite(theirs.clone(), &schema).unwrap();
                let merged = ours.data.downcast_ref::<ViewsIn>().expect("one ViewsIn");
                assert_eq!((merged.negated, merged.constants.len()), (negated, list.len()));
                assert_eq!(evaluate(&ours.data, &batch), evaluate(&theirs, &batch), "{theirs}");
            }
            checked += 2;
        }
        assert_eq!(checked, constants().len() * 4 + 12);
    }
}

/// What the rule must leave to DataFusion: columns that are not views, NULL constants, other
/// operators, ORs and ANDs it does not merge, and lists longer than [`MAX_CONSTANTS`].
#[test]
fn leaves_other_forms_alone() {
    let schema = Schema::new(vec![
        Field::new("v", DataType::Utf8View, true),
        Field::new("w", DataType::Utf8View, true),
        Field::new("u", DataType::Utf8, true),
    ]);
    let v = col("v", &schema).unwrap();
    let w = col("w", &schema).unwrap();
    let u = col("u", &schema).unwrap();
    let eq = |c: &Arc<dyn PhysicalExpr>, op, value: ScalarValue| -> Arc<dyn PhysicalExpr> {
        Arc::new(BinaryExpr::new(c.clone(), op, lit(value)))
    };
    let text = |s: &str| ScalarValue::Utf8View(Some(s.into()));
    let or = |l, r| Arc::new(BinaryExpr::new(l, Operator::Or, r)) as Arc<dyn PhysicalExpr>;
    let untouched: Vec<Arc<dyn PhysicalExpr>> = vec![
        eq(&u, Operator::Eq, ScalarValue::Utf8(Some("a".into()))),
        eq(&v, Operator::Eq, ScalarValue::Utf8View(None)),
        eq(&v, Operator::Lt, text("a")),
        Arc::new(BinaryExpr::new(v.clone(), Operator::Eq, w.clone())),
        in_list(v.clone(), vec![lit(text("a")), lit(ScalarValue::Utf8View(None))], &false, &schema)
            .unwrap(),
        in_list(v.clone(), (0..17).map(|i| lit(text(&i.to_string()))).collect(), &false, &schema)
            .unwrap(),
    ];
    for e in untouched {
        assert!(views_in(&e, &schema).unwrap().is_none(), "{e} rewritten");
    }
    // Each comparison is, but not an OR of two columns, of an inequality, or an AND of
    // equalities.
    let and = |l, r| Arc::new(BinaryExpr::new(l, Operator::And, r)) as Arc<dyn PhysicalExpr>;
    for e in [
        or(eq(&v, Operator::Eq, text("a")), eq(&w, Operator::Eq, text("b"))),
        or(eq(&v, Operator::Eq, text("a")), eq(&v, Operator::NotEq, text("b"))),
        and(eq(&v, Operator::Eq, text("a")), eq(&v, Operator::Eq, text("b"))),
        and(eq(&v, Operator::NotEq, text("a")), eq(&w, Operator::NotEq, text("b"))),
    ] {
        let rewritten = rewrite(e.clone(), &schema).unwrap();
        assert!(rewritten.transformed);
        assert!(rewritten.data.downcast_ref::<BinaryExpr>().is_some(), "{e} merged");
    }
}

async fn answer(with_rule: bool, sql: &str) -> (String, usize) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("mode", DataType::Utf8View, true),
        Field::new("note", DataType::Utf8View, true),
        Field::new("plain", DataType::Utf8, true),
    ]));
    let modes: StringViewArray = values().into();
    let notes: StringViewArray = values().into_iter().rev().collect::<Vec<_>>().into();
    let plain: StringArray = values().into();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![Arc::new(modes), Arc::new(notes), Arc::new(plain)],
    )
    .unwrap();
    let mut builder = SessionStateBuilder::new()
        .with_config(SessionConfig::new().with_target_partitions(2).with_batch_size(128))
        .with_default_features();
    if with_rule {
        builder = builder.with_physical_optimizer_rule(Arc::new(CompareViews));
    }
    let ctx = SessionContext::new_with_state(builder.build());
    let table =
        MemTable::try_new(schema, vec![vec![batch.slice(0, 500)], vec![batch.slice(500, 500)]])
            .unwrap();
    ctx.register_table("t", Arc::new(table)).unwrap();
    let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
    let mut rewritten = 0;
    plan.apply(|node| {
        let exprs: Vec<Arc<dyn PhysicalExpr>> =
            match (node.downcast_ref::<FilterExec>(), node.downcast_ref::<ProjectionExec>()) {
                (Some(filter), _) => vec![filter.predicate().clone()],
                (_, Some(projection)) => projection.expr().iter().map(|p| p.expr.clone()).collect(),
                _ => vec![],
            };
        for e in exprs {
            e.apply(|e| {
                rewritten += usize::from(e.downcast_ref::<ViewsIn>().is_some());
                Ok(TreeNodeRecursion::Continue)
            })
            .unwrap();
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    let batches = collect(plan, ctx.task_ctx()).await.unwrap();
    let text = arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string();
    (text, rewritten)
}

/// Through SQL: the same rows with and without the rule, filters and projections rewritten.
#[tokio::test]
async fn queries_answer_the_same() {
    let cases = [
        ("SELECT count(*), count(mode) FROM t WHERE mode = 'MAIL' OR mode = 'SHIP'", 1),
        ("SELECT count(*) FROM t WHERE mode IN ('MAIL', 'SHIP', 'DELIVER IN PERSON', '')", 1),
        ("SELECT count(*) FROM t WHERE mode NOT IN ('MAIL', 'thirteen byte')", 1),
        ("SELECT count(*) FROM t WHERE mode <> 'MAIL' AND note = 'DELIVER IN PERSON'", 2),
        ("SELECT count(*) FROM t WHERE 'REG AIR' = mode", 1),
        // Aggregate arguments are left to DataFusion.
        (
            "SELECT mode, sum(CASE WHEN note = 'SHIP' OR note = 'MAIL' THEN 1 ELSE 0 END) AS n, \
             count(*) AS c FROM t GROUP BY mode ORDER BY mode NULLS FIRST",
            0,
        ),
        (
            "SELECT CASE WHEN note = 'SHIP' OR note = 'MAIL' THEN 1 ELSE 0 END AS flag, mode \
             FROM t ORDER BY mode NULLS FIRST, flag",
            1,
        ),
        ("SELECT mode = 'MAIL' AS is_mail, mode FROM t ORDER BY mode, is_mail LIMIT 20", 1),
        ("SELECT count(*) FROM t WHERE plain = 'MAIL'", 0),
    ];
    for (sql, expected) in cases {
        let (with, rewritten) = answer(true, sql).await;
        let (without, none) = answer(false, sql).await;
        assert_eq!(with, without, "{sql}");
        assert_eq!((rewritten, none), (expected, 0), "{sql}");
        if sql.starts_with("SELECT count(*)") {
            assert!(!with.contains("| 0 "), "{sql} counts nothing:\n{with}");
        }
    }
}

/// A null slot stays null (and its negation null) even when its view holds the constant.
#[test]
fn null_slots_are_null_whatever_their_views() {
    use arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
    let long = "DELIVER IN PERSON";
    let views = ScalarBuffer::from(vec![
        make_view(long.as_bytes(), 0, 0),
        make_view(b"MAIL", 0, 0),
        make_view(long.as_bytes(), 0, 0),
    ]);
    let nulls = NullBuffer::from(vec![false, false, true]);
    let buffers = vec![Buffer::from(long.as_bytes())];
    let array = StringViewArray::try_new(views, buffers, Some(nulls)).unwrap();
    let batch = batch(Arc::new(array));
    let s = col("s", &batch.schema()).unwrap();
    // The first two slots are null (holding the long constant and "MAIL"), the third holds the
    // long constant.
    for constant in [long, "MAIL"] {
        for negated in [false, true] {
            let ours: Arc<dyn PhysicalExpr> =
                Arc::new(ViewsIn::new(s.clone(), vec![constant.as_bytes().to_vec()], negated));
            let expected = vec![None, None, Some(negated != (constant == long))];
            assert_eq!(evaluate(&ours, &batch), BooleanArray::from(expected), "{ours}");
        }
    }
}
