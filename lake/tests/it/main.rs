//! Storage tests of `tarn-lake`, each run on a temp dir and on the S3 test server.

use std::sync::Arc;

use arrow::array::{Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use object_store::ObjectStoreExt;
use tarn_lake::deltalake::datafusion::prelude::SessionContext;
use tarn_lake::test_util::{Backend, TestLake};
use tarn_lake::{backend_tests, Error, LakeTable};

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn batch(ids: std::ops::Range<i64>) -> RecordBatch {
    let names: Vec<String> = ids.clone().map(|i| format!("n{i}")).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(ids)),
            Arc::new(StringArray::from_iter_values(names)),
        ],
    )
    .unwrap()
}

/// The table's `(id, name)` rows, by id.
async fn read_sorted(table: &LakeTable) -> Vec<(i64, String)> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let ctx = SessionContext::new();
    table.delta().update_datafusion_session(&ctx.state()).unwrap();
    let provider = table.delta().table_provider().await.unwrap();
    ctx.register_table("t", provider).unwrap();
    let sql = "SELECT id, name FROM t ORDER BY id";
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let ids = b.column(0).as_primitive::<Int64Type>();
            // Strings may come back as views; compare them as plain strings.
            let names = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            let names = names.as_string::<i32>();
            (0..b.num_rows())
                .map(|i| (ids.value(i), names.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

backend_tests!(
    create_append_stats_history,
    create_is_idempotent,
    missing_table_is_not_found,
    concurrent_writers_lose_no_commit,
    delete_prefix_removes_the_table,
    clustered_compaction_sorts_each_bin,
    staged_rows_commit_as_one_append,
    exact_commits_see_what_others_added,
    appended_files_have_small_pages_and_dictionaries,
    compaction_stitches_large_row_groups_and_rewrites_small_ones,
);

async fn create_append_stats_history(backend: Backend) {
    let test = TestLake::new(backend);
    let lake = test.open().await;
    let table = lake.create_table("default/people", &schema(), &[]).await.unwrap();
    assert_eq!(table.version(), 0);
    assert_eq!(table.stats().rows, Some(0));

    let table = table.append(vec![batch(0..2)]).await.unwrap();
    let table = table.append(vec![batch(2..3), batch(3..5)]).await.unwrap();
    assert_eq!(table.version(), 2, "each append is exactly one commit");

    let stats = table.stats();
    assert_eq!(stats.version, 2);
    assert_eq!(stats.rows, Some(5));
    assert!(stats.files >= 2, "{stats:?}");
    assert!(stats.bytes > 0);
    assert!(stats.last_commit.is_some());

    let history = table.history(10).await.unwrap();
    let summary: Vec<_> =
        history.iter().map(|c| (c.version, c.operation.clone().unwrap(), c.rows_added)).collect();
    assert_eq!(
        summary,
        vec![
            (2, "WRITE".to_string(), Some(3)),
            (1, "WRITE".to_string(), Some(2)),
            (0, "CREATE TABLE".to_string(), Some(0)),
        ]
    );

    // A second handle (a fresh client) reads the same rows, and sees new commits on refresh.
    let other_lake = test.open().await;
    let mut other = other_lake.open_table("default/people").await.unwrap();
    assert_eq!(other.schema().unwrap().fields(), schema().fields());
    let expected: Vec<(i64, String)> = (0..5).map(|i| (i, format!("n{i}"))).collect();
    assert_eq!(read_sorted(&other).await, expected);
    table.append(vec![batch(5..6)]).await.unwrap();
    assert!(other.refresh().await.unwrap());
    assert_eq!(other.stats().rows, Some(6));
}

async fn create_is_idempotent(backend: Backend) {
    let test = TestLake::new(backend);
    let lake = test.open().await;
    let first = lake.create_table("ns/t", &schema(), &["name".to_string()]).await.unwrap();
    first.append(vec![batch(0..3)]).await.unwrap();
    let again = lake.create_table("ns/t", &schema(), &["name".to_string()]).await.unwrap();
    assert_eq!(again.stats().rows, Some(3), "creating again must not reset the table");
    assert_eq!(again.partition_columns().unwrap(), vec!["name".to_string()]);
    assert!(lake.table_exists("ns/t").await.unwrap());

    let err = lake.create_table("ns/u", &schema(), &["nope".to_string()]).await.unwrap_err();
    assert!(err.to_string().contains("partition column 'nope'"), "{err}");
}

async fn missing_table_is_not_found(backend: Backend) {
    let test = TestLake::new(backend);
    let lake = test.open().await;
    match lake.open_table("default/absent").await {
        Err(Error::TableNotFound { location }) => assert!(location.ends_with("default/absent/")),
        other => panic!("expected TableNotFound, got {other:?}"),
    }
    assert!(!lake.table_exists("default/absent").await.unwrap());
}

/// Two writers with separate object-store clients append to one table 20 times each, at the
/// same moment. Every commit must land: 1 create + 40 writes, and all rows.
async fn concurrent_writers_lose_no_commit(backend: Backend) {
    const COMMITS: i64 = 20;
    const ROWS: i64 = 10;
    let test = TestLake::new(backend);
    test.open().await.create_table("default/contended", &schema(), &[]).await.unwrap();

    // Each writer keeps the version every append reported, so that a failure can tell a commit
    // Tarn lost from two writers both told they committed one version (the store accepted two
    // `If-None-Match: *` PUTs of one log file: a store that does not honour conditional put).
    let writer = |offset: i64| {
        let test_lake = &test;
        async move {
            let lake = test_lake.open().await; // its own object store client
            let mut table = lake.open_table("default/contended").await.unwrap();
            let mut versions = Vec::new();
            for i in 0..COMMITS {
                let start = offset + i * ROWS;
                table = table.append(vec![batch(start..start + ROWS)]).await.unwrap();
                versions.push(table.version());
            }
            versions
        }
    };
    let (first, second) = tokio::join!(writer(0), writer(1_000_000));
    let both: Vec<u64> = first.iter().filter(|v| second.contains(v)).copied().collect();
    assert!(
        both.is_empty(),
        "both writers were told they committed versions {both:?}: the object store accepted two \
         conditional PUTs of one commit file (first writer {first:?}, second {second:?})"
    );

    let lake = test.open().await;
    let table = lake.open_table("default/contended").await.unwrap();
    assert_eq!(
        table.version() as i64,
        2 * COMMITS,
        "1 create + 40 appends; the writers were told {first:?} and {second:?}"
    );
    assert_eq!(table.stats().rows, Some((2 * COMMITS * ROWS) as u64));
    let history = table.history(100).await.unwrap();
    let writes = history.iter().filter(|c| c.operation.as_deref() == Some("WRITE")).count();
    assert_eq!(writes as i64, 2 * COMMITS);
    assert!(history
        .iter()
        .all(|c| c.operation.as_deref() != Some("WRITE") || c.rows_added == Some(ROWS as u64)));
}

async fn delete_prefix_removes_the_table(backend: Backend) {
    let test = TestLake::new(backend);
    let lake = test.open().await;
    lake.create_table("default/gone", &schema(), &[])
        .await
        .unwrap()
        .append(vec![batch(0..3)])
        .await
        .unwrap();
    let deleted = lake.delete_prefix("default/gone").await.unwrap();
    assert!(deleted >= 3, "log and data files, got {deleted}");
    assert!(!lake.table_exists("default/gone").await.unwrap());
}

/// The ids of a data file of `table` (at `path` in the log), in the file's row order.
async fn file_ids(lake: &tarn_lake::Lake, table: &str, path: &str) -> Vec<i64> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    use tarn_lake::deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    // `path` is the log's path decoded once: the object's key itself.
    let location = object_store::path::Path::parse(format!("{table}/{path}")).unwrap();
    let bytes = lake.store().get(&location).await.unwrap().bytes().await.unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
    reader
        .flat_map(|batch| {
            let batch = batch.unwrap();
            let ids = batch.column_by_name("id").unwrap().as_primitive::<Int64Type>().clone();
            ids.values().to_vec()
        })
        .collect()
}

/// Compaction of a table with `cluster_by` rewrites each partition's small files as one file
/// sorted by the columns, in an `OPTIMIZE` commit whose actions change no data; the rows stay
/// the same, and a second run finds nothing to do.
async fn clustered_compaction_sorts_each_bin(backend: Backend) {
    let test = TestLake::new(backend);
    let lake = test.open().await;
    let path = "default/clustered";
    let mut table = lake.create_table(path, &schema(), &["name".to_string()]).await.unwrap();
    // Five appends of ids scattered over 0..500, into two partitions whose values need escaping
    // in paths.
    for k in 0..5i64 {
        let ids: Vec<i64> = (0..100).map(|i| (i * 7919 + k * 131) % 500).collect();
        let names: Vec<&str> =
            ids.iter().map(|id| if id % 2 == 0 { "a b" } else { "b%c/d" }).collect();
        let batch = RecordBatch::try_new(
            schema(),
            vec![Arc::new(Int64Array::from(ids)), Arc::new(StringArray::from(names))],
        )
        .unwrap();
        table = table.append(vec![batch]).await.unwrap();
    }
    let before = read_sorted(&table).await;
    assert_eq!(before.len(), 500);
    assert_eq!(table.stats().files, 10, "5 appends × 2 partitions");

    let (table, report) = table.optimize(1024 * 1024, &["id".to_string()]).await.unwrap();
    assert_eq!(
        (report.files_before, report.files_removed, report.files_added, report.files_after),
        (10, 10, 2, 2),
        "{report:?}"
    );
    assert_eq!(report.version, 6);
    assert_eq!(read_sorted(&table).await, before, "compaction keeps every row");
    assert_eq!(table.history(1).await.unwrap()[0].operation.as_deref(), Some("OPTIMIZE"));

    // Each new file holds one partition's rows sorted by id.
    let files: Vec<String> =
        table.delta().snapshot().unwrap().log_data().iter().map(|f| f.path().to_string()).collect();
    for file in &files {
        let ids = file_ids(&lake, path, file).await;
        assert_eq!(ids.len(), 250, "{file}");
        assert!(ids.windows(2).all(|w| w[0] <= w[1]), "{file} is not sorted: {ids:?}");
        let parity = ids[0] % 2;
        assert!(ids.iter().all(|id| id % 2 == parity), "{file} mixes partitions");
    }

    // The commit changes no data: readers of the change feed and streaming readers skip it.
    let log = object_store::path::Path::from(format!("{path}/_delta_log/{:020}.json", 6));
    let commit = lake.store().get(&log).await.unwrap().bytes().await.unwrap();
    let actions: Vec<serde_json::Value> = commit
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    let changes: Vec<(&str, bool)> = actions
        .iter()
        .flat_map(|a| {
            ["add", "remove"].into_iter().filter_map(move |kind| {
                a.get(kind).map(|action| (kind, action["dataChange"].as_bool().unwrap()))
            })
        })
        .collect();
    assert_eq!(changes.iter().filter(|(kind, _)| *kind == "remove").count(), 10);
    assert_eq!(changes.iter().filter(|(kind, _)| *kind == "add").count(), 2);
    assert!(changes.iter().all(|(_, data_change)| !data_change), "{changes:?}");

    let (table, again) = table.optimize(1024 * 1024, &["id".to_string()]).await.unwrap();
    assert_eq!((again.files_removed, again.files_added, again.version), (0, 0, 6));
    assert_eq!(table.version(), 6);
}

/// Rows staged in memory become one append with its `txn`; staged files with a column the
/// table lacks are refused, and commit once the table has it.
async fn staged_rows_commit_as_one_append(backend: Backend) {
    let test = TestLake::new(backend);
    let lake = test.open().await;
    let table =
        lake.create_table("default/staged", &schema(), &["name".to_string()]).await.unwrap();
    let mut stage = table.stage().unwrap();
    stage.write(batch(0..3)).await.unwrap();
    stage.write(batch(3..5)).await.unwrap();
    // A batch with a column the open files lack closes them and starts new ones.
    let wider = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
        Field::new("extra", DataType::Utf8, true),
    ]));
    let extra = RecordBatch::try_new(
        wider,
        vec![
            Arc::new(Int64Array::from(vec![5, 6])),
            Arc::new(StringArray::from(vec!["n5", "n6"])),
            Arc::new(StringArray::from(vec![Some("x"), None])),
        ],
    )
    .unwrap();
    stage.write(extra).await.unwrap();
    assert_eq!(stage.rows(), 7);
    let staged = stage.finish().await.unwrap();
    assert_eq!(staged.rows(), 7);
    assert!(staged.bytes() > 0);
    assert_eq!(lake.open_table("default/staged").await.unwrap().stats().files, 0);

    let refused = table.append_staged(&staged, "writer", 1).await.unwrap_err();
    assert!(refused.to_string().contains("column extra"), "{refused}");

    let table = lake.open_table("default/staged").await.unwrap();
    let table = table.add_columns(&[Field::new("extra", DataType::Utf8, true)]).await.unwrap();
    let version = table.version();
    let table = table.append_staged(&staged, "writer", 1).await.unwrap();
    assert_eq!(table.version(), version + 1, "one commit");
    assert_eq!(table.txn_version("writer").await.unwrap(), Some(1));
    let commit = &table.history(1).await.unwrap()[0];
    assert_eq!((commit.operation.as_deref(), commit.rows_added), (Some("WRITE"), Some(7)));
    // 7 names, each its own partition: one file per partition and schema.
    assert_eq!(commit.files_added, 7);
    let expected: Vec<(i64, String)> = (0..7).map(|i| (i, format!("n{i}"))).collect();
    let reader = lake.open_table("default/staged").await.unwrap();
    assert_eq!(read_sorted(&reader).await, expected);
}

/// The ids in `batches`' first column.
fn ids_of(batches: &[RecordBatch]) -> Vec<i64> {
    use arrow::array::AsArray;
    use arrow::datatypes::Int64Type;
    let mut ids: Vec<i64> = batches
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
        .collect();
    ids.sort();
    ids
}

async fn exact_commits_see_what_others_added(backend: Backend) {
    let test = TestLake::new(backend);
    let lake = test.open().await;
    let path = "default/exact";
    // Partitioned by a name that needs escaping in paths.
    let table = lake.create_table(path, &schema(), &["name".to_string()]).await.unwrap();
    let created = table.version();
    let mine = table.clone();

    // Another writer (another process: its own lake handle) appends twice.
    let other_lake = test.open().await;
    let other = other_lake.open_table(path).await.unwrap();
    let names = StringArray::from(vec!["x y"; 3]);
    let other_batch = RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from(vec![10, 11, 12])), Arc::new(names)],
    )
    .unwrap();
    let other = other.append(vec![other_batch]).await.unwrap();
    other.append(vec![batch(20..22)]).await.unwrap();

    // A commit meant for the version after `mine` finds it taken, and commits nothing.
    let err = mine.clone().append_txn_next(vec![batch(0..5)], "me", 1).await.unwrap_err();
    assert!(matches!(err, Error::VersionTaken { version } if version == created + 1), "{err}");
    assert_eq!(other_lake.open_table(path).await.unwrap().stats().rows, Some(5));

    // What the other writer added since, key column and partition column read back.
    let mut mine = mine;
    mine.refresh().await.unwrap();
    let added = mine.files_added_since(created).await.unwrap().expect("the log has every commit");
    assert_eq!(added.len(), 3, "one file per partition and append: {added:?}");
    let columns = ["id".to_string(), "name".to_string()];
    let mut read = Vec::new();
    for add in &added {
        read.extend(mine.read_file_columns(add, &columns).await.unwrap().expect("the file"));
    }
    assert_eq!(ids_of(&read), [10, 11, 12, 20, 21]);
    let names: Vec<String> = read
        .iter()
        .flat_map(|b| {
            let names = arrow::compute::cast(b.column(1), &DataType::Utf8).unwrap();
            let names = names.as_any().downcast_ref::<StringArray>().unwrap().clone();
            names.iter().map(|n| n.unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(names.iter().filter(|n| n.as_str() == "x y").count(), 3, "{names:?}");
    assert!(mine.files_added_since(mine.version()).await.unwrap().unwrap().is_empty());

    // At the version after the latest, the commit lands.
    let mine = mine.append_txn_next(vec![batch(0..5)], "me", 1).await.unwrap();
    assert_eq!((mine.version(), mine.stats().rows), (created + 3, Some(10)));
    assert_eq!(mine.txn_version("me").await.unwrap(), Some(1));

    // A compaction moves rows without adding data: nothing to read since; the files it
    // replaced can still be read.
    let more = RecordBatch::try_new(
        schema(),
        vec![Arc::new(Int64Array::from(vec![30, 31])), Arc::new(StringArray::from(vec!["x y"; 2]))],
    )
    .unwrap();
    let mine = mine.append(vec![more]).await.unwrap();
    let (compacted, _) = mine.clone().optimize(1024 * 1024, &[]).await.unwrap();
    assert!(compacted.version() > mine.version());
    let moved = compacted.files_added_since(mine.version()).await.unwrap().unwrap();
    assert!(moved.is_empty(), "{moved:?}");
    let old = compacted.read_file_columns(&added[0], &columns).await.unwrap();
    assert!(old.is_some(), "a removed file stays readable until vacuumed");

    // With no rows, the commit records the transaction alone.
    let empty = compacted.append_txn_next(Vec::new(), "me", 2).await.unwrap();
    assert_eq!(empty.txn_version("me").await.unwrap(), Some(2));
    assert_eq!(empty.stats().rows, Some(12));

    // A file that is gone reads as None.
    let mut gone = added[0].clone();
    gone.path = "name=nowhere/part-00000-absent.parquet".into();
    assert!(empty.read_file_columns(&gone, &columns).await.unwrap().is_none());
}

async fn appended_files_have_small_pages_and_dictionaries(backend: Backend) {
    use tarn_lake::deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    let test = TestLake::new(backend);
    let lake = test.open().await;
    let table = lake.create_table("default/pages", &schema(), &[]).await.unwrap();
    let created = table.version();
    // 10,000 distinct names: about 90 KB of dictionary, more than a dictionary page may hold.
    let table = table.append(vec![batch(0..10_000)]).await.unwrap();
    let added = table.files_added_since(created).await.unwrap().unwrap();
    assert_eq!(added.len(), 1);
    let path = object_store::path::Path::parse(&added[0].path).unwrap();
    let bytes = table.delta().object_store().get(&path).await.unwrap().bytes().await.unwrap();
    let metadata = ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&bytes)
        .unwrap();
    let offsets = metadata.offset_index().expect("a page index");
    for (column, index) in offsets[0].iter().enumerate() {
        let starts: Vec<i64> = index.page_locations().iter().map(|p| p.first_row_index).collect();
        let ends = starts.iter().skip(1).copied().chain([10_000]);
        let largest = starts.iter().zip(ends).map(|(s, e)| e - s).max().unwrap();
        // The writer ends a page after the first 1,024-row batch that reaches 2,048 rows.
        assert!(largest < 2048 + 1024, "column {column}: a page of {largest} rows ({starts:?})");
        assert!(starts.len() >= 4, "column {column}: pages {starts:?}");
        let chunk = metadata.row_group(0).column(column);
        if let Some(dictionary) = chunk.dictionary_page_offset() {
            let size = chunk.data_page_offset() - dictionary;
            assert!(size <= 64 * 1024 + 64, "column {column}: a dictionary page of {size} bytes");
        }
    }
}

/// The actions of commit `version` of the table at `path`, as JSON.
async fn commit_actions(
    lake: &tarn_lake::Lake,
    path: &str,
    version: u64,
) -> Vec<serde_json::Value> {
    let log = object_store::path::Path::from(format!("{path}/_delta_log/{version:020}.json"));
    let commit = lake.store().get(&log).await.unwrap().bytes().await.unwrap();
    commit
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect()
}

/// The footer of the file an `add` action names, checking its size.
async fn footer(
    table: &LakeTable,
    add: &serde_json::Value,
) -> tarn_lake::deltalake::parquet::file::metadata::ParquetMetaData {
    use tarn_lake::deltalake::parquet::file::metadata::{PageIndexPolicy, ParquetMetaDataReader};
    let file = object_store::path::Path::parse(add["path"].as_str().unwrap()).unwrap();
    let bytes = table.delta().object_store().get(&file).await.unwrap().bytes().await.unwrap();
    assert_eq!(bytes.len() as i64, add["size"].as_i64().unwrap(), "the size in the log");
    ParquetMetaDataReader::new()
        .with_page_index_policy(PageIndexPolicy::Required)
        .parse_and_finish(&bytes)
        .unwrap()
}

/// Files of at least 64k rows per row group are compacted by copying their row groups into
/// one file (pages, compression and page index as they were, statistics merged from the
/// log); files of small row groups are rewritten; files of another schema are kept apart.
async fn compaction_stitches_large_row_groups_and_rewrites_small_ones(backend: Backend) {
    use tarn_lake::deltalake::parquet::basic::Compression;
    let test = TestLake::new(backend);
    let lake = test.open().await;
    let path = "default/stitched";
    let mut table = lake.create_table(path, &schema(), &[]).await.unwrap();
    // Three files of one 70,000-row row group each, three of 100 rows.
    for k in 0..3 {
        table = table.append(vec![batch(k * 70_000..(k + 1) * 70_000)]).await.unwrap();
    }
    for k in 0..3 {
        table =
            table.append(vec![batch(210_000 + k * 100..210_000 + (k + 1) * 100)]).await.unwrap();
    }
    // And one large file with a column more: the same size of row groups, another schema.
    let table = table.add_columns(&[Field::new("extra", DataType::Utf8, true)]).await.unwrap();
    let wider = table.schema().unwrap();
    let ids = 300_000..370_000i64;
    let extra = RecordBatch::try_new(
        wider,
        vec![
            Arc::new(Int64Array::from_iter_values(ids.clone())),
            Arc::new(StringArray::from_iter_values(ids.clone().map(|i| format!("n{i}")))),
            Arc::new(StringArray::from_iter_values(ids.map(|i| format!("e{i}")))),
        ],
    )
    .unwrap();
    let table = table.append(vec![extra]).await.unwrap();
    let before = read_sorted(&table).await;
    assert_eq!(before.len(), 280_300);
    assert_eq!(table.stats().files, 7);

    let (table, report) = table.optimize(64 * 1024 * 1024, &[]).await.unwrap();
    assert_eq!(
        (report.files_before, report.files_removed, report.files_added, report.files_after),
        (7, 6, 2, 3),
        "{report:?}"
    );
    assert_eq!(read_sorted(&table).await, before, "compaction keeps every row");
    assert_eq!(table.stats().rows, Some(280_300));

    let actions = commit_actions(&lake, path, report.version).await;
    let adds: Vec<&serde_json::Value> = actions.iter().filter_map(|a| a.get("add")).collect();
    assert_eq!(adds.len(), 2);
    assert!(adds.iter().all(|a| a["dataChange"] == false));
    let stats = |add: &serde_json::Value| -> serde_json::Value {
        serde_json::from_str(add["stats"].as_str().unwrap()).unwrap()
    };
    let stitched = *adds.iter().find(|a| stats(a)["numRecords"] == 210_000).expect("stitched");
    let rewritten = *adds.iter().find(|a| stats(a)["numRecords"] == 300).expect("rewritten");
    let stitched_stats = stats(stitched);
    assert_eq!(stitched_stats["minValues"], serde_json::json!({"id": 0, "name": "n0"}));
    assert_eq!(stitched_stats["maxValues"], serde_json::json!({"id": 209_999, "name": "n99999"}));
    assert_eq!(stitched_stats["nullCount"], serde_json::json!({"id": 0, "name": 0}));

    // The stitched file: the three row groups as they were, snappy, with their page index
    // and the Arrow schema.
    let metadata = footer(&table, stitched).await;
    let rows: Vec<i64> = metadata.row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(rows, vec![70_000; 3]);
    assert!(metadata.row_groups().iter().all(|g| g.column(0).compression() == Compression::SNAPPY));
    let offsets = metadata.offset_index().expect("a page index");
    assert!(offsets.iter().all(|group| group[0].page_locations().len() >= 20), "small pages kept");
    // The page index points into the new file: each chunk's first data page where the
    // chunk's metadata says it starts.
    for (group, offsets) in metadata.row_groups().iter().zip(offsets) {
        for (column, offsets) in group.columns().iter().zip(offsets) {
            assert_eq!(offsets.page_locations()[0].offset, column.data_page_offset());
        }
    }
    assert!(metadata.column_index().is_some());
    let kv = metadata.file_metadata().key_value_metadata().unwrap();
    assert!(kv.iter().any(|kv| kv.key == "ARROW:schema"));
    // The rewritten file: the compaction writer's zstd.
    let metadata = footer(&table, rewritten).await;
    assert!(matches!(metadata.row_group(0).column(0).compression(), Compression::ZSTD(_)));

    let (_, again) = table.optimize(64 * 1024 * 1024, &[]).await.unwrap();
    assert_eq!((again.files_removed, again.files_added), (0, 0), "{again:?}");

    // Another reader: python deltalake's file list, the rows decoded by pyarrow's (C++)
    // Parquet reader.
    let location = format!("{}/{path}", test.location);
    let options: serde_json::Map<String, serde_json::Value> =
        test.env().into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
    let output = std::process::Command::new(tarn_lake::test_util::python())
        .arg("-c")
        .arg(READ_WITH_PYARROW)
        .arg(&location)
        .arg(serde_json::Value::Object(options).to_string())
        .output()
        .expect("run python");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let ids: i64 = before.iter().map(|(id, _)| id).sum();
    assert_eq!(
        seen,
        serde_json::json!({"version": report.version, "files": 3, "rows": 280_300, "id_sum": ids}),
    );
}

/// Prints a Delta table's version, file count, rows and sum of `id` as JSON, read with python
/// deltalake and pyarrow (arguments: the table's location, storage options as JSON).
const READ_WITH_PYARROW: &str = r#"
import json, sys
import pyarrow.compute as pc
from deltalake import DeltaTable
table = DeltaTable(sys.argv[1], storage_options=json.loads(sys.argv[2]))
data = table.to_pyarrow_dataset().to_table()
print(json.dumps({"version": table.version(), "files": len(table.file_uris()),
                  "rows": data.num_rows, "id_sum": pc.sum(data["id"]).as_py()}), flush=True)
# deltalake 1.6 + pyarrow 26 abort now and then in their own thread teardown at interpreter
# exit ("terminate called without an active exception"), after the work is done: skip it.
import os; os._exit(0)
"#;
