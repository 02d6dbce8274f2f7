"""SQLite connect arguments for the test session: wait up to 60 s on a locked database instead of
failing, since several `airflow dags test` processes share one SQLite file (never used in production,
where Airflow runs on PostgreSQL or MySQL)."""

CONNECT_ARGS = {"timeout": 60}
