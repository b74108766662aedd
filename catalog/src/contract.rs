//! A table's contract compiled for ingest: the schemas to decode and store, and the rules and
//! derived columns as DataFusion physical expressions.
//!
//! Compiling happens when a definition is stored (so a typo in a rule is a 400 then, not a
//! failure at the first ingest) and when ingest loads the definition. Evaluating the
//! expressions on batches is ingest's business.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::tree_node::TreeNode;
use datafusion::common::DFSchema;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::Expr;
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;

use crate::spec::{ColumnType, Rule, TableSpec, UTC};
use crate::{Error, Result};

/// Arrow field metadata key of column comments (Delta and Spark read it as the column comment).
pub const COMMENT_KEY: &str = "comment";

/// Functions whose value is the time of the query: DataFusion folds them into constants when
/// it plans, so expressions using them are planned again for each batch.
const CLOCK_FUNCTIONS: &[&str] =
    &["now", "current_timestamp", "current_date", "current_time", "today", "localtimestamp"];

/// A SQL expression, compiled for evaluation on batches.
#[derive(Clone)]
pub struct CompiledExpr {
    ctx: SessionContext,
    logical: Expr,
    schema: Arc<DFSchema>,
    physical: Arc<dyn PhysicalExpr>,
    clock: bool,
}

impl std::fmt::Debug for CompiledExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.logical)
    }
}

impl CompiledExpr {
    /// The physical expression to evaluate now: the compiled one, or, for expressions that
    /// read the clock (`now()`, `current_date()`, ...), one planned with the current time.
    pub fn current(&self) -> std::result::Result<Arc<dyn PhysicalExpr>, String> {
        if !self.clock {
            return Ok(self.physical.clone());
        }
        plan_physical(&self.ctx, &self.logical, &self.schema).map_err(|e| e.strip_backtrace())
    }

    /// The type the expression yields over its schema.
    pub fn data_type(&self) -> std::result::Result<DataType, String> {
        self.physical.data_type(self.schema.as_arrow()).map_err(|e| e.strip_backtrace())
    }
}

/// Plans `logical` as DataFusion plans a query's expressions: type coercion, then
/// simplification with the current time (which folds `now()` and rewrites functions such as
/// `coalesce` that only exist in simplified form), then the physical expression.
fn plan_physical(
    ctx: &SessionContext,
    logical: &Expr,
    schema: &Arc<DFSchema>,
) -> datafusion::error::Result<Arc<dyn PhysicalExpr>> {
    let context = SimplifyContext::builder()
        .with_schema(schema.clone())
        .with_query_execution_start_time(Some(chrono::Utc::now()))
        .build();
    let simplifier = ExprSimplifier::new(context);
    let coerced = simplifier.coerce(logical.clone(), schema)?;
    let simplified = simplifier.simplify(coerced)?;
    ctx.create_physical_expr(simplified, schema)
}

/// A derived column, compiled.
#[derive(Debug, Clone)]
pub struct CompiledDerived {
    /// Column name.
    pub name: String,
    /// The expression, over the columns before it.
    pub expr: CompiledExpr,
    /// The type it is stored as (the expression's result is cast to it).
    pub data_type: DataType,
}

/// A rule, compiled.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule as declared.
    pub rule: Rule,
    /// A boolean expression over the table's columns.
    pub expr: CompiledExpr,
}

/// A declared table's contract, ready to apply to decoded batches.
#[derive(Debug, Clone)]
pub struct Contract {
    /// The declared columns' types, in order.
    pub types: Vec<ColumnType>,
    /// What JSON decoding produces: the declared columns, all nullable, with `date`,
    /// `timestamp`, `boolean` and `json` read as text (Tarn coerces those itself, accepting more
    /// forms than Arrow's parsers, and reports each bad value on its own row).
    pub input_schema: SchemaRef,
    /// The declared columns with their types, all nullable (what derived columns and rules see
    /// before nullability is enforced).
    pub declared_schema: SchemaRef,
    /// The Delta table's schema: declared columns (with declared nullability and comments),
    /// then derived columns.
    pub table_schema: SchemaRef,
    /// Derived columns, in order; each sees the declared columns and the derived ones before it.
    pub derived: Vec<CompiledDerived>,
    /// Rules, over all columns of the table.
    pub rules: Vec<CompiledRule>,
    /// Indices of the unique key's columns in `table_schema`.
    pub unique_key: Vec<usize>,
}

impl Contract {
    /// Compiles a declared spec. Fails with [`Error::InvalidDefinition`] naming the rule or
    /// derived column whose expression does not compile or has the wrong type.
    pub fn compile(spec: &TableSpec) -> Result<Contract> {
        spec.validate()?;
        if !spec.is_declared() {
            return Err(Error::InvalidDefinition {
                reason: "a contract needs declared columns".into(),
            });
        }
        let invalid = |reason: String| Error::InvalidDefinition { reason };
        let ctx = SessionContext::new();
        let types: Vec<ColumnType> = spec.columns.iter().map(|c| c.data_type).collect();
        let input_schema = Arc::new(Schema::new(
            spec.columns
                .iter()
                .map(|c| {
                    let t = match c.data_type {
                        ColumnType::Date
                        | ColumnType::Timestamp
                        | ColumnType::Json
                        | ColumnType::Boolean => DataType::Utf8,
                        other => other.arrow(),
                    };
                    Field::new(&c.name, t, true)
                })
                .collect::<Vec<_>>(),
        ));
        let mut fields: Vec<Field> =
            spec.columns.iter().map(|c| Field::new(&c.name, c.data_type.arrow(), true)).collect();
        let declared_schema = Arc::new(Schema::new(fields.clone()));

        let mut derived = Vec::with_capacity(spec.derived.len());
        for d in &spec.derived {
            let schema = Schema::new(fields.clone());
            let expr = compile_expr(&ctx, &d.expr, &schema)
                .map_err(|e| invalid(format!("derived column '{}': {e}", d.name)))?;
            let produced = expr
                .data_type()
                .map_err(|e| invalid(format!("derived column '{}': {e}", d.name)))?;
            let data_type = storable(&produced).ok_or_else(|| {
                invalid(format!(
                    "derived column '{}' yields {produced}, which a Delta table cannot store",
                    d.name
                ))
            })?;
            fields.push(Field::new(&d.name, data_type.clone(), true));
            derived.push(CompiledDerived { name: d.name.clone(), expr, data_type });
        }

        let all = Schema::new(fields.clone());
        let mut rules = Vec::with_capacity(spec.rules.len());
        for rule in &spec.rules {
            let expr = compile_expr(&ctx, &rule.check, &all)
                .map_err(|e| invalid(format!("rule '{}': {e}", rule.name)))?;
            match expr.data_type() {
                Ok(DataType::Boolean) => {}
                Ok(other) => {
                    return Err(invalid(format!(
                        "rule '{}' must be a boolean expression, but yields {other}",
                        rule.name
                    )))
                }
                Err(e) => return Err(invalid(format!("rule '{}': {e}", rule.name))),
            }
            rules.push(CompiledRule { rule: rule.clone(), expr });
        }

        let comments: HashMap<&str, &str> = spec
            .columns
            .iter()
            .filter_map(|c| Some((c.name.as_str(), c.comment.as_deref()?)))
            .chain(
                spec.derived.iter().filter_map(|d| Some((d.name.as_str(), d.comment.as_deref()?))),
            )
            .collect();
        let table_fields: Vec<Field> = fields
            .iter()
            .map(|f| {
                let nullable =
                    spec.columns.iter().find(|c| c.name == *f.name()).is_none_or(|c| c.nullable);
                let field = Field::new(f.name(), f.data_type().clone(), nullable);
                match comments.get(f.name().as_str()) {
                    Some(comment) => field.with_metadata(HashMap::from([(
                        COMMENT_KEY.to_string(),
                        comment.to_string(),
                    )])),
                    None => field,
                }
            })
            .collect();
        let table_schema = Arc::new(Schema::new(table_fields));
        let unique_key = spec
            .unique_key
            .iter()
            .map(|k| table_schema.index_of(k).expect("validated: key columns exist"))
            .collect();
        Ok(Contract {
            types,
            input_schema,
            declared_schema,
            table_schema,
            derived,
            rules,
            unique_key,
        })
    }
}

/// Parses and plans one SQL expression against `schema` (type coercion included).
fn compile_expr(
    ctx: &SessionContext,
    sql: &str,
    schema: &Schema,
) -> std::result::Result<CompiledExpr, String> {
    let plan = || {
        let df_schema = Arc::new(DFSchema::try_from(schema.clone())?);
        let logical = ctx.parse_sql_expr(sql, &df_schema)?;
        let physical = plan_physical(ctx, &logical, &df_schema)?;
        let clock = logical
            .exists(|e| {
                Ok(matches!(e, Expr::ScalarFunction(f) if CLOCK_FUNCTIONS.contains(&f.name())))
            })
            .unwrap_or(true);
        Ok::<_, datafusion::error::DataFusionError>(CompiledExpr {
            ctx: ctx.clone(),
            logical,
            schema: df_schema,
            physical,
            clock,
        })
    };
    plan().map_err(|e| e.strip_backtrace())
}

/// The type a derived value is stored as: the produced type when Delta can store it, else the
/// nearest one that can (`None` when there is none).
pub fn storable(data_type: &DataType) -> Option<DataType> {
    Some(match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            DataType::Utf8
        }
        DataType::Boolean => DataType::Boolean,
        DataType::Int8 => DataType::Int8,
        DataType::Int16 => DataType::Int16,
        DataType::Int32 => DataType::Int32,
        DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64 => DataType::Int64,
        DataType::Float16 | DataType::Float32 | DataType::Float64 => DataType::Float64,
        DataType::Decimal128(p, s) => DataType::Decimal128(*p, *s),
        DataType::Date32 | DataType::Date64 => DataType::Date32,
        DataType::Timestamp(_, _) => DataType::Timestamp(TimeUnit::Microsecond, Some(UTC.into())),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => DataType::Binary,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: serde_json::Value) -> TableSpec {
        TableSpec::from_json(value, &[]).unwrap()
    }

    #[test]
    fn compiles_schemas_derived_and_rules() {
        let contract = Contract::compile(&spec(json!({
            "columns": [
                {"name": "email", "type": "string", "nullable": false, "comment": "lead e-mail"},
                {"name": "date_of_birth", "type": "date"},
                {"name": "submitted_at", "type": "timestamp"}
            ],
            "partition_by": ["submitted_date"],
            "unique_key": ["email"],
            "rules": [{"name": "adult", "check": "date_of_birth <= DATE '2004-01-01'"}],
            "derived": [
                {"name": "submitted_date", "expr": "CAST(submitted_at AS DATE)"},
                {"name": "domain", "expr": "split_part(email, '@', 2)"}
            ]
        })))
        .unwrap();
        let names: Vec<String> = contract
            .table_schema
            .fields()
            .iter()
            .map(|f| format!("{}:{}:{}", f.name(), f.data_type(), f.is_nullable()))
            .collect();
        assert_eq!(
            names,
            [
                "email:Utf8:false",
                "date_of_birth:Date32:true",
                "submitted_at:Timestamp(µs, \"UTC\"):true",
                "submitted_date:Date32:true",
                "domain:Utf8:true"
            ]
        );
        assert_eq!(contract.input_schema.field(1).data_type(), &DataType::Utf8);
        assert_eq!(contract.table_schema.field(0).metadata()[COMMENT_KEY], "lead e-mail");
        assert_eq!(contract.unique_key, vec![0]);
        assert_eq!(contract.rules.len(), 1);
    }

    #[test]
    fn bad_expressions_name_the_rule_or_column() {
        let err = Contract::compile(&spec(json!({
            "columns": [{"name": "a", "type": "int64"}],
            "rules": [{"name": "positive", "check": "b > 0"}]
        })))
        .unwrap_err()
        .to_string();
        assert!(err.contains("rule 'positive'"), "{err}");
        let err = Contract::compile(&spec(json!({
            "columns": [{"name": "a", "type": "int64"}],
            "rules": [{"name": "not_bool", "check": "a + 1"}]
        })))
        .unwrap_err()
        .to_string();
        assert!(err.contains("must be a boolean expression"), "{err}");
        let err = Contract::compile(&spec(json!({
            "columns": [{"name": "a", "type": "int64"}],
            "derived": [{"name": "b", "expr": "a +"}]
        })))
        .unwrap_err()
        .to_string();
        assert!(err.contains("derived column 'b'"), "{err}");
    }
}
