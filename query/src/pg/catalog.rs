//! The lake's tables for a long-lived Postgres session.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};

use datafusion::catalog::{CatalogProvider, SchemaProvider};
use tarn_catalog::Catalog;

use crate::provider::LakeCatalog;
use crate::scan::Scans;

/// Catalog `tarn` for a long-lived session: the lake's tables, re-listed by
/// [`LiveCatalog::refresh`] (before every query), plus the schemas registered on it
/// (`pg_catalog`).
#[derive(Debug)]
pub(super) struct LiveCatalog {
    catalog: Arc<Catalog>,
    scans: Arc<Scans>,
    lake: RwLock<Arc<LakeCatalog>>,
    extra: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
}

impl LiveCatalog {
    pub fn new(catalog: Arc<Catalog>, scans: Arc<Scans>) -> Self {
        let lake =
            Arc::new(LakeCatalog::new(catalog.clone(), Vec::new(), Arc::default(), scans.clone()));
        LiveCatalog { catalog, scans, lake: RwLock::new(lake), extra: RwLock::default() }
    }

    /// Re-reads the table names from the catalog. Reads are not recorded: this session
    /// neither reuses results nor reports versions.
    pub async fn refresh(&self) -> crate::Result<()> {
        let names = LakeCatalog::names(&self.catalog).await?;
        let lake = Arc::new(
            LakeCatalog::new(
                self.catalog.clone(),
                names,
                Arc::new(Mutex::default()),
                self.scans.clone(),
            )
            .latest_at_scan(),
        );
        *self.lake.write().expect("catalog lock") = lake;
        Ok(())
    }

    fn lake(&self) -> Arc<LakeCatalog> {
        self.lake.read().expect("catalog lock").clone()
    }
}

impl CatalogProvider for LiveCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names = self.lake().schema_names();
        names.extend(self.extra.read().expect("catalog lock").keys().cloned());
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(schema) = self.extra.read().expect("catalog lock").get(name) {
            return Some(schema.clone());
        }
        self.lake().schema(name)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn SchemaProvider>>> {
        Ok(self.extra.write().expect("catalog lock").insert(name.to_string(), schema))
    }
}

/// `pg_type_is_visible(oid)`, which SQLAlchemy's column reflection asks about every type it
/// lists (pg_catalog has `pg_table_is_visible` only): every type Tarn has is in the search
/// path, so it is true for every type, and null for null.
pub(super) fn pg_type_is_visible() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, BooleanArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    datafusion::logical_expr::create_udf(
        "pg_type_is_visible",
        vec![DataType::Int32],
        DataType::Boolean,
        Volatility::Immutable,
        std::sync::Arc::new(|args: &[ColumnarValue]| {
            Ok(match &args[0] {
                ColumnarValue::Scalar(value) => ColumnarValue::Scalar(
                    datafusion::common::ScalarValue::Boolean((!value.is_null()).then_some(true)),
                ),
                ColumnarValue::Array(oids) => {
                    let visible: BooleanArray =
                        (0..oids.len()).map(|i| oids.is_valid(i).then_some(true)).collect();
                    ColumnarValue::Array(std::sync::Arc::new(visible))
                }
            })
        }),
    )
}

/// The OIDs of PostgreSQL's built-in types, by every name `to_regtype` takes for them.
const BUILTIN_TYPES: &[(&str, i32)] = &[
    ("bool", 16),
    ("boolean", 16),
    ("bytea", 17),
    ("int8", 20),
    ("bigint", 20),
    ("int2", 21),
    ("smallint", 21),
    ("int4", 23),
    ("integer", 23),
    ("int", 23),
    ("text", 25),
    ("oid", 26),
    ("json", 114),
    ("float4", 700),
    ("real", 700),
    ("float8", 701),
    ("double precision", 701),
    ("varchar", 1043),
    ("character varying", 1043),
    ("date", 1082),
    ("time", 1083),
    ("timestamp", 1114),
    ("timestamp without time zone", 1114),
    ("timestamptz", 1184),
    ("timestamp with time zone", 1184),
    ("interval", 1186),
    ("numeric", 1700),
    ("decimal", 1700),
    ("uuid", 2950),
    ("jsonb", 3802),
];

/// `to_regtype(name)`: the OID of a built-in type, or null for a type Tarn does not have
/// (psycopg 3 asks it for `hstore` when SQLAlchemy connects; null says "no such extension").
pub(super) fn to_regtype() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, Int32Array, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    fn oid(name: &str) -> Option<i32> {
        let name = name.trim().trim_start_matches("pg_catalog.").to_ascii_lowercase();
        BUILTIN_TYPES.iter().find(|(n, _)| *n == name).map(|(_, oid)| *oid)
    }
    datafusion::logical_expr::create_udf(
        "to_regtype",
        vec![DataType::Utf8],
        DataType::Int32,
        Volatility::Immutable,
        std::sync::Arc::new(|args: &[ColumnarValue]| {
            Ok(match &args[0] {
                ColumnarValue::Scalar(value) => {
                    let name = match value {
                        datafusion::common::ScalarValue::Utf8(Some(name)) => oid(name),
                        _ => None,
                    };
                    ColumnarValue::Scalar(datafusion::common::ScalarValue::Int32(name))
                }
                ColumnarValue::Array(names) => {
                    let names = datafusion::arrow::compute::cast(names, &DataType::Utf8)?;
                    let names = names.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                        datafusion::error::DataFusionError::Internal("to_regtype: not text".into())
                    })?;
                    let oids: Int32Array = (0..names.len())
                        .map(|i| names.is_valid(i).then(|| oid(names.value(i))).flatten())
                        .collect();
                    ColumnarValue::Array(std::sync::Arc::new(oids))
                }
            })
        }),
    )
}

/// `current_setting(name)`: the server's settings as clients read them at connection
/// (`server_version`, `server_version_num`, `search_path`, ...; Grafana reads the version and
/// the search path this way). They are the server's, shared by every session: a `SET` in one
/// session is acknowledged but not seen here. A name Tarn does not have fails as in
/// PostgreSQL ("unrecognized configuration parameter").
pub(super) fn current_setting(
    settings: BTreeMap<String, String>,
) -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    let settings: BTreeMap<String, String> =
        settings.into_iter().map(|(name, value)| (name.to_ascii_lowercase(), value)).collect();
    let lookup = move |name: &str| {
        settings.get(&name.trim().to_ascii_lowercase()).cloned().ok_or_else(|| {
            datafusion::error::DataFusionError::Execution(format!(
                "unrecognized configuration parameter \"{name}\""
            ))
        })
    };
    datafusion::logical_expr::create_udf(
        "current_setting",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Stable,
        Arc::new(move |args: &[ColumnarValue]| {
            Ok(match &args[0] {
                ColumnarValue::Scalar(value) => {
                    ColumnarValue::Scalar(ScalarValue::Utf8(match value {
                        ScalarValue::Utf8(Some(name))
                        | ScalarValue::LargeUtf8(Some(name))
                        | ScalarValue::Utf8View(Some(name)) => Some(lookup(name)?),
                        _ => None,
                    }))
                }
                ColumnarValue::Array(names) => {
                    let names = datafusion::arrow::compute::cast(names, &DataType::Utf8)?;
                    let names = names.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                        datafusion::error::DataFusionError::Internal(
                            "current_setting: not text".into(),
                        )
                    })?;
                    let values = (0..names.len())
                        .map(|i| names.is_valid(i).then(|| lookup(names.value(i))).transpose())
                        .collect::<datafusion::error::Result<StringArray>>()?;
                    ColumnarValue::Array(Arc::new(values))
                }
            })
        }),
    )
}

#[cfg(test)]
mod function_tests {
    use datafusion::prelude::SessionContext;

    /// The answer to `sql` as an aligned text table.
    async fn answer(ctx: &SessionContext, sql: &str) -> String {
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        datafusion::arrow::util::pretty::pretty_format_batches(&batches).unwrap().to_string()
    }

    #[tokio::test]
    async fn type_functions_answer_like_postgres() {
        let ctx = SessionContext::new();
        ctx.register_udf(super::to_regtype());
        ctx.register_udf(super::pg_type_is_visible());
        let text = answer(
            &ctx,
            "SELECT to_regtype('int4'), to_regtype('Double Precision'), to_regtype('hstore'), pg_type_is_visible(CAST(23 AS INT))",
        )
        .await;
        let row = text.lines().nth(3).unwrap();
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        assert_eq!(cells[1..cells.len() - 1], ["23", "701", "", "true"], "{text}");
    }

    #[tokio::test]
    async fn current_setting_reads_the_servers_settings() {
        let ctx = SessionContext::new();
        let settings = [("server_version_num", "160006"), ("search_path", "\"default\"")];
        ctx.register_udf(super::current_setting(
            settings.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        ));
        let text = answer(
            &ctx,
            "SELECT current_setting('server_version_num')::int/100 AS v, current_setting('Search_Path') AS p",
        )
        .await;
        assert!(text.contains("| 1600 | \"default\" |"), "{text}");
        let error = ctx.sql("SELECT current_setting('no_such')").await.unwrap().collect().await;
        let error = error.unwrap_err().to_string();
        assert!(error.contains("unrecognized configuration parameter \"no_such\""), "{error}");
    }
}
