"""Per-operation status counts of a schemathesis run, from its VCR cassette.

Prints `METHOD path -> {status: count}` for every operation of the OpenAPI document that
was not excluded, and exits non-zero when an operation never got a 2xx answer (or was
never called).

Usage: python3 scripts/schemathesis_summary.py OPENAPI_URL CASSETTE EXCLUDE_REGEX
"""

import json
import re
import sys
import urllib.parse
import urllib.request
from collections import Counter, defaultdict

import yaml

doc = json.load(urllib.request.urlopen(sys.argv[1]))
cassette = yaml.safe_load(open(sys.argv[2], encoding="utf-8"))
exclude = re.compile(sys.argv[3])

operations = []
for path, item in doc["paths"].items():
    if exclude.search(path):
        continue
    # A literal segment beats a parameter: /dlq/redrive is not /dlq/{entry}.
    pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(path)) + "$")
    for method in item:
        if method in ("get", "put", "post", "delete", "patch", "head", "options"):
            operations.append((method.upper(), path, pattern, path.count("{")))
operations.sort(key=lambda o: o[3])

counts = defaultdict(Counter)
for interaction in cassette.get("http_interactions") or []:
    request = interaction["request"]
    response = interaction.get("response")
    if response is None:
        continue
    path = urllib.parse.urlsplit(request["uri"]).path
    for method, template, pattern, _ in operations:
        if method == request["method"] and pattern.match(path):
            counts[(method, template)][int(response["status"]["code"])] += 1
            break

# Schemathesis loads the document from this URL and does not test that operation itself;
# scripts/schemathesis.sh fetched and validated it (a 200) before the run.
own = urllib.parse.urlsplit(sys.argv[1]).path
missing = []
width = max(len(f"{m} {p}") for m, p, _, _ in operations)
for method, template, _, _ in sorted(operations, key=lambda o: (o[1], o[0])):
    c = counts[(method, template)]
    shown = ", ".join(f"{s}: {n}" for s, n in sorted(c.items()))
    ok = any(200 <= s < 300 for s in c)
    if template == own and method == "GET" and not c:
        print(f"   {method + ' ' + template:<{width}}  (the document itself: loaded and validated before the run)")
        continue
    print(f"{'  ' if ok else '!!'} {method + ' ' + template:<{width}}  {{{shown}}}")
    if not ok:
        missing.append(f"{method} {template}")
if missing:
    print(f"schemathesis: {len(missing)} operation(s) never returned 2xx: {', '.join(missing)}")
    sys.exit(1)
print(f"schemathesis: every one of {len(operations)} operations returned 2xx at least once")
