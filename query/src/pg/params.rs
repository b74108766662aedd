//! The types of a prepared statement's parameters, by position.
//!
//! datafusion-postgres lists the placeholders its plan still has in order and takes the
//! n-th of them for the n-th parameter. That holds only while the plan has every
//! placeholder from `$1` on: its SQL rewrites drop some (a scalar subquery in a select list
//! becomes `NULL`, and its placeholders with it), so in SQLAlchemy's column reflection
//! (`$1`..`$9` in dropped subqueries, `$10` a `SMALLINT`) the first parameter, a string, was
//! read as `$10`'s number: "Failed to parse parameter: invalid digit found in string".
//! Here `$n` is the n-th parameter whatever else the plan holds, a type the client named in
//! its Parse message wins (at Bind, in arrow-pg), and a parameter the plan no longer has or
//! does not type is text, as PostgreSQL takes an untyped parameter.

use std::collections::HashMap;

use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::ParamValues;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types;
use datafusion_postgres::arrow_pg::datatypes::{
    into_pg_type, pg_type_for_alias_kind, PG_OID_ALIAS_KEY,
};
use datafusion_postgres::pgwire;
use pgwire::api::portal::Portal;
use pgwire::api::Type;
use pgwire::error::{PgWireError, PgWireResult};

/// One parameter: the type the plan gives it (if any) and the type reported to clients
/// (`ParameterDescription`) and used to read a value the client sent without a type.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Parameter {
    pub inferred: Option<DataType>,
    pub wire: Type,
}

/// The parameters of `plan` by position (`$1` first), as many as its highest placeholder.
pub(super) fn parameters(plan: &LogicalPlan) -> PgWireResult<Vec<Parameter>> {
    let mut found: HashMap<usize, Parameter> = HashMap::new();
    plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Some((position, parameter)) = placeholder(e)? {
                    let known = found.get(&position).is_some_and(|p| p.inferred.is_some());
                    if !known {
                        found.insert(position, parameter);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    })
    .map_err(|e| PgWireError::ApiError(Box::new(e)))?;
    let count = found.keys().max().copied().unwrap_or(0);
    Ok((1..=count).map(|n| found.remove(&n).unwrap_or_else(untyped)).collect())
}

/// A parameter the plan does not type: text, as PostgreSQL resolves an unknown parameter.
fn untyped() -> Parameter {
    Parameter { inferred: None, wire: Type::TEXT }
}

/// `$n` (or `CAST($n AS t)`) in `expr`: its position and type. A placeholder DataFusion
/// typed from what it is compared with carries that type (a `pg.oid_alias` column's is
/// reported as `oid`, so drivers bind their OIDs); an untyped one inside a cast takes the
/// cast's type.
fn placeholder(expr: &Expr) -> datafusion::error::Result<Option<(usize, Parameter)>> {
    let (placeholder, cast) = match expr {
        Expr::Placeholder(p) => (p, None),
        Expr::Cast(c) => match c.expr.as_ref() {
            Expr::Placeholder(p) => (p, Some(c.field.data_type())),
            _ => return Ok(None),
        },
        _ => return Ok(None),
    };
    let Some(position) = placeholder.id.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
    else {
        return datafusion::common::plan_err!(
            "parameter {} is not numbered like $1, $2, ...",
            placeholder.id
        );
    };
    if position == 0 {
        return datafusion::common::plan_err!("parameters are numbered from $1, not $0");
    }
    let field: Option<&Field> = placeholder.field.as_deref();
    let inferred = field.map(|f| f.data_type().clone()).or_else(|| cast.cloned());
    let alias = field
        .filter(|f| f.data_type() == &DataType::Int32)
        .and_then(|f| f.metadata().get(PG_OID_ALIAS_KEY))
        .and_then(|kind| pg_type_for_alias_kind(kind));
    let wire = match (alias, &inferred) {
        (Some(alias), _) => alias,
        (None, Some(datatype)) => into_pg_type(datatype).unwrap_or(Type::TEXT),
        (None, None) => Type::TEXT,
    };
    Ok(Some((position, Parameter { inferred, wire })))
}

/// The values bound in `portal` for `plan`'s parameters, each read by position: with the
/// type the client named for it, else the one [`parameters`] gives it, else as text.
pub(super) fn bind<S: Clone>(portal: &Portal<S>, plan: &LogicalPlan) -> PgWireResult<ParamValues> {
    let mut parameters = parameters(plan)?;
    parameters.resize_with(parameters.len().max(portal.parameter_len()), untyped);
    let inferred: Vec<Option<&DataType>> = parameters.iter().map(|p| p.inferred.as_ref()).collect();
    let wire: Vec<Option<&Type>> = parameters.iter().map(|p| Some(&p.wire)).collect();
    deserialize_parameters_with_server_types(portal, &inferred, &wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    async fn plan(sql: &str) -> LogicalPlan {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (n BIGINT, s VARCHAR)").await.unwrap();
        ctx.state().create_logical_plan(sql).await.unwrap()
    }

    fn wire(parameters: &[Parameter]) -> Vec<Type> {
        parameters.iter().map(|p| p.wire.clone()).collect()
    }

    #[tokio::test]
    async fn parameters_are_typed_by_their_number_not_their_rank() {
        // $1 and $2 are not in the plan (as after datafusion-pg-catalog drops a subquery of
        // the select list): $3 is still the third parameter.
        let p = plan("SELECT s FROM t WHERE n > $3::SMALLINT AND s = $4").await;
        assert_eq!(
            wire(&parameters(&p).unwrap()),
            [Type::TEXT, Type::TEXT, Type::INT2, Type::TEXT]
        );
    }

    #[tokio::test]
    async fn parameters_take_the_type_of_what_they_meet_or_their_cast() {
        let p = plan("SELECT $2 AS free, s FROM t WHERE n = $1 AND s = $3::VARCHAR").await;
        let parameters = parameters(&p).unwrap();
        assert_eq!(wire(&parameters), [Type::INT8, Type::TEXT, Type::TEXT]);
        assert_eq!(parameters[0].inferred, Some(DataType::Int64));
        assert_eq!(parameters[1].inferred, None);
    }

    #[tokio::test]
    async fn a_plan_without_parameters_has_none() {
        assert!(parameters(&plan("SELECT 1").await).unwrap().is_empty());
    }
}
