"""compiler layer of clara-airflow."""
