"""Validates response bodies against tempest's published Nova/Cinder/Glance
response schemas (python3-tempest), the way tempest's service clients do:
the schema of a call at microversion 2.N is the one in the newest module
v2_M (M <= N) that defines it.

stdin: JSON list of {"api": "compute", "schema": "servers.get_server",
"version": "2.79", "status": 200, "body": {...}}.
stdout: JSON list of {"index", "ok", "module", "error"}.
"""
import importlib
import json
import sys

import jsonschema


def find_schema(api, name, version):
    module_name, attr = name.rsplit('.', 1)
    major, minor = (int(x) for x in version.split('.'))
    for m in range(minor, 0, -1):
        package = 'v%d_%d' % (major, m)
        try:
            module = importlib.import_module('tempest.lib.api_schema.response.%s.%s.%s' % (api, package, module_name))
        except ImportError:
            continue
        if hasattr(module, attr):
            return package + '.' + module_name, getattr(module, attr)
    # The Block Storage base schemas (3.0) live in the api package itself, not in a v3_0 package.
    try:
        module = importlib.import_module('tempest.lib.api_schema.response.%s.%s' % (api, module_name))
    except ImportError:
        module = None
    if module is not None and hasattr(module, attr):
        return module_name, getattr(module, attr)
    raise LookupError('no tempest schema %s for %s %s' % (name, api, version))


def format_checker(api):
    """Volume cases are checked with tempest's own format checker (draft 4 formats plus
    iso8601-date-time), as its volume clients do; compute keeps the checker it was written against."""
    if api == 'volume':
        from tempest.lib.common import jsonschema_validator
        return jsonschema_validator.FORMAT_CHECKER
    return jsonschema.FormatChecker()


def main():
    cases = json.load(sys.stdin)
    out = []
    for index, case in enumerate(cases):
        try:
            where, schema = find_schema(case['api'], case['schema'], case['version'])
            codes = schema['status_code']
            if case['status'] not in codes:
                raise AssertionError('status %s not in %s' % (case['status'], codes))
            if 'response_body' in schema:
                jsonschema.Draft4Validator(schema['response_body'], format_checker=format_checker(case['api'])).validate(case['body'])
            elif case['api'] == 'volume' and case['body'] not in (None, '', {}):
                # tempest's rest client: a schema without response_body means the answer has none.
                raise AssertionError('HTTP response body should not exist (%s)' % json.dumps(case['body'])[:300])
            out.append({'index': index, 'ok': True, 'module': where, 'error': None})
        except Exception as error:  # report every case, not only the first failure
            out.append({'index': index, 'ok': False, 'module': None, 'error': '%s: %s' % (type(error).__name__, str(error)[:1500])})
    json.dump(out, sys.stdout)


main()
