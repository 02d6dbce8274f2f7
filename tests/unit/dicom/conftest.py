"""The fake Airflow API of the receiver's tests, for every test module here."""

from tests.unit.dicom.test_receiver import airflow

__all__ = ["airflow"]
