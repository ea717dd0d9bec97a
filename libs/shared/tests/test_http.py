"""``problems`` (OpenAPI problem answers) and ``JSON_INTEGER``: units, no I/O."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import FastAPI
from pydantic import BaseModel, Field, ValidationError

from shared.http import JSON_INTEGER, problems


def test_problems_are_problem_json_and_503_is_declared_unless_told_otherwise():
    responses = problems(404, 422)
    assert sorted(responses) == [404, 422, 503]
    for response in responses.values():
        assert list(response["content"]) == ["application/problem+json"]
    assert "Retry-After" in responses[503]["headers"]
    assert not responses[503]["headers"]["Retry-After"].get("required")
    assert sorted(problems(401, unavailable=False)) == [401]
    assert problems(429)[429]["headers"]["Retry-After"]["required"] is True
    assert problems(409, described={409: "The slug is taken"})[409]["description"] == "The slug is taken"


def test_declared_422_replaces_fastapis_default_validation_error():
    app = FastAPI()

    @app.get("/things/{thing_id}", responses=problems(404, 422))
    async def get_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    document = app.openapi()
    answer = document["paths"]["/things/{thing_id}"]["get"]["responses"]["422"]
    assert list(answer["content"]) == ["application/problem+json"]
    assert "HTTPValidationError" not in document.get("components", {}).get("schemas", {})


class Body(BaseModel):
    n: Annotated[int, Field(ge=1, le=10), JSON_INTEGER]


def test_json_integer_reads_like_its_schema():
    assert Body.model_json_schema()["properties"]["n"] == {
        "maximum": 10,
        "minimum": 1,
        "title": "N",
        "type": "integer",
    }
    assert Body.model_validate({"n": 5}).n == 5
    assert Body.model_validate({"n": 5.0}).n == 5
    for value in ("5", True, 5.5, 11):
        with pytest.raises(ValidationError):
            Body.model_validate({"n": value})
