// What DBeaver, Metabase and other JDBC tools do with a Postgres server, with the real
// PostgreSQL JDBC driver: connect, list schemas, tables and columns through DatabaseMetaData,
// and page a PreparedStatement with a bound parameter. Run by tests/it/pg.rs as
//
//   java -cp /usr/share/java/postgresql.jar tests/pg/JdbcCheck.java HOST PORT
//
// (Java's single-file source launch). It prints one line per fact; the test reads them.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class JdbcCheck {
    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + args[0] + ":" + args[1] + "/tarn";
        Properties props = new Properties();
        props.setProperty("user", "analyst");
        props.setProperty("connectTimeout", "20");
        props.setProperty("socketTimeout", "60");
        try (Connection conn = DriverManager.getConnection(url, props)) {
            DatabaseMetaData meta = conn.getMetaData();
            System.out.println("product " + meta.getDatabaseProductName() + " "
                    + meta.getDatabaseProductVersion());
            System.out.println("driver " + meta.getDriverName() + " " + meta.getDriverVersion());

            List<String> schemas = new ArrayList<>();
            try (ResultSet rs = meta.getSchemas()) {
                while (rs.next()) {
                    schemas.add(rs.getString("TABLE_SCHEM"));
                }
            }
            System.out.println("schemas " + schemas);

            List<String> tables = new ArrayList<>();
            try (ResultSet rs = meta.getTables(null, "default", "%", new String[] {"TABLE"})) {
                while (rs.next()) {
                    tables.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME")
                            + ":" + rs.getString("TABLE_TYPE"));
                }
            }
            System.out.println("tables " + tables);

            List<String> columns = new ArrayList<>();
            try (ResultSet rs = meta.getColumns(null, "default", "leads", "%")) {
                while (rs.next()) {
                    columns.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
                }
            }
            System.out.println("columns " + columns);

            // Paging: with autocommit off and a fetch size, the driver executes the portal a
            // few rows at a time (Execute with a row limit, then PortalSuspended).
            conn.setAutoCommit(false);
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT value FROM generate_series(1, 20) WHERE value > ? ORDER BY value")) {
                ps.setFetchSize(4);
                ps.setLong(1, 8);
                long rows = 0;
                long sum = 0;
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        rows++;
                        sum += rs.getLong(1);
                    }
                }
                System.out.println("paged rows " + rows + " sum " + sum);
            }
            try (PreparedStatement ps = conn.prepareStatement(
                    "SELECT email, n FROM leads WHERE country = ? ORDER BY email")) {
                ps.setFetchSize(1);
                ps.setString(1, "SE");
                List<String> rows = new ArrayList<>();
                try (ResultSet rs = ps.executeQuery()) {
                    while (rs.next()) {
                        rows.add(rs.getString("email") + "/" + rs.getLong("n"));
                    }
                }
                System.out.println("leads " + rows);
            }
            conn.commit();
        }
    }
}
