//! Queries distributed over workers: two `serve_worker`s on loopback gRPC ports, reading the
//! lake with their own handle (their own credentials on S3), and a serving engine that plans
//! on them. The 22 TPC-H answers equal the single-node ones; EXPLAIN shows the stages; a
//! worker that is down or a wrong secret fails a query with 503, and queries go on on the
//! workers that answer.

use std::sync::Arc;
use std::time::Duration;

use tarn_catalog::Catalog;
use tarn_lake::backend_tests;
use tarn_lake::test_util::{Backend, TestLake};
use tarn_lake::{Classify, ErrorKind};
use tarn_query::cluster::{serve_worker, ClusterConfig, PROBE_EVERY};
use tarn_query::{QueryConfig, QueryEngine};
use tokio::sync::oneshot;
use url::Url;

use crate::tpch::{answer, load, QUERIES};

const SECRET: &str = "a-test-cluster-secret";

/// A worker on a free loopback port; dropping the sender stops it.
struct TestWorker {
    url: Url,
    stop: Option<oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<()>,
}

impl TestWorker {
    async fn start(lake: &TestLake) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
        let handle = Arc::new(lake.open().await);
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve_worker(handle, &QueryConfig::default(), SECRET, listener, shutdown)
                .await
                .unwrap();
        });
        TestWorker { url, stop: Some(stop), served }
    }

    async fn stop(mut self) {
        drop(self.stop.take());
        self.served.abort();
        let _ = self.served.await;
    }
}

/// A serving engine over `workers`; scans get a task per 64 KiB, so that the small tables of
/// the test spread over both workers.
fn engine(catalog: &Arc<Catalog>, workers: &[&TestWorker], secret: &str) -> QueryEngine {
    engine_probing(catalog, workers, secret, PROBE_EVERY)
}

fn engine_probing(
    catalog: &Arc<Catalog>,
    workers: &[&TestWorker],
    secret: &str,
    probe_every: Duration,
) -> QueryEngine {
    let cluster = ClusterConfig {
        workers: workers.iter().map(|w| w.url.clone()).collect(),
        secret: secret.into(),
        bytes_per_task: 64 << 10,
        probe_every,
    };
    QueryEngine::new(
        catalog.clone(),
        QueryConfig { cluster: Some(cluster), ..QueryConfig::default() },
    )
    .unwrap()
}

/// The error `sql` fails with, planning or running.
async fn failing(engine: &QueryEngine, sql: &str) -> tarn_query::Error {
    match engine.execute(sql).await {
        Ok(stream) => futures::TryStreamExt::try_collect::<Vec<_>>(stream)
            .await
            .map_err(tarn_query::Error::from)
            .expect_err("the query fails"),
        Err(e) => e,
    }
}

backend_tests!(tpch_answers_match_single_node);

async fn tpch_answers_match_single_node(backend: Backend) {
    let lake = TestLake::new(backend);
    let catalog = Arc::new(Catalog::new(Arc::new(lake.open().await)));
    load(&catalog).await;
    let one = TestWorker::start(&lake).await;
    let two = TestWorker::start(&lake).await;
    let three = TestWorker::start(&lake).await;
    let single = QueryEngine::new(catalog.clone(), QueryConfig::default()).unwrap();
    let cluster = engine(&catalog, &[&one, &two, &three], SECRET);

    // The plan of a join: stages, tasks on the three workers.
    let explain = answer(
        &cluster,
        "EXPLAIN SELECT o_orderpriority, count(*) FROM orders JOIN lineitem ON l_orderkey = o_orderkey \
         GROUP BY o_orderpriority",
    )
    .await
    .join("\n");
    println!("{explain}");
    assert!(explain.contains("distributed_plan"), "{explain}");
    assert!(explain.contains("DistributedExec"), "{explain}");
    assert!(explain.contains("Stage 1") && explain.contains("tasks=3"), "{explain}");

    let mut distributed = 0;
    for (name, sql) in QUERIES {
        let ours = answer(&cluster, sql).await;
        let theirs = answer(&single, sql).await;
        assert_eq!(ours, theirs, "{name}: the cluster and a single node differ");
        assert!(ours.len() >= 5, "{name} answered no row: {ours:?}");
        let plan = answer(&cluster, &format!("EXPLAIN {sql}")).await.join("\n");
        distributed += usize::from(plan.contains("DistributedExec"));
    }
    println!("the 22 TPC-H answers agree; {distributed} of 22 ran on the workers");
    assert!(distributed >= 20, "only {distributed} of the 22 queries were distributed");

    // A wrong secret: the workers refuse, the query fails as unavailable (503), said why.
    let intruder = engine(&catalog, &[&one, &two, &three], "not-the-cluster-secret");
    let refused = failing(&intruder, QUERIES[2].1).await;
    println!("a wrong secret: {refused}");
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(refused.to_string().contains("secret"), "{refused}");

    // One worker stops: a query planned on it (by an engine that has not probed since) fails
    // with 503; once the probe saw it go, queries run on the two others.
    let unaware =
        engine_probing(&catalog, &[&one, &two, &three], SECRET, Duration::from_secs(3600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    two.stop().await;
    let failed = failing(&unaware, QUERIES[2].1).await;
    assert_eq!(failed.kind(), ErrorKind::Unavailable, "{failed}");
    assert!(failed.retry_after().is_some(), "{failed}");
    println!("a worker down mid-plan: {failed}");
    tokio::time::sleep(PROBE_EVERY + Duration::from_millis(1500)).await;
    let (name, sql) = QUERIES[2];
    assert_eq!(answer(&cluster, sql).await, answer(&single, sql).await, "{name} on two workers");
    let plan = answer(&cluster, &format!("EXPLAIN {sql}")).await.join("\n");
    assert!(plan.contains("tasks=2"), "still distributed, on two workers: {plan}");
    one.stop().await;
    three.stop().await;
}
