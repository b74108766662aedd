//! Arrow Flight SQL: ADBC's Flight SQL driver, the Flight SQL JDBC driver and other Arrow
//! clients read query results as Arrow, column by column, without the row-by-row encoding of
//! the Postgres protocol or JSON.
//!
//! The same rules as every other frontend:
//!
//! - **The same keys.** With API keys configured, every call carries one with the `query`
//!   scope (`admin` has it), as `authorization: Bearer <key>` (ADBC's
//!   `adbc.flight.sql.authorization_header`) or `x-tarn-key`; a Flight handshake with Basic
//!   credentials whose password is the key answers the bearer token to use. A missing or
//!   wrong key is `UNAUTHENTICATED`, a key without the scope `PERMISSION_DENIED`; the key's
//!   rate limit applies. With no keys, the endpoint is open, like the HTTP API.
//! - **Read-only.** Statements are checked by [`crate::policy`] (DDL, DML, `SET`, `COPY` are
//!   `PERMISSION_DENIED`); Substrait plans, updates, ingest and transactions are not offered.
//! - **The same limits.** Each statement's rows come from one execution slot of the engine's
//!   [`crate::Admission`] (a full queue is `RESOURCE_EXHAUSTED`), within the engine's time
//!   limit from admission to the last batch (`DEADLINE_EXCEEDED`), on the engine's memory
//!   pool; rows stream as they are computed.
//! - **The same catalog.** `GetCatalogs` answers `tarn`, `GetDbSchemas` the namespaces,
//!   `GetTables` the tables (with their Arrow schemas when asked), whether or not the client
//!   names the catalog; time travel (`events VERSION AS OF 3`) works in statements.
//!
//! Prepared statements are stateless: the handle is the statement's text, planned again when
//! it runs (so it sees the tables' latest versions). Parameters are not supported.

use std::pin::Pin;
use std::sync::Arc;

use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightServiceServer;
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery, CommandStatementQuery,
    ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::datasource::TableType;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tarn_catalog::auth::{Caller, KeyRing, Scope};
use tarn_catalog::limit::RateLimits;
use tarn_lake::{Classify, ErrorKind};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, Streaming};

use crate::provider::CATALOG_NAME;
use crate::{Error, QueryEngine};

type DataStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// The Flight SQL endpoint over a query engine.
#[derive(Clone)]
pub struct FlightSqlServer {
    engine: Arc<QueryEngine>,
    keys: Arc<KeyRing>,
    limits: Arc<RateLimits>,
}

impl FlightSqlServer {
    /// The endpoint over `engine`, with `keys` and their rate `limits`.
    pub fn new(engine: Arc<QueryEngine>, keys: Arc<KeyRing>, limits: Arc<RateLimits>) -> Self {
        FlightSqlServer { engine, keys, limits }
    }

    /// Serves Flight SQL on `listener` until `shutdown` completes (calls in flight finish).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), tonic::transport::Error> {
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tonic::transport::Server::builder()
            .add_service(FlightServiceServer::new(self))
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await
    }

    /// The caller of `metadata`'s key, if it may query (and is within its rate limit).
    fn authorize(&self, metadata: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        let key = presented_key(metadata);
        let caller = self
            .keys
            .authorize(key.as_deref(), false, None, &Scope::Query)
            .map_err(|e| to_status(e.kind, e.message))?;
        self.limits
            .admit(caller, false, self.keys.name_of(caller), "flight")
            .map_err(|refused| Status::resource_exhausted(refused.message))?;
        Ok(caller)
    }

    /// Plans `sql` (checked read-only) and answers its result's schema.
    async fn schema_of(&self, sql: &str) -> Result<SchemaRef, Status> {
        let planned = self.engine.plan(sql).await.map_err(status)?;
        Ok(planned.plan.schema())
    }

    /// A FlightInfo for `sql`, whose ticket is `ticket` (the statement, again).
    async fn info(
        &self,
        sql: &str,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.schema_of(sql).await?;
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket { ticket: ticket.into() }))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// Runs `sql` in an execution slot, within the engine's time limit, streaming its rows.
    async fn run(&self, sql: &str) -> Result<Response<DataStream>, Status> {
        let ticket = self.engine.admission().enter().map_err(status)?;
        let permit = ticket.admit().await;
        let limit = self.engine.config().timeout;
        let deadline = tokio::time::Instant::now() + limit;
        let planned = tokio::time::timeout_at(deadline, self.engine.plan(sql))
            .await
            .map_err(|_| status(Error::Timeout(limit)))?
            .map_err(status)?;
        let stream = planned.execute().map_err(status)?;
        let schema = stream.schema();
        // The slot is held, and the deadline kept, until the last batch.
        let batches =
            futures::stream::unfold(Some((stream, permit, planned)), move |state| async move {
                let (mut stream, permit, planned) = state?;
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    Ok(Some(Ok(batch))) => Some((Ok(batch), Some((stream, permit, planned)))),
                    Ok(Some(Err(e))) => {
                        Some((Err(FlightError::Tonic(Box::new(status(e.into())))), None))
                    }
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(FlightError::Tonic(Box::new(status(Error::Timeout(limit))))),
                        None,
                    )),
                }
            });
        Ok(Response::new(encode(schema, batches)))
    }
}

/// Record batches as Flight data (the schema first, also when there is no row).
fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> DataStream {
    Box::pin(FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(
        |e| match e {
            FlightError::Tonic(status) => *status,
            other => Status::internal(other.to_string()),
        },
    ))
}

/// One batch as Flight data.
fn encode_one(batch: RecordBatch) -> DataStream {
    let schema = batch.schema();
    encode(schema, futures::stream::once(async move { Ok(batch) }))
}

/// The key a call shows: `authorization: Bearer <key>` or `x-tarn-key: <key>`.
fn presented_key(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    if let Some(value) = metadata.get("authorization").and_then(|v| v.to_str().ok()) {
        let value = value.trim();
        if let Some(token) = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))
        {
            return Some(token.trim().to_string());
        }
    }
    metadata.get("x-tarn-key").and_then(|v| v.to_str().ok()).map(|v| v.trim().to_string())
}

/// The password of `authorization: Basic base64(user:password)`.
fn basic_password(metadata: &tonic::metadata::MetadataMap) -> Option<String> {
    use base64::Engine;
    let value = metadata.get("authorization")?.to_str().ok()?.trim();
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_string())
}

/// A gRPC status for an error of a kind.
fn to_status(kind: ErrorKind, message: String) -> Status {
    match kind {
        ErrorKind::BadInput | ErrorKind::Unprocessable | ErrorKind::UnsupportedFormat => {
            Status::invalid_argument(message)
        }
        ErrorKind::Unauthenticated => Status::unauthenticated(message),
        ErrorKind::Forbidden | ErrorKind::NotAllowed => Status::permission_denied(message),
        ErrorKind::NotFound => Status::not_found(message),
        ErrorKind::Conflict => Status::aborted(message),
        ErrorKind::TooLarge | ErrorKind::Busy => Status::resource_exhausted(message),
        ErrorKind::Timeout => Status::deadline_exceeded(message),
        ErrorKind::Unavailable => Status::unavailable(message),
        ErrorKind::NotSupported | ErrorKind::NotAcceptable => Status::unimplemented(message),
        _ => Status::internal(message),
    }
}

/// The gRPC status of a query error.
fn status(e: Error) -> Status {
    to_status(e.kind(), e.to_string())
}

/// The IPC bytes of `schema`, as Flight SQL's prepared-statement results carry it.
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(message.0)
}

/// What Flight SQL calls a table's type.
fn type_name(table_type: TableType) -> &'static str {
    match table_type {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServer {
    type FlightService = FlightSqlServer;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let key = basic_password(request.metadata()).or_else(|| presented_key(request.metadata()));
        self.keys
            .authorize(key.as_deref(), false, None, &Scope::Query)
            .map_err(|e| to_status(e.kind, e.message))?;
        let token = key.unwrap_or_default();
        let answer = HandshakeResponse { protocol_version: 0, payload: token.clone().into() };
        let mut response: Response<
            Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>,
        > = Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        if !token.is_empty() {
            let bearer = format!("Bearer {token}")
                .parse()
                .map_err(|_| Status::invalid_argument("the key is not a valid header value"))?;
            response.metadata_mut().insert("authorization", bearer);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        let ticket = TicketStatementQuery { statement_handle: query.query.clone().into() }
            .as_any()
            .encode_to_vec();
        self.info(&query.query, ticket, request.into_inner()).await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(request.metadata())?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec()).map_err(|_| {
            Status::invalid_argument("the ticket is not a statement of this server")
        })?;
        self.run(&sql).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        let sql = handle_text(&query.prepared_statement_handle)?;
        let ticket = query.as_any().encode_to_vec();
        self.info(&sql, ticket, request.into_inner()).await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(request.metadata())?;
        let sql = handle_text(&query.prepared_statement_handle)?;
        self.run(&sql).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(request.metadata())?;
        let schema = self.schema_of(&query.query).await?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into(),
            dataset_schema: schema_bytes(&schema)?,
            parameter_schema: schema_bytes(&Schema::empty())?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        self.authorize(request.metadata())?;
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        let schema = query.into_builder().schema();
        metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(request.metadata())?;
        let mut builder = query.into_builder();
        builder.append(CATALOG_NAME);
        let batch = builder.build().map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(encode_one(batch)))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(request.metadata())?;
        let wanted = query.catalog.clone();
        let mut builder = query.into_builder();
        if wanted.as_deref().is_none_or(|c| c == CATALOG_NAME) {
            let session = self.engine.session().await.map_err(status)?;
            if let Some(catalog) = session.catalog(CATALOG_NAME) {
                let mut names = catalog.schema_names();
                names.sort();
                for name in names {
                    builder.append(CATALOG_NAME, name);
                }
            }
        }
        let batch = builder.build().map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(encode_one(batch)))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        let schema = query.clone().into_builder().schema();
        metadata_info(&schema, query.as_any(), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(request.metadata())?;
        let wanted = query.catalog.clone();
        let with_schema = query.include_schema;
        let mut builder = query.into_builder();
        if wanted.as_deref().is_none_or(|c| c == CATALOG_NAME) {
            let session = self.engine.session().await.map_err(status)?;
            if let Some(catalog) = session.catalog(CATALOG_NAME) {
                let mut namespaces = catalog.schema_names();
                namespaces.sort();
                for namespace in namespaces {
                    let Some(tables) = catalog.schema(&namespace) else { continue };
                    let mut names = tables.table_names();
                    names.sort();
                    for name in names {
                        let provider =
                            tables.table(&name).await.map_err(|e| status(Error::from(e)))?;
                        let Some(provider) = provider else { continue };
                        let schema =
                            if with_schema { provider.schema() } else { Arc::new(Schema::empty()) };
                        builder
                            .append(
                                CATALOG_NAME,
                                &namespace,
                                &name,
                                type_name(provider.table_type()),
                                &schema,
                            )
                            .map_err(|e| Status::internal(e.to_string()))?;
                    }
                }
            }
        }
        let batch = builder.build().map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(encode_one(batch)))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(request.metadata())?;
        metadata_info(&table_types().schema(), query.as_any(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DataStream>, Status> {
        self.authorize(request.metadata())?;
        Ok(Response::new(encode_one(table_types())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The table types there are: `TABLE` (the lake's), `VIEW` (`information_schema`'s).
fn table_types() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![arrow::datatypes::Field::new(
        "table_type",
        arrow::datatypes::DataType::Utf8,
        false,
    )]));
    RecordBatch::try_new(
        schema,
        vec![Arc::new(arrow::array::StringArray::from(vec!["TABLE", "VIEW"]))],
    )
    .expect("a valid batch")
}

/// A FlightInfo for a catalog command: its schema, and the command itself as the ticket.
fn metadata_info(
    schema: &Schema,
    command: Any,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(
            FlightEndpoint::new().with_ticket(Ticket { ticket: command.encode_to_vec().into() }),
        )
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// The statement a prepared-statement handle carries.
fn handle_text(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec())
        .map_err(|_| Status::invalid_argument("the prepared statement is not one of this server"))
}
