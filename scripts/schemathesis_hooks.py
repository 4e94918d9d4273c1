"""Schemathesis hooks for scripts/schemathesis.sh: rules between parts of a request that
OpenAPI cannot state, each also written in the document's descriptions. They drop
generated *valid* requests that would break such a rule (so positive_data_acceptance
judges only requests the API promises to take); invalid (negative) requests are all kept.
`filter_case` is used because the coverage phase applies case hooks only. The stateful
phase does not apply `filter_case`, so `before_call` makes such a request keep the rule
instead, the way a client of the API would (for example by sending the missing ce-*
headers with values the document allows).
"""

import schemathesis

CE_REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")


def _number(value, default):
    if value is None:
        return default
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _breaks_a_rule(case):
    route = (case.method.upper(), case.operation.path)
    if route == ("POST", "/v1/topics/{topic}/events"):
        # Binary mode: ce-specversion, ce-id, ce-source and ce-type come together.
        media = (case.media_type or "").split(";")[0].strip().lower()
        if media not in ("application/cloudevents+json", "application/cloudevents-batch+json"):
            names = {k.lower() for k in (case.headers or {})}
            present = [h for h in CE_REQUIRED if h in names]
            if len(present) not in (0, len(CE_REQUIRED)):
                return True
            # Without the ce-* headers the body must be a structured event, which the
            # document's "any JSON" cannot say; and only a binary-mode event may come
            # without a body. Either way: a valid request here is a binary-mode one.
            return not present
    if route == ("GET", "/v1/topics/{topic}/events"):
        # A read starts at an offset (`from`) or at a time (`from_time`), not both.
        query = case.query or {}
        return "from" in query and "from_time" in query
    if route == ("POST", "/v1/topics/{topic}/subscriptions") and isinstance(case.body, dict):
        # max_backoff_ms (default 300000) is at least initial_backoff_ms (default 1000).
        retry = case.body.get("retry")
        if isinstance(retry, dict):
            initial = _number(retry.get("initial_backoff_ms"), 1000)
            maximum = _number(retry.get("max_backoff_ms"), 300000)
            return initial is not None and maximum is not None and maximum < initial
    return False


@schemathesis.hook
def filter_case(ctx, case):
    meta = case.meta
    if meta is not None and not meta.generation.mode.is_positive:
        return True
    return not _breaks_a_rule(case)


# Values the document allows for each binary-mode header.
CE_DEFAULTS = {
    "ce-specversion": "1.0",
    "ce-id": "evt-stateful",
    "ce-source": "urn:acme:crm",
    "ce-type": "order.placed",
}


@schemathesis.hook
def before_call(ctx, case, kwargs):
    meta = case.meta
    if meta is not None and not meta.generation.mode.is_positive:
        return
    if not _breaks_a_rule(case):
        return
    route = (case.method.upper(), case.operation.path)
    if route == ("POST", "/v1/topics/{topic}/events"):
        headers = kwargs.setdefault("headers", {})
        for name, value in CE_DEFAULTS.items():
            if not any(k.lower() == name for k in headers):
                headers[name] = value
    elif route == ("GET", "/v1/topics/{topic}/events"):
        params = kwargs.get("params") or {}
        params.pop("from_time", None)
    elif route == ("POST", "/v1/topics/{topic}/subscriptions"):
        body = kwargs.get("json")
        if isinstance(body, dict) and isinstance(body.get("retry"), dict):
            retry = body["retry"]
            retry["max_backoff_ms"] = max(
                _number(retry.get("max_backoff_ms"), 300000) or 0,
                _number(retry.get("initial_backoff_ms"), 1000) or 0,
            )
