"""psycopg 3 through Ferry: DML, COPY, server-side prepared statements,
transactions, binary results, pipeline mode. Prints the final row count."""
import os
import psycopg

dsn = os.environ["DSN"]
with psycopg.connect(dsn) as conn:
    with conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE scratch (x int)")
        cur.execute("INSERT INTO items (id, name, price) VALUES (%s, %s, %s)", (1, "one", 9.5))
        cur.executemany("INSERT INTO items (id, name) VALUES (%s, %s)", [(i, f"n{i}") for i in range(2, 20)])
        cur.execute("UPDATE items SET name = %s WHERE id = %s", ("uno", 1))
        cur.execute("DELETE FROM items WHERE id = %s", (19,))
        with cur.copy("COPY items (id, name) FROM STDIN") as copy:
            for i in range(100, 110):
                copy.write_row((i, f"c{i}"))
        for _ in range(6):
            cur.execute("SELECT name FROM items WHERE id = %s", (1,), prepare=True)
            assert cur.fetchone()[0] == "uno"
    conn.commit()
    try:
        with conn.transaction():
            conn.execute("INSERT INTO items (id) VALUES (500)")
            raise RuntimeError("roll back")
    except RuntimeError:
        pass
    with conn.cursor(binary=True) as cur:
        cur.execute("SELECT price FROM items WHERE id = 1")
        assert float(cur.fetchone()[0]) == 9.5
    with conn.pipeline():
        for i in range(200, 210):
            conn.execute("INSERT INTO items (id, name) VALUES (%s, 'p')", (i,))
    conn.commit()
    print("count", conn.execute("SELECT count(*) FROM items").fetchone()[0])
