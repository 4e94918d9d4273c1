"""Schemathesis hooks for scripts/schemathesis.sh: rules between parts of a request that
OpenAPI cannot state, each also written in the document's descriptions. They drop
generated *valid* requests that would break such a rule (so positive_data_acceptance
judges only requests the API promises to take); invalid (negative) requests are all kept.
`filter_case` is used because the coverage phase applies case hooks only. The stateful
phase does not apply `filter_case`, so `before_call` makes such a request keep the rule
instead, the way a client of the API would (for example by sending the missing ce-*
headers with values the document allows).
"""

import json

import schemathesis
from schemathesis.core import NotSet

CE_REQUIRED = ("ce-specversion", "ce-id", "ce-source", "ce-type")


def _unquote(value):
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, chars = [], iter(value[1:-1])
        for c in chars:
            out.append(next(chars, "\\") if c == "\\" else c)
        return "".join(out)
    return value


def _bad_char(c):
    n = ord(c)
    return n < 0x20 or 0x7F <= n <= 0x9F or 0xFDD0 <= n <= 0xFDEF or (n & 0xFFFE) == 0xFFFE


def _header_breaks(name, value):
    """A binary-mode header the server refuses by a rule its description states but its
    schema (a non-empty string) does not: unquote, percent-decode strictly, UTF-8, no
    control characters or noncharacters, not empty, and for ce-source no whitespace."""
    if not isinstance(value, str):
        return False
    text = _unquote(value.strip(" \t"))
    raw, i = bytearray(), 0
    while i < len(text):
        if text[i] == "%":
            pair = text[i + 1 : i + 3]
            if len(pair) != 2 or any(c not in "0123456789abcdefABCDEF" for c in pair):
                return True
            raw.append(int(pair, 16))
            i += 3
        else:
            raw.extend(text[i].encode("utf-8", "surrogatepass"))
            i += 1
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    if decoded == "" or any(_bad_char(c) for c in decoded):
        return True
    return name == "ce-source" and any(c.isspace() for c in decoded)


def _astral_nonchar(value):
    """True if a JSON value holds a noncharacter above U+FFFF anywhere: the server refuses
    it, and the document's patterns (ECMA-262 without the u flag) cannot name it."""
    if isinstance(value, str):
        return any(ord(c) > 0xFFFF and (ord(c) & 0xFFFE) == 0xFFFE for c in value)
    if isinstance(value, dict):
        return any(_astral_nonchar(k) or _astral_nonchar(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_astral_nonchar(v) for v in value)
    return False


def _number(value, default):
    if value is None:
        return default
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


# Topics that generated requests created with `require_schemas: true` (before_call sees
# every creation). Such a topic refuses an event whose type has no schema, a rule the
# document states in words only: valid publishes go to topics without it.
REQUIRES_SCHEMAS = set()


def _requires_schemas(case):
    route = (case.method.upper(), case.operation.path)
    if route == ("POST", "/v1/topics/{topic}/events"):
        return (case.path_parameters or {}).get("topic") in REQUIRES_SCHEMAS
    if route == ("POST", "/v1/events"):
        topics = (case.query or {}).get("topic")
        topics = topics if isinstance(topics, list) else [topics]
        return any(t in REQUIRES_SCHEMAS for t in topics)
    return False


def _breaks_a_rule(case):
    route = (case.method.upper(), case.operation.path)
    if _requires_schemas(case):
        return True
    if route == ("POST", "/v1/topics/{topic}/events"):
        headers = case.headers or {}
        if any(k.lower().startswith("ce-") and _header_breaks(k.lower(), v) for k, v in headers.items()):
            return True
        if _astral_nonchar(case.body):
            return True
        # Binary mode: ce-specversion, ce-id, ce-source and ce-type come together. A
        # case without a body is sent without a content type, whatever its media type.
        media = "" if isinstance(case.body, NotSet) else (case.media_type or "")
        media = media.split(";")[0].strip().lower()
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
        # A push target's URL must be one the server may reach (the SSRF guard: public
        # addresses, or those [push] allowed_targets lists) and its secret a whsec_ key,
        # which the document describes but cannot state. Generated webhooks would also
        # send requests off this machine: valid requests here are pull subscriptions.
        if _push_target(case.body.get("target")):
            return True
        # A transform's strings follow the template rules ({{ $.path }}), which the
        # document's "any object" cannot state.
        if "{{" in json.dumps(case.body.get("transform")) or "}}" in json.dumps(case.body.get("transform")):
            return True
        # max_backoff_ms (default 300000) is at least initial_backoff_ms (default 1000).
        retry = case.body.get("retry")
        if isinstance(retry, dict):
            initial = _number(retry.get("initial_backoff_ms"), 1000)
            maximum = _number(retry.get("max_backoff_ms"), 300000)
            return initial is not None and maximum is not None and maximum < initial
    if route == ("POST", "/v1/keys") and isinstance(case.body, dict):
        # A key's expiry must be in the future.
        if case.body.get("expires_at") is not None:
            return True
    if route == ("PUT", "/v1/subscriptions/{name}/secret") and isinstance(case.body, dict):
        # A given secret must be whsec_ and the base64 of 24 to 64 bytes.
        return "secret" in case.body
    return False


def _push_target(target):
    return isinstance(target, dict) and target.get("kind") not in (None, "pull")


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


# Schemas that generated requests register live under this prefix. A schema registered
# for a short generated type ("0", say) would otherwise apply to generated events of that
# type in later requests, which the document cannot foresee (an event without data is
# valid by the document, but not once its type has a schema).
REGISTERED_PREFIX = "st-registered."


@schemathesis.hook
def before_call(ctx, case, kwargs):
    route = (case.method.upper(), case.operation.path)
    body = kwargs.get("json")
    if not isinstance(body, dict):
        # The stateful phase may send the body otherwise than as `json`: the case has it.
        body = case.body if isinstance(case.body, dict) else None
    if route == ("POST", "/v1/topics") and isinstance(body, dict):
        if body.get("require_schemas") is True and isinstance(body.get("name"), str):
            REQUIRES_SCHEMAS.add(body["name"])
    meta = case.meta
    if meta is not None and not meta.generation.mode.is_positive:
        return
    if _requires_schemas(case):
        # The fixture topic `orders` requires no schemas.
        if route == ("POST", "/v1/topics/{topic}/events"):
            params = case.path_parameters or {}
            params["topic"] = "orders"
            case.path_parameters = params
            if isinstance(kwargs.get("url"), str) and "/v1/topics/" in kwargs["url"]:
                base = kwargs["url"].rsplit("/v1/topics/", 1)[0]
                kwargs["url"] = base + "/v1/topics/orders/events"
        else:
            params = kwargs.get("params") or {}
            params["topic"] = "orders"
            kwargs["params"] = params
            case.query = dict(case.query or {}, topic="orders")
        if not _breaks_a_rule(case):
            return
    if route == ("POST", "/v1/schemas/{type}/versions"):
        params = case.path_parameters or {}
        ty = params.get("type")
        if isinstance(ty, str) and not ty.startswith(REGISTERED_PREFIX):
            params["type"] = (REGISTERED_PREFIX + ty)[:200]
            case.path_parameters = params
        return
    if not _breaks_a_rule(case):
        return
    route = (case.method.upper(), case.operation.path)
    if route == ("POST", "/v1/topics/{topic}/events"):
        headers = kwargs.setdefault("headers", {})
        for k in [k for k, v in headers.items() if k.lower().startswith("ce-") and _header_breaks(k.lower(), v)]:
            headers[k] = CE_DEFAULTS.get(k.lower(), "x")
        for name, value in CE_DEFAULTS.items():
            if not any(k.lower() == name for k in headers):
                headers[name] = value
    elif route == ("GET", "/v1/topics/{topic}/events"):
        params = kwargs.get("params") or {}
        params.pop("from_time", None)
    elif route == ("POST", "/v1/keys"):
        body = kwargs.get("json")
        if isinstance(body, dict) and body.get("expires_at") is not None:
            body["expires_at"] = "2100-01-01T00:00:00Z"
    elif route == ("PUT", "/v1/subscriptions/{name}/secret"):
        body = kwargs.get("json")
        if isinstance(body, dict):
            body.pop("secret", None)
    elif route == ("POST", "/v1/topics/{topic}/subscriptions"):
        body = kwargs.get("json")
        if isinstance(body, dict) and _push_target(body.get("target")):
            body["target"] = {"kind": "pull"}
        if isinstance(body, dict) and "transform" in body:
            body["transform"] = {"deal": "{{ $.data.deal_id }}", "said": "{{ $.subject }} won"}
        if isinstance(body, dict) and isinstance(body.get("retry"), dict):
            retry = body["retry"]
            retry["max_backoff_ms"] = max(
                _number(retry.get("max_backoff_ms"), 300000) or 0,
                _number(retry.get("initial_backoff_ms"), 1000) or 0,
            )
