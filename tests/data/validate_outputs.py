"""Validates JSON lines against one shape of seed/schema/output.schema.json.

Usage: validate_outputs.py SCHEMA SHAPE FILE

SHAPE is a definition of the schema (scored, enriched, prediction_log). Prints the number of
lines validated; exits with status 1 naming the first line that does not validate.
"""

import json
import sys

import jsonschema


def main() -> int:
    schema_path, shape, path = sys.argv[1:4]
    with open(schema_path, encoding="utf-8") as f:
        root = json.load(f)
    jsonschema.Draft202012Validator.check_schema(root)
    if shape not in root["$defs"]:
        print(f"the schema has no shape {shape!r}", file=sys.stderr)
        return 1
    schema = dict(root)
    del schema["anyOf"]
    schema["$ref"] = f"#/$defs/{shape}"
    validator = jsonschema.Draft202012Validator(
        schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
    )
    count = 0
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            errors = sorted(validator.iter_errors(record), key=lambda e: list(e.path))
            if errors:
                for error in errors[:5]:
                    where = "/".join(str(p) for p in error.absolute_path)
                    print(f"{path}:{number}: {where}: {error.message}", file=sys.stderr)
                print(f"line {number}: {line.strip()}", file=sys.stderr)
                return 1
            # The whole schema accepts it too.
            jsonschema.validate(record, root, cls=jsonschema.Draft202012Validator)
            count += 1
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
