"""operators layer of clara-airflow."""
