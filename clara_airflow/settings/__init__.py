"""Typed settings, parsed once: what a pipeline runs with (:class:`PipelineSettings`) and how this
deployment reaches its engines (:class:`Deployment`), together the :class:`Options` of every backend,
operator and DAG builder. ``model`` defines them; ``deployment`` parses Airflow's ``[clara]`` options."""

from clara_airflow.settings.deployment import DEPLOYMENT_OPTIONS, K8S_NAME, parse_deployment
from clara_airflow.settings.model import (
    BatchSettings,
    Deployment,
    ModelSettings,
    Options,
    Payload,
    PipelineSettings,
    Resources,
    ServiceSettings,
)

__all__ = ["DEPLOYMENT_OPTIONS", "K8S_NAME", "BatchSettings", "Deployment", "ModelSettings", "Options", "Payload",
           "PipelineSettings", "Resources", "ServiceSettings", "parse_deployment"]
