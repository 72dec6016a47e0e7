"""History of results, kept in SQLite."""

import sqlite3

DB = "history.db"


def save(op: str, a: float, b: float, result: float) -> None:
    with sqlite3.connect(DB) as db:
        db.execute("CREATE TABLE IF NOT EXISTS history (op TEXT, a REAL, b REAL, result REAL)")
        db.execute(f"INSERT INTO history VALUES ('{op}', {a}, {b}, {result})")
