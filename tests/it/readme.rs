//! The README's examples run as written, and compose.yaml stays consistent with itself.

use serde_json::Value;
use tarn_lake::test_util::{python, Backend};

use crate::support::TestServer;

fn read(file: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap()
}

/// The shell blocks that follow the README's marker comments, in order.
fn tested_blocks(readme: &str) -> Vec<String> {
    readme
        .match_indices("<!-- The block below is run by tests/it/readme.rs")
        .map(|(start, _)| {
            let rest = &readme[start..];
            let open = rest.find("```sh\n").expect("a sh block after the marker") + "```sh\n".len();
            let close = rest[open..].find("\n```").expect("the block ends");
            rest[open..open + close].to_string()
        })
        .collect()
}

/// Runs a README block against a fresh server, checks that every promised output appears in
/// order, and returns what it printed.
async fn run_block(block: &str) -> String {
    let server = TestServer::start(Backend::Local).await;
    let expected: Vec<&str> = block.lines().filter_map(|l| l.strip_prefix("# → ")).collect();
    assert!(expected.len() >= 5, "the README shows the outputs it promises");

    // Run the block as it is, against this server; each "# →" ends the previous output line.
    let script: String = block
        .lines()
        .map(|l| {
            if l.starts_with("# → ") {
                "echo".to_string()
            } else {
                l.replace("localhost:8080", &server.addr.to_string())
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    // The block polls where it waits for a commit; a poll that never ends fails here.
    let run = tokio::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&script)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(std::time::Duration::from_secs(120), run)
        .await
        .unwrap_or_else(|_| panic!("the README block did not finish within 120 s:\n{block}"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));

    // Every promised output appears, in order.
    let mut lines = stdout.lines();
    for want in &expected {
        assert!(
            lines.any(|line| line == *want),
            "README promises `{want}`; the examples printed:\n{stdout}"
        );
    }
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_curl_examples_work_as_written() {
    let blocks = tested_blocks(&read("README.md"));
    assert_eq!(blocks.len(), 4, "the first steps, the data contract, the queries, the jobs");
    let stdout = run_block(&blocks[0]).await;
    // The last example prints the table's catalog entry.
    let last = stdout.lines().last().unwrap();
    let table: Value = serde_json::from_str(last).unwrap();
    assert_eq!(table["stats"]["rows"], 3);
    assert_eq!(table["stats"]["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_contract_example_works_as_written() {
    let blocks = tested_blocks(&read("README.md"));
    run_block(&blocks[1]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_query_example_works_as_written() {
    let blocks = tested_blocks(&read("README.md"));
    run_block(&blocks[2]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_jobs_example_works_as_written() {
    let blocks = tested_blocks(&read("README.md"));
    run_block(&blocks[3]).await;
}

#[tokio::test]
async fn compose_file_is_consistent() {
    let output = tokio::process::Command::new(python())
        .arg("-c")
        .arg("import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))")
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("compose.yaml"))
        .output()
        .await
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let compose: Value = serde_json::from_slice(&output.stdout).unwrap();
    let services = &compose["services"];
    let minio = &services["minio"];
    let tarn = &services["tarn"]["environment"];

    // Tarn's lake is in the bucket the one-shot service creates, on the MinIO service.
    let lake = tarn["TARN_LAKE"].as_str().unwrap();
    let bucket = lake.strip_prefix("s3://").unwrap().split('/').next().unwrap();
    let create = services["create-bucket"]["command"][0].as_str().unwrap();
    assert!(create.contains(&format!("mc mb --ignore-existing lake/{bucket}")), "{create}");
    assert_eq!(tarn["AWS_ENDPOINT_URL"], "http://minio:9000");
    assert_eq!(tarn["AWS_ALLOW_HTTP"], "true");
    assert!(tarn.get("AWS_S3_ALLOW_UNSAFE_RENAME").is_none());
    // Tarn signs with the MinIO root credentials.
    assert_eq!(tarn["AWS_ACCESS_KEY_ID"], minio["environment"]["MINIO_ROOT_USER"]);
    assert_eq!(tarn["AWS_SECRET_ACCESS_KEY"], minio["environment"]["MINIO_ROOT_PASSWORD"]);
    // Start order: MinIO healthy → bucket created → Tarn.
    assert_eq!(minio["healthcheck"]["test"], serde_json::json!(["CMD", "mc", "ready", "local"]));
    assert_eq!(services["create-bucket"]["depends_on"]["minio"]["condition"], "service_healthy");
    assert_eq!(
        services["tarn"]["depends_on"]["create-bucket"]["condition"],
        "service_completed_successfully"
    );
    // Tarn listens on all interfaces inside its container, on the published port.
    assert_eq!(tarn["TARN_LISTEN"], "0.0.0.0:8080");
    assert_eq!(services["tarn"]["ports"][0], "8080:8080");
    assert_eq!(tarn["TARN_PG_LISTEN"], "0.0.0.0:5433");
    assert_eq!(services["tarn"]["ports"][1], "5433:5433");
    // Healthy means ready for traffic: /readyz on the port Tarn listens on, with curl, which
    // the Dockerfile's runtime image installs and its own HEALTHCHECK uses the same way.
    let check = &services["tarn"]["healthcheck"]["test"];
    assert_eq!(check, &serde_json::json!(["CMD", "curl", "-fsS", "http://127.0.0.1:8080/readyz"]));
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("curl -fsS http://127.0.0.1:8080/readyz"), "{dockerfile}");
    assert!(dockerfile.contains("ca-certificates curl"), "{dockerfile}");

    // The cluster profile: two servers and two workers on the same lake, the servers naming
    // the workers where they listen, one secret, workers not published.
    let secret = services["worker-1"]["environment"]["TARN_CLUSTER_SECRET"].as_str().unwrap();
    assert!(secret.len() >= tarn_query::cluster::ClusterConfig::MIN_SECRET_LEN, "{secret}");
    for worker in ["worker-1", "worker-2"] {
        let service = &services[worker];
        assert_eq!(service["profiles"], serde_json::json!(["cluster"]), "{worker}");
        assert_eq!(service["command"], serde_json::json!(["worker"]), "{worker}");
        assert!(service.get("ports").is_none(), "{worker} must not be published");
        let env = &service["environment"];
        assert_eq!(env["TARN_WORKER_LISTEN"], "0.0.0.0:7000", "{worker}");
        assert_eq!(env["TARN_CLUSTER_SECRET"], secret, "{worker}");
        for key in ["TARN_LAKE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
            assert_eq!(env[key], tarn[key], "{worker}: {key}");
        }
    }
    for (server, port) in [("tarn-a", "8081:8080"), ("tarn-b", "8082:8080")] {
        let service = &services[server];
        assert_eq!(service["profiles"], serde_json::json!(["cluster"]), "{server}");
        assert_eq!(service["ports"][0], port, "{server}");
        let env = &service["environment"];
        assert_eq!(env["TARN_WORKERS"], "http://worker-1:7000,http://worker-2:7000", "{server}");
        assert_eq!(env["TARN_CLUSTER_SECRET"], secret, "{server}");
        assert_eq!(env["TARN_LAKE"], tarn["TARN_LAKE"], "{server}");
        for worker in ["worker-1", "worker-2"] {
            assert!(service["depends_on"].get(worker).is_some(), "{server} after {worker}");
        }
    }
    // The default `docker compose up` starts no cluster service.
    assert!(services["tarn"].get("profiles").is_none());
}
