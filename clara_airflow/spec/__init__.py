"""spec layer of clara-airflow."""
