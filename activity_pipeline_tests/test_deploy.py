"""The shipped deployment files agree: the Helm values give Kubernetes the instance that deploy/dagster.yaml
gives a machine, and the local instance the same pools and per-tenant limits."""

from __future__ import annotations

import yaml

from activity_pipeline_testing.helpers import REPO


def _load(path: str) -> dict:
    return yaml.safe_load((REPO / path).read_text())


def test_the_helm_values_mirror_the_production_instance():
    instance, values = _load("deploy/dagster.yaml"), _load("deploy/helm/values.yaml")
    pools, runs = instance["concurrency"]["pools"], instance["concurrency"]["runs"]
    assert values["concurrency"]["pools"] == {
        "defaultLimit": pools["default_limit"],
        "granularity": pools["granularity"],
    }
    assert values["concurrency"]["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert values["concurrency"]["runs"]["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    assert values["postgresql"]["postgresqlScheme"] == instance["storage"]["postgres"]["postgres_db"]["scheme"]
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"


def test_no_deployment_file_holds_a_password():
    instance, values = _load("deploy/dagster.yaml"), _load("deploy/helm/values.yaml")
    assert instance["storage"]["postgres"]["postgres_db"]["password"] == {"env": "DAGSTER_PG_PASSWORD"}
    assert "postgresqlPassword" not in values["postgresql"] and values["generatePostgresqlPasswordSecret"] is False
    assert values["global"]["postgresqlSecretName"]


def test_the_local_instance_has_the_same_per_tenant_limits():
    local, production = _load("deploy/local/dagster.yaml"), _load("deploy/dagster.yaml")
    assert local["concurrency"]["pools"] == production["concurrency"]["pools"]
    assert (
        local["concurrency"]["runs"]["tag_concurrency_limits"]
        == production["concurrency"]["runs"]["tag_concurrency_limits"]
    )
