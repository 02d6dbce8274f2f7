"""batch layer of clara-airflow: studies in an inbox, processed exactly once."""
