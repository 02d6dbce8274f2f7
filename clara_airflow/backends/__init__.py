"""backends layer of clara-airflow."""
