"""amoCRM's error bodies: problem JSON for the API, HTML pages for what nginx answers."""

from __future__ import annotations

from typing import Any

TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
}


class ApiProblem(Exception):
    """Raised anywhere while serving a request; becomes an `application/problem+json` answer."""

    def __init__(self, status: int, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.body: dict[str, Any] = {**extra, **problem(status, detail)}


def problem(status: int, detail: str) -> dict[str, Any]:
    return {
        "title": TITLES.get(status, "Error"),
        "type": f"https://httpstatus.es/{status}",
        "status": status,
        "detail": detail,
    }


def validation_failed(entity_errors: list[dict[str, Any]]) -> ApiProblem:
    """400 with `validation-errors`: one entry per rejected entity, keyed by its request_id."""
    return ApiProblem(400, "Request validation failed", **{"validation-errors": entity_errors})


def internal_error(trace_id: str) -> dict[str, Any]:
    # amoCRM's 500 body has no `type` (vendor docs example).
    return {
        "title": "ErrInternalServer",
        "status": 500,
        "detail": "Our team are probably already working on the elimination of the problem",
        "trace_id": trace_id,
    }


def html_page(status: int, title: str) -> bytes:
    """An nginx-style error page: what gateways answer for 403 blocks, HTML 429s, 502s, 504s."""
    return (
        f"<html>\r\n<head><title>{status} {title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{status} {title}</h1></center>\r\n<hr><center>nginx</center>\r\n"
        "</body>\r\n</html>\r\n"
    ).encode()
