"""Parses Prometheus text from stdin with prometheus_client's reference parser and prints every
sample as JSON: {"name": [[{label: value}, value], ...]}. Exits non-zero on a parse error."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

samples = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.setdefault(s.name, []).append([s.labels, s.value])
json.dump(samples, sys.stdout)
