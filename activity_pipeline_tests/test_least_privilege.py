"""Object storage with the least privilege (issue 36): the daily job and `make verify` on moto's S3 server with IAM
enforced and the writer's credentials limited to the actions docs/deployment.md lists for it; the reader's
(Get and List) cannot write, so the policy is what is enforced, not a server that allows everything."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import requests

from activity_pipeline_testing.helpers import REPO, TOKEN, clean_env
from activity_pipeline_testing.object_storage import EmulatorMissing, moto_server

pytestmark = pytest.mark.object_storage

BUCKET, PREFIX = "archive", "mdca"
# As docs/deployment.md "Who may read and write the bucket" lists them.
WRITER = [
    {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{BUCKET}"},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
     "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"},
]  # fmt: skip
READER = [
    {"Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": f"arn:aws:s3:::{BUCKET}"},
    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": f"arn:aws:s3:::{BUCKET}/{PREFIX}/*"},
]


def _user(iam, name: str, statements: list[dict]) -> dict[str, str]:
    iam.create_user(UserName=name)
    iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy",
                        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": statements}))  # fmt: skip
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def test_the_writer_needs_only_the_listed_permissions(tmp_path: Path, recent, recent_server):
    import boto3

    try:
        server = moto_server()
        endpoint = server.__enter__()
    except EmulatorMissing as exc:
        pytest.skip(str(exc))
    try:
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1", "aws_access_key_id": "admin",
                 "aws_secret_access_key": "admin-secret"}  # fmt: skip
        boto3.client("s3", **admin).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **admin)
        writer, reader = _user(iam, "writer", WRITER), _user(iam, "reader", READER)
        # From here on every request is authenticated and authorized against the users' policies.
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        day = sorted(recent.spec.days)[0]
        base = clean_env(MDCA_API_URL=recent_server.url, MDCA_API_TOKEN=TOKEN, MDCA_REQUESTS_PER_MINUTE="0",
                         ACTIVITY_DATA_DIR=str(tmp_path / "data"), ACTIVITY_DATA_URL=f"s3://{BUCKET}/{PREFIX}",
                         ACTIVITY_START_DATE=str(day), DAGSTER_HOME=str(tmp_path / "home"), AWS_ENDPOINT_URL=endpoint,
                         AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")  # fmt: skip
        (tmp_path / "home").mkdir()

        def make(creds: dict[str, str], *args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["make", "-s", "--no-print-directory", "-C", str(REPO), *args],
                                  env={**base, **creds}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=600)  # fmt: skip

        ran = make(writer, "run", f"DAY={day}")
        assert ran.returncode == 0, ran.stdout[-3000:]
        verified = make(writer, "verify")
        assert verified.returncode == 0 and "intact" in verified.stdout, verified.stdout[-3000:]
        # The reader's rights do not write: the same run is refused by the storage, at once (no retry a minute
        # later fixes a permission), saying what to change.
        refused = make(reader, "run", f"DAY={day}", "FULL_RESCAN=1")
        assert refused.returncode != 0
        assert "the storage service refused the credentials" in refused.stdout, refused.stdout[-3000:]
        assert "requested a retry" not in refused.stdout
        for out in (ran, verified, refused):
            assert (
                writer["AWS_SECRET_ACCESS_KEY"] not in out.stdout and reader["AWS_SECRET_ACCESS_KEY"] not in out.stdout
            )
    finally:
        server.__exit__(None, None, None)
