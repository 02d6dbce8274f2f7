"""services layer of clara-airflow."""
