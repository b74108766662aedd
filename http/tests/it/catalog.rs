//! The catalog over HTTP.

use arrow::datatypes::{DataType, Field, Schema};
use axum::http::StatusCode;
use tarn_catalog::TableName;
use tarn_lake::backend_tests;
use tarn_lake::test_util::Backend;

use crate::support::{call, Fixture};

fn schema() -> Schema {
    Schema::new(vec![
        Field::new("email", DataType::Utf8, true),
        Field::new("score", DataType::Int64, true),
    ])
}

backend_tests!(api_answers);

async fn api_answers(backend: Backend) {
    let f = Fixture::new(backend, |_| {}).await;
    let name = TableName::parse("events").unwrap();
    f.catalog.create(&name, &schema(), &[], "api").await.unwrap();
    let router = f.router.clone();

    let (status, body) = call(&router, "GET", "/v1/tables", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["tables"][0]["qualified_name"], "default.events");

    let (status, body) = call(&router, "GET", "/v1/tables/default.events", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["columns"][1]["name"], "score");
    assert_eq!(body["columns"][1]["type"], "int64");
    assert_eq!(body["stats"]["version"], 0);

    let (status, body) = call(&router, "GET", "/v1/tables/events/history", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["commits"][0]["operation"], "CREATE TABLE");

    let (status, body) = call(&router, "GET", "/v1/tables/nope", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("default.nope"));

    let (status, body) = call(&router, "GET", "/v1/tables/bad-name", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["error"]["message"].as_str().unwrap().contains("not '-'"));

    let (status, _) =
        call(&router, "DELETE", "/v1/tables/events?purge=maybe", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) =
        call(&router, "DELETE", "/v1/tables/events?purge=true", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = call(&router, "GET", "/v1/tables/events", &[], Vec::new()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}
