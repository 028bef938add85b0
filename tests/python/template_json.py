"""Prints a CloudFormation/SAM template as JSON, short-form intrinsics (!Ref, !Sub, ...) in their
long form, using cfn-lint's own parser: the drift test (tests/tests/deploy.rs) reads it."""

import json
import sys

from cfnlint.decode import decode

template, problems = decode(sys.argv[1])
if problems:
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1)
json.dump(template, sys.stdout)
