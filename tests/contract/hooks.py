"""Schemathesis hooks of `./dev contract` (loaded through SCHEMATHESIS_HOOKS).

Header values go on the wire as UTF-8. `requests` sends a `str` header as
Latin-1, so a generated `é` would arrive as the byte 0xE9, which is not UTF-8:
real Spin refuses such a request with a bare 500 before any component runs,
and the local host does the same (docs/host-vs-spin.md; the host conformance
suite pins it on both). Sent as UTF-8, the same non-ASCII value reaches the
app and is judged there (an `Idempotency-Key` that is not visible ASCII is
`400`), in every phase.
"""

import schemathesis


@schemathesis.hook
def before_call(context, case, **kwargs):
    if case.headers:
        for name, value in list(case.headers.items()):
            if isinstance(value, str) and not value.isascii():
                case.headers[name] = value.encode("utf-8").decode("latin-1")
