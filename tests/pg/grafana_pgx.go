// What Grafana's PostgreSQL data source does with a Postgres server, with Go's pgx (v4, as
// Debian packages it; Grafana uses v5, whose wire protocol use is the same): connect and
// ping (the health check), read the version (the settings page's auto-detection), run the
// queries of the schema, table and column pickers, and a time-series panel query with the
// macros expanded as Grafana expands them. Like Grafana's pgx engine it sends each query with
// the simple query protocol (PgConn().Exec(...).ReadAll()) and decodes each column by its
// type OID, failing on an OID pgx does not know; the panel query then runs again through
// pgx's default extended protocol with a bound timestamp parameter. Run by tests/it/pg.rs as
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go run tests/pg/grafana_pgx.go HOST PORT
//
// It prints one line per fact; the test reads them.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgtype"
	"github.com/jackc/pgx/v4"
)

// The search-path constraint of Grafana's table and column pickers
// (public/app/plugins/datasource/grafana-postgresql-datasource/postgresMetaQuery.ts).
const schemaConstraint = `
          quote_ident(table_schema) IN (
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
          )`

// The queries Grafana's query editor sends (postgresMetaQuery.ts), by what they are for. (Its
// table list for a schema picked by name, quote_ident(table_schema) = 'default', finds
// nothing on PostgreSQL either: quote_ident quotes the reserved word default.)
var metaQueries = []struct{ name, sql string }{
	{"version", "SELECT current_setting('server_version_num')::int/100 as version"},
	{"schemas", `SELECT schema_name AS "name"
    FROM information_schema.schemata
    WHERE schema_name NOT IN ('information_schema',
                              'pg_catalog',
                              'pg_toast',
                              '_timescaledb_cache',
                              '_timescaledb_catalog',
                              '_timescaledb_internal',
                              '_timescaledb_config',
                              'timescaledb_information',
                              'timescaledb_experimental')
    ORDER BY schema_name`},
	{"tables", `SELECT
    CASE WHEN ` + schemaConstraint + `
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema',
                             'pg_catalog',
                             '_timescaledb_cache',
                             '_timescaledb_catalog',
                             '_timescaledb_internal',
                             '_timescaledb_config',
                             'timescaledb_information',
                             'timescaledb_experimental')
    ORDER BY CASE WHEN ` + schemaConstraint + ` THEN 0 ELSE 1 END, 1`},
	{"columns", `SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('metrics'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('metrics'))[1]
          AND quote_ident(table_name) = (parse_ident('metrics'))[2]
        ELSE quote_ident(table_name) = 'metrics'
          AND ` + schemaConstraint + `
      END`},
}

// A time-series panel query as Grafana expands it: $__timeGroupAlias(ts, 1m) and
// $__timeFilter(ts) over 2024-05-01 from 10:00 to 11:00 UTC.
const panelQuery = `SELECT
  floor(extract(epoch from ts)/60)*60 AS "time",
  host AS metric,
  avg(value) AS "value"
FROM metrics
WHERE
  ts BETWEEN '2024-05-01T10:00:00Z' AND '2024-05-01T11:00:00Z'
GROUP BY 1, 2
ORDER BY 1, 2`

func main() {
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Println("error", err)
		os.Exit(1)
	}
}

func run(host, port string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	url := fmt.Sprintf("postgres://analyst@%s:%s/tarn?sslmode=disable&connect_timeout=20", host, port)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close(ctx)
	if err := conn.Ping(ctx); err != nil {
		return fmt.Errorf("ping: %w", err)
	}
	fmt.Println("server_version", conn.PgConn().ParameterStatus("server_version"))

	var version string
	if err := conn.QueryRow(ctx, "SELECT version()").Scan(&version); err != nil {
		return fmt.Errorf("SELECT version(): %w", err)
	}
	fmt.Println("version()", version)

	for _, q := range metaQueries {
		rows, err := simple(ctx, conn, q.sql)
		if err != nil {
			return fmt.Errorf("%s: %w", q.name, err)
		}
		fmt.Println(q.name, rows)
	}

	rows, err := simple(ctx, conn, panelQuery)
	if err != nil {
		return fmt.Errorf("panel query: %w", err)
	}
	fmt.Println("panel", rows)

	// The same panel with the time range bound as parameters (pgx's extended protocol,
	// binary timestamps).
	from := time.Date(2024, 5, 1, 10, 0, 0, 0, time.UTC)
	to := from.Add(time.Hour)
	bound := strings.Replace(panelQuery,
		"'2024-05-01T10:00:00Z' AND '2024-05-01T11:00:00Z'", "$1 AND $2", 1)
	result, err := conn.Query(ctx, bound, from, to)
	if err != nil {
		return fmt.Errorf("bound panel query: %w", err)
	}
	var points []string
	for result.Next() {
		var t float64
		var metric string
		var value float64
		if err := result.Scan(&t, &metric, &value); err != nil {
			return fmt.Errorf("bound panel query: scan: %w", err)
		}
		points = append(points, fmt.Sprintf("%s/%s/%g",
			time.Unix(int64(t), 0).UTC().Format("15:04"), metric, value))
	}
	if err := result.Err(); err != nil {
		return fmt.Errorf("bound panel query: %w", err)
	}
	fmt.Println("bound panel", points)
	return nil
}

// simple runs sql as Grafana's pgx engine does (simple query protocol, every result read)
// and decodes every value by its column's type OID, as Grafana does; an OID pgx has no type
// for fails, as it fails in Grafana ("unknown data type oid").
func simple(ctx context.Context, conn *pgx.Conn, sql string) ([]string, error) {
	results, err := conn.PgConn().Exec(ctx, sql).ReadAll()
	if err != nil {
		return nil, err
	}
	types := pgtype.NewConnInfo()
	var rows []string
	for _, result := range results {
		if result.Err != nil {
			return nil, result.Err
		}
		for _, row := range result.Rows {
			var cells []string
			for i, field := range result.FieldDescriptions {
				dataType, ok := types.DataTypeForOID(field.DataTypeOID)
				if !ok {
					return nil, fmt.Errorf("column %s: unknown data type oid: %d", field.Name, field.DataTypeOID)
				}
				value := pgtype.NewValue(dataType.Value)
				decoder, ok := value.(pgtype.TextDecoder)
				if !ok {
					return nil, fmt.Errorf("column %s: type %s has no text decoder", field.Name, dataType.Name)
				}
				if err := decoder.DecodeText(types, row[i]); err != nil {
					return nil, fmt.Errorf("column %s (%s): %w", field.Name, dataType.Name, err)
				}
				switch v := value.Get().(type) {
				case float64:
					cells = append(cells, strconv.FormatFloat(v, 'f', -1, 64))
				default:
					cells = append(cells, fmt.Sprintf("%v", v))
				}
			}
			rows = append(rows, strings.Join(cells, "|"))
		}
	}
	return rows, nil
}
