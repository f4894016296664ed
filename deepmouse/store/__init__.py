"""The DuckDB results store: schema, loads and SQL views."""
