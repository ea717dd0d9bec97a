"""The fuzz tests' own checks, next to schemathesis' built-in ones.

- ``TenantIsolation``: whatever a 2xx answer shows of another tenant, client B's callers can neither see nor
  change (replayed as each of them).
- ``PositiveDataAccepted``: schemathesis' ``positive_data_acceptance`` minus refusals by business rules a
  JSON Schema cannot state.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemathesis.specs.openapi.checks import positive_data_acceptance

__all__ = ["PositiveDataAccepted", "TenantIsolation"]


@dataclass(eq=False)
class TenantIsolation:
    """A check: what a successful response shows of a tenant other than B, client B's callers can neither
    see nor change.

    For each resource in a 2xx body (the body itself, or the ``items`` of a page), ``resource_url`` gives
    its URL and owning client (``None``: not a tenant resource). Unless the owner is B, the check replays
    as every caller in ``b_callers``: ``GET <url>`` → 404 (the same answer as for a missing resource), and
    every URL of ``listings(obj, owner)`` → 404 or a page without the resource. With ``patch_body`` set
    (stateful runs) it also sends ``PATCH <url>`` with that body and ``DELETE <url>`` → 404 each, then
    re-reads the resource as ``owner_headers``: still there, ``version`` unchanged.
    """

    client: Any
    b_client_id: str
    b_callers: Mapping[str, dict[str, str]]
    resource_url: Callable[[Mapping[str, Any], str], tuple[str, str] | None]
    listings: Callable[[Mapping[str, Any], str], list[str]] = lambda obj, owner: []
    patch_body: Callable[[str], Mapping[str, Any]] | None = None
    owner_headers: dict[str, str] | None = None
    replays: Counter[str] = field(default_factory=Counter)
    __name__ = "tenant_isolation"

    def __call__(self, ctx: Any, response: Any, case: Any) -> bool | None:
        if not 200 <= response.status_code < 300 or not response.content:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        objects = body.get("items") if isinstance(body, dict) and "items" in body else [body]
        for obj in objects or ():
            if isinstance(obj, dict):
                self._probe(obj, case.path)
        return None

    def _probe(self, obj: Mapping[str, Any], path: str) -> None:
        found = self.resource_url(obj, path)
        if found is None:
            return
        url, owner = found
        if owner == self.b_client_id:
            return
        for name, headers in self.b_callers.items():
            self._expect_404(name, "GET", url, headers, owner)
            for listing in self.listings(obj, owner):
                r = self.client.get(listing, headers=headers)
                self.replays["list"] += 1
                leaked = r.status_code == 200 and any(
                    isinstance(item, dict) and item.get("id") == obj.get("id") for item in r.json()["items"]
                )
                if leaked or r.status_code not in (200, 404):
                    self._fail(name, "GET", listing, owner, r)
            if self.patch_body is not None:
                self._expect_404(name, "PATCH", url, headers, owner, json=dict(self.patch_body(url)))
                self._expect_404(name, "DELETE", url, headers, owner)
        if self.patch_body is not None and self.owner_headers is not None and "version" in obj:
            after = self.client.get(url, headers=self.owner_headers)
            if after.status_code != 200 or after.json().get("version") != obj["version"]:
                raise AssertionError(
                    f"Tenant isolation broken: after client {self.b_client_id}'s refused writes, GET {url} "
                    f"as its owner answered {after.status_code} {after.text[:300]} (expected version "
                    f"{obj['version']})"
                )

    def _expect_404(
        self, name: str, method: str, url: str, headers: dict[str, str], owner: str, **kwargs: Any
    ) -> None:
        r = self.client.request(method, url, headers=headers, **kwargs)
        self.replays[method] += 1
        if r.status_code != 404:
            self._fail(name, method, url, owner, r)

    def _fail(self, name: str, method: str, url: str, owner: str, r: Any) -> None:
        raise AssertionError(
            f"Tenant isolation broken: {method} {url} as {name} (client {self.b_client_id}) answered "
            f"{r.status_code} for a resource of client {owner}: {r.text[:300]}"
        )


@dataclass(eq=False)
class PositiveDataAccepted:
    """Schemathesis' ``positive_data_acceptance``, minus refusals by rules a JSON Schema cannot state.

    A schema-valid request may still break a business rule the OpenAPI document cannot express: an opaque
    cursor that does not decode, an ``If-Match`` naming another version, an empty PATCH, a pydantic
    validator (control characters, metadata depth), a workflow id no definition has.
    Those answers are problems whose ``code`` is in ``codes`` (a 400, 412, 415 or 422), or a 422
    ``validation_failed`` whose every error is a ``value_error`` (raised by a validator, not by a schema
    keyword), or an OAuth error of the token endpoint about credentials (``oauth_errors``). Anything else -
    a 422 for a schema keyword the document does not state, or a 400 from a parser - still fails.
    """

    codes: frozenset[str] = frozenset(
        {
            "invalid_cursor",
            "empty_update",
            "fields_not_writable",
            "precondition_failed",
            "version_mismatch",
            "unknown_workflow",  # a project type / workflow id the workflows service never announced
        }
    )
    # Token endpoint answers about credentials that do not exist (what 401 is for other operations).
    oauth_errors: frozenset[str] = frozenset(
        {"invalid_grant", "invalid_client", "invalid_scope", "unauthorized_client", "unsupported_grant_type"}
    )
    tolerated: Counter[str] = field(default_factory=Counter)
    __name__ = "positive_data_acceptance"

    def __call__(self, ctx: Any, response: Any, case: Any) -> bool | None:
        if response.status_code in (400, 412, 415, 422):
            try:
                body = response.json()
            except ValueError:
                body = None
            if isinstance(body, dict) and body.get("error") in self.oauth_errors:
                self.tolerated[f"oauth {body['error']}"] += 1  # RFC 6749 5.2: unknown grant, client, scope
                return None
            if isinstance(body, dict):
                code = body.get("code")
                errors = body.get("errors")
                if code in self.codes or (
                    code == "validation_failed"
                    and isinstance(errors, list)
                    and errors
                    and all(isinstance(e, dict) and e.get("type") == "value_error" for e in errors)
                ):
                    self.tolerated[str(code)] += 1
                    return None
        return positive_data_acceptance(ctx, response, case)
