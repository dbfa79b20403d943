// JDBC (pgjdbc) through Ferry: server-prepared statements (after the
// driver's prepare threshold), transactions, batches, COPY. Prints the
// final row count.
import java.io.StringReader;
import java.sql.*;
import org.postgresql.copy.CopyManager;
import org.postgresql.core.BaseConnection;

public class JdbcCheck {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0], "app", "secret")) {
            c.createStatement().execute("CREATE TEMP TABLE scratch (x int)");
            PreparedStatement ps = c.prepareStatement("INSERT INTO items (id, name, price) VALUES (?, ?, ?)");
            for (int i = 1; i <= 10; i++) {
                ps.setInt(1, i);
                ps.setString(2, "j" + i);
                ps.setBigDecimal(3, new java.math.BigDecimal("1.50"));
                ps.executeUpdate();
            }
            c.setAutoCommit(false);
            c.createStatement().executeUpdate("UPDATE items SET name = 'x' WHERE id = 1");
            c.createStatement().executeUpdate("DELETE FROM items WHERE id = 2");
            c.commit();
            c.createStatement().executeUpdate("INSERT INTO items (id) VALUES (99)");
            c.rollback();
            c.setAutoCommit(true);
            PreparedStatement b = c.prepareStatement("INSERT INTO items (id, name) VALUES (?, 'batch')");
            for (int i = 20; i < 30; i++) {
                b.setInt(1, i);
                b.addBatch();
            }
            b.executeBatch();
            new CopyManager((BaseConnection) c).copyIn("COPY items (id, name) FROM STDIN", new StringReader("100\tcopy\n101\tcopy\n"));
            ResultSet rs = c.createStatement().executeQuery("SELECT count(*) FROM items");
            rs.next();
            System.out.println("count " + rs.getLong(1));
        }
    }
}
