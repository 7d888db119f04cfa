"""The docs keep up with the code: every setting the configuration reads, every view the DuckDB file defines,
every link."""

from __future__ import annotations

import ast
import re

import duckdb
import yaml

from activity_pipeline import config
from activity_pipeline.storage.dataset import open_dataset
from activity_pipeline.storage.duckdb_views import build_database
from activity_pipeline_testing.helpers import REPO

DOCS = REPO / "docs"
PAGES = [
    "getting-started", "configuration", "dataset", "querying", "checks", "operations", "deployment",
    "demo-tenant", "architecture",
]  # fmt: skip


def variables_read() -> set[str]:
    """Every variable `config` reads: the names it passes to `get(...)`, and the single tenant's `MDCA_*`."""
    tree = ast.parse((REPO / "activity_pipeline" / "config" / "__init__.py").read_text())
    names = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "get"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and re.fullmatch(r"[A-Z][A-Z0-9_]+", node.args[0].value)
    }
    return names | set(config.TENANT_VARIABLES.values())


def test_the_variable_finder_finds_the_variables():
    assert {"ACTIVITY_DATA_DIR", "ACTIVITY_DATA_URL", "ACTIVITY_TENANTS_FILE", "MDCA_API_TOKEN"} <= variables_read()


def test_every_variable_the_configuration_reads_is_in_the_configuration_reference():
    text = (DOCS / "configuration.md").read_text()
    production = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    postgres = set(re.findall(r"env: (DAGSTER_PG_\w+)", yaml.safe_dump(production)))
    assert postgres, "the production instance reads DAGSTER_PG_*"
    assert {v for v in variables_read() | postgres if f"`{v}`" not in text} == set()


def test_every_tenants_file_key_is_in_the_configuration_reference():
    text = (DOCS / "configuration.md").read_text()
    keys = {*config.FILE_KEYS, *(f"{k}: " for k in ("seed", "activities_per_day"))}
    assert {k for k in keys if k not in text.replace("`", "")} == set()


def test_every_alert_key_is_in_the_configuration_reference():
    from activity_pipeline.alerts.destinations import KEYS, KINDS

    text = (DOCS / "configuration.md").read_text()
    assert {k for keys in KEYS.values() for k in keys if f"`{k}`" not in text} == set()
    assert {k for k in KINDS if f"`{k}`" not in text} == set()


def test_every_view_of_the_duckdb_file_is_in_the_querying_page(tmp_path):
    with duckdb.connect(str(build_database(open_dataset(tmp_path)).path), read_only=True) as con:
        views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert {"activities", "partition_health", "retention_risk", "cloud_app_events"} <= views
    text = (DOCS / "querying.md").read_text()
    assert {v for v in views if f"`{v}`" not in text} == set()


def test_the_readme_is_short_and_leads_with_what_the_project_is():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert "Defender for Cloud Apps" in " ".join(lines[:5])
    assert lines.index("```sh") < 20 and "make demo" in lines[lines.index("```sh") + 1]


def test_the_readme_maps_every_docs_page_and_every_link_resolves():
    readme = (REPO / "README.md").read_text()
    assert {p for p in PAGES if f"(docs/{p}.md)" not in readme} == set()
    for page in [REPO / "README.md", *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
