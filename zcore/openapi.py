"""The OpenAPI 3.1 document of a node's REST API, generated from its API message classes.

Besides the standard description (paths, parameters, request bodies, answers) the document
carries two extensions that ``zstack-cli`` reads: ``x-zstack-apis`` (every API in the shape
of ZStack's API description: method, path, envelope, async, parameters) and
``x-zstack-resources`` (the queryable fields and expansions of every resource type).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from zcore import __version__
from zcore.api import APIMessage, Param, QueryMessage

if TYPE_CHECKING:
    from zcore.node import Node

__all__ = ["openapi_document"]

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean",
               list: "array", dict: "object"}

_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "object", "properties": {
        "code": {"type": "string"}, "description": {"type": "string"},
        "details": {"type": "string"}}}},
}


def _schema(param: Param) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": _JSON_TYPES[param.type]}
    if param.type is list:
        schema["items"] = {"type": "string"}
    if param.max_length is not None:
        schema["maxLength"] = param.max_length
    if param.min_length is not None:
        schema["minLength"] = param.min_length
    if param.valid_values is not None:
        schema["enum"] = list(param.valid_values)
    if param.valid_regex is not None:
        schema["pattern"] = param.valid_regex
    if param.number_range is not None:
        schema["minimum"], schema["maximum"] = param.number_range
    if param.description:
        schema["description"] = param.description
    return schema


def _body_schema(api: type[APIMessage]) -> dict[str, Any]:
    path_vars = set(api.path_variables())
    properties = {name: _schema(p) for name, p in api.params.items() if name not in path_vars}
    required = [name for name, p in api.params.items() if p.required and name not in path_vars]
    params: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        params["required"] = required
    return params


def _responses(api_async: bool) -> dict[str, Any]:
    ok = {"description": "the result", "content": {"application/json": {
        "schema": {"type": "object"}}}}
    failed = {"description": "the API failed",
              "content": {"application/json": {"schema": _ERROR}}}
    responses: dict[str, Any] = {
        "400": {"description": "malformed request",
                "content": {"application/json": {"schema": _ERROR}}},
    }
    if api_async:
        responses["202"] = {"description": "accepted: poll the location",
                            "content": {"application/json": {"schema": {
                                "type": "object",
                                "properties": {"location": {"type": "string"},
                                               "apiTimeout": {"type": "integer"}}}}}}
    else:
        responses["200"] = ok
        responses["503"] = failed
    return responses


def _operation(method: str, apis: Sequence[type[APIMessage]]) -> dict[str, Any]:
    first = apis[0]
    names = [a.api_name for a in apis]
    operation: dict[str, Any] = {
        "operationId": "_or_".join(names),
        "summary": ", ".join(names),
        "description": "\n\n".join(f"{a.api_name}: {(a.__doc__ or '').strip()}" for a in apis),
        "responses": _responses(first.is_async),
    }
    if any(a.need_session for a in apis):
        operation["security"] = [{"session": []}]
    parameters: list[dict[str, Any]] = [
        {"name": var, "in": "path", "required": True, "schema": {"type": "string"}}
        for var in first.path_variables()]
    if method in ("GET", "DELETE"):
        path_vars = set(first.path_variables())
        for name, param in first.params.items():
            if name in path_vars:
                continue
            entry: dict[str, Any] = {"name": name, "in": "query", "required": param.required,
                                     "schema": _schema(param)}
            if param.type is list:
                entry["explode"] = True
            parameters.append(entry)
    elif method == "POST":
        body = {"type": "object", "required": [first.envelope or "params"], "properties": {
            first.envelope or "params": _body_schema(first),
            "systemTags": {"type": "array", "items": {"type": "string"}},
            "userTags": {"type": "array", "items": {"type": "string"}}}}
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    else:
        variants = [{"type": "object", "required": [a.envelope], "additionalProperties": False,
                     "properties": {a.envelope: _body_schema(a)}} for a in apis if a.envelope]
        schema = variants[0] if len(variants) == 1 else {"oneOf": variants}
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": schema}}}
    if parameters:
        operation["parameters"] = parameters
    return operation


def openapi_document(node: Node) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every API ``node`` serves, under ``/zstack/v1``."""
    from zcore.rest import route_groups

    groups = route_groups(node.api.messages.values())
    paths: dict[str, dict[str, Any]] = defaultdict(dict)
    for (method, path), apis in sorted(groups.items(), key=lambda kv: kv[0][1]):
        paths[f"/zstack/v1{path}"][method.lower()] = _operation(method, apis)
        queries = [a for a in apis if issubclass(a, QueryMessage)]
        one = f"{path}/{{uuid}}"
        if method == "GET" and queries and ("GET", one) not in groups:
            operation = _operation("GET", queries[:1])
            operation["operationId"] = f"Get{queries[0].query_resource}"
            operation["summary"] = f"one {queries[0].query_resource} by uuid"
            operation["parameters"] = [
                {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string"}}]
            paths[f"/zstack/v1{one}"]["get"] = operation
    paths["/zstack/v1/api-jobs/{uuid}"]["get"] = {
        "operationId": "PollApiJob",
        "summary": "the state or result of an asynchronous API call",
        "parameters": [{"name": "uuid", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {
            "200": {"description": "done", "content": {"application/json": {
                "schema": {"type": "object"}}}},
            "202": {"description": "still running"},
            "404": {"description": "unknown or expired job"},
            "503": {"description": "failed", "content": {"application/json": {
                "schema": _ERROR}}},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "ZStack-compatible management node API", "version": __version__},
        "components": {"securitySchemes": {"session": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "OAuth <session uuid> from LogInByAccount"}}},
        "paths": dict(paths),
        "x-zstack-apis": {name: cls.describe() for name, cls in
                          sorted(node.api.messages.items())},
        "x-zstack-resources": node.query.describe(),
    }
