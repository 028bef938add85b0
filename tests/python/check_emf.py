"""Checks CloudWatch Embedded Metric Format lines read from stdin against the EMF specification
(https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html):
a JSON Schema for the document structure, then the rules a schema cannot say (every dimension and
metric is a member of the root with the right type). Lines that are not EMF (plain logs) are
skipped. Prints the EMF documents as a JSON array; exits non-zero naming the first violation."""
import json
import sys

import jsonschema

UNITS = [
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes", "Gigabytes",
    "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits", "Percent", "Count",
    "Bytes/Second", "Kilobytes/Second", "Megabytes/Second", "Gigabytes/Second",
    "Terabytes/Second", "Bits/Second", "Kilobits/Second", "Megabits/Second", "Gigabits/Second",
    "Terabits/Second", "Count/Second", "None",
]
SCHEMA = {
    "type": "object",
    "required": ["_aws"],
    "properties": {
        "_aws": {
            "type": "object",
            "required": ["Timestamp", "CloudWatchMetrics"],
            "properties": {
                "Timestamp": {"type": "integer", "minimum": 0},
                "LogGroupName": {"type": "string"},
                "CloudWatchMetrics": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["Namespace", "Dimensions", "Metrics"],
                        "properties": {
                            "Namespace": {"type": "string", "minLength": 1, "maxLength": 255},
                            "Dimensions": {
                                "type": "array",
                                "items": {
                                    "type": "array",
                                    "maxItems": 30,
                                    "items": {"type": "string", "minLength": 1, "maxLength": 250},
                                },
                            },
                            "Metrics": {
                                "type": "array",
                                "maxItems": 100,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["Name"],
                                    "properties": {
                                        "Name": {"type": "string", "minLength": 1, "maxLength": 1024},
                                        "Unit": {"enum": UNITS},
                                        "StorageResolution": {"enum": [1, 60]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}


def number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


documents = []
for n, line in enumerate(sys.stdin, 1):
    line = line.strip()
    if not line.startswith("{"):
        continue
    doc = json.loads(line)
    if "_aws" not in doc:
        continue
    try:
        jsonschema.validate(doc, SCHEMA)
    except jsonschema.ValidationError as e:
        sys.exit(f"line {n}: {e.message}")
    for directive in doc["_aws"]["CloudWatchMetrics"]:
        for dimension in (d for dims in directive["Dimensions"] for d in dims):
            if not isinstance(doc.get(dimension), str):
                sys.exit(f"line {n}: dimension {dimension} is not a string member of the root")
        for metric in directive["Metrics"]:
            value = doc.get(metric["Name"])
            values = value if isinstance(value, list) else [value]
            if not values or len(values) > 100 or not all(number(v) for v in values):
                sys.exit(f"line {n}: metric {metric['Name']} is not a number member of the root")
    documents.append(doc)
json.dump(documents, sys.stdout)
