"""Airflow DAG loader for Clara pipelines: every *.yaml / *.yml file in this folder and the folders
below it becomes one DAG. Copy this file into any dags folder."""

from clara_airflow.loader import load_dags

load_dags(globals(), __file__)
