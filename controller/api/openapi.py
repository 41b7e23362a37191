"""The OpenAPI 3.1 document, generated from the route table and the pydantic schemas."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from controller import __version__
from controller.api.routes import ROUTES
from controller.api.schemas import Error

REF = "#/components/schemas/{model}"


def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [Error]
    for route in ROUTES:
        models += [m for m in (route.body, route.response) if m is not None]
    unique = list(dict.fromkeys(models))
    keys, defs = models_json_schema([(m, "validation") for m in unique], ref_template=REF)
    ref = {m: keys[(m, "validation")] for m in unique}
    error = {"description": "Error", "content": {"application/json": {"schema": ref[Error]}}}
    errors = {str(status): error for status in (400, 401, 403, 404, 409)}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {
            "summary": route.summary,
            "description": f"Needs a token with the {route.role} role (or above).",
            "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.path)}",
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in re.findall(r"{(\w+)}", route.path)
            ] + [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                 for q in route.query],
            "responses": dict(errors),
        }
        if route.body is not None:
            op["requestBody"] = {"required": True,
                                 "content": {"application/json": {"schema": ref[route.body]}}}
        if route.response is not None:
            op["responses"][str(route.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": ref[route.response]}},
            }
        elif route.text:
            op["responses"][str(route.status)] = {
                "description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}},
            }
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "Strata", "version": __version__},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}),
                       "securitySchemes": {"bearer": {
                           "type": "http", "scheme": "bearer",
                           "description": "An API token (strata-controller tokens create, "
                                          "or POST /v1/tokens)."}}},
        "security": [{"bearer": []}],
    }
