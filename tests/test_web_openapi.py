"""The review workspace's API contract: schemas/web-api.openapi.yaml names every route the
server has, with every method, and each refusal status the server can answer."""

from __future__ import annotations

from pathlib import Path

import yaml

from uns.web.api import api_routes

ROOT = Path(__file__).resolve().parent.parent
DOC = yaml.safe_load((ROOT / "schemas" / "web-api.openapi.yaml").read_text())


def test_every_route_of_the_server_is_in_the_openapi_file_and_back() -> None:
    served = {
        (route.path, method.lower())
        for route in api_routes()
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in DOC["paths"].items() for method in item}
    assert DOC["openapi"] == "3.1.0"
    assert served == documented


def test_each_refusal_is_documented_where_it_can_happen() -> None:
    paths = DOC["paths"]
    assert {"400", "401", "403", "404", "409", "415"} <= set(
        paths["/api/batches/{batch_id}/dispositions"]["post"]["responses"]
    )
    assert {"401", "403", "409", "423"} <= set(
        paths["/api/batches/{batch_id}/signatures"]["post"]["responses"]
    )
    assert {"401", "423"} <= set(paths["/api/session"]["post"]["responses"])
    rules = set(DOC["components"]["schemas"]["Error"]["properties"]["rule"]["enum"])
    from uns.batch.review import RULES  # noqa: PLC0415

    assert set(RULES) <= rules
