"""Audit anchors in an S3 bucket under Object Lock (``audit.anchor = "s3://bucket/prefix"``).

Each anchor is put once: ``If-None-Match: *`` refuses a second put of the same name, and
Object Lock retention in **compliance** mode for ``audit.anchor_retention_days`` keeps
any account, root included, from deleting or overwriting the version before that date.
A bucket without Object Lock (it can only be turned on when the bucket is made) is
refused in one line.  The listing counts each object's versions: a second version of
an anchor (written around the conditional put) is itself a finding of ``uns audit
verify``, which reads the first version.  Credentials and the endpoint come from the
standard ``AWS_*`` environment, as for an S3 lake (``AWS_ENDPOINT_URL``,
``AWS_ALLOW_HTTP`` for a local server).
"""

from __future__ import annotations

import datetime as dt
import os
from typing import Any

from uns.errors import LakeError
from uns.lake.anchor_store import DEFAULT_WRITER_DIR, AnchorExists, StoredAnchor, seq_of

__all__ = ["S3Store"]


class S3Store:
    """Anchors as objects of ``s3://bucket/prefix`` under Object Lock."""

    def __init__(self, location: str, retention_days: int = 3650) -> None:
        self.location = location
        rest = location.split("://", 1)[1]
        self.bucket, _, prefix = rest.partition("/")
        if not self.bucket:
            raise LakeError(f"audit.anchor {location!r} names no bucket")
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.retention_days = retention_days
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            try:
                import boto3  # type: ignore[import-untyped]  # noqa: PLC0415 - only for S3 anchors
            except ImportError as exc:  # pragma: no cover - an optional dependency
                raise LakeError(
                    "S3 audit anchors need the Python package boto3 (pip install 'uns[s3]')"
                ) from exc
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
            self._client = boto3.client("s3", endpoint_url=endpoint)
        return self._client

    def _error(self, what: str, exc: Exception) -> LakeError:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
        return LakeError(f"cannot {what} s3://{self.bucket}/{self.prefix}: {code or exc}")

    def check(self) -> None:
        try:
            config = self._s3().get_object_lock_configuration(Bucket=self.bucket)
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code == "ObjectLockConfigurationNotFoundError":
                raise LakeError(
                    f"the anchor bucket {self.bucket} has no Object Lock: audit anchors need a bucket "
                    "created with Object Lock enabled (audit.anchor)"
                ) from None
            raise self._error("check the anchor bucket", exc) from exc
        if config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") != "Enabled":
            raise LakeError(f"the anchor bucket {self.bucket} has no Object Lock enabled (audit.anchor)")

    def put(self, name: str, data: bytes) -> None:
        until = dt.datetime.now(dt.UTC) + dt.timedelta(days=self.retention_days)
        try:
            self._s3().put_object(
                Bucket=self.bucket, Key=self.prefix + name, Body=data, IfNoneMatch="*",
                ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until,
            )  # fmt: skip
        except Exception as exc:
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise AnchorExists(f"anchor {name} exists already") from None
            raise self._error(f"write anchor {name} to", exc) from exc

    def _versions(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        try:
            pages = (
                self._s3().get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix)
            )
            for page in pages:
                out.extend(page.get("Versions", []))
        except Exception as exc:
            raise self._error("list the anchors in", exc) from exc
        return out

    def get(self, name: str) -> bytes | None:
        versions = [v for v in self._versions(self.prefix + name) if v["Key"] == self.prefix + name]
        if not versions:
            return None
        first = min(versions, key=lambda v: v["LastModified"])
        try:
            reply = self._s3().get_object(
                Bucket=self.bucket, Key=self.prefix + name, VersionId=first["VersionId"]
            )
            data: bytes = reply["Body"].read()
        except Exception as exc:
            raise self._error(f"read anchor {name} from", exc) from exc
        return data

    def listing(self) -> list[StoredAnchor]:
        by_key: dict[str, list[dict[str, Any]]] = {}
        for version in self._versions(self.prefix):
            by_key.setdefault(version["Key"], []).append(version)
        out: list[StoredAnchor] = []
        for key, versions in by_key.items():
            writer, _, name = key[len(self.prefix) :].rpartition("/")
            seq = seq_of(name)
            if seq is None or not writer or "/" in writer:
                continue
            first = min(v["LastModified"] for v in versions)
            stored = (first - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
            out.append(
                StoredAnchor("" if writer == DEFAULT_WRITER_DIR else writer, seq, stored, len(versions))
            )
        return out
