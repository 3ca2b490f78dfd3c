"""Secrets in URLs never leave the process: every URL shown in a log, error, record, page or id goes through `redact`.

A URL carries secrets in three places: user:password before the host, query values named
like a credential (token, sig, hdnts, pwd, X-Amz-Signature …), and, for RTMP, the stream key:
the last segment of the path (rtmp://host/APP/KEY), which is all a publisher needs to push.
"""
from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

SECRET_PARAM = re.compile(r"key|token|pass|pwd|secret|auth|sig|credential|hdnts|hash|policy|session|jwt|ticket",
                          re.IGNORECASE)
RTMP_SCHEMES = ("rtmp", "rtmps", "rtmpe", "rtmpt", "rtmpte", "rtmpts")
HIDDEN = "***"


def redact(url: str) -> str:
    """`url` fit for logs, errors, records and ids: user:password, secret query values and RTMP stream keys become `***`.

    Plain file paths come back unchanged; a URL too malformed to parse keeps only its scheme.
    """
    if "://" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.partition("://")[0] + f"://{HIDDEN}"
    userinfo, _, host = parts.netloc.rpartition("@")
    netloc = f"{HIDDEN}@{host}" if userinfo else parts.netloc  # "udp://@:1234" has an empty userinfo: nothing to hide
    query = "&".join(_redact_param(p) for p in parts.query.split("&")) if parts.query else ""
    path = parts.path
    if parts.scheme.lower() in RTMP_SCHEMES:
        app, slash, key = path.strip("/").partition("/")  # rtmp://host/APP[/INSTANCE]/KEY: all after the app
        path = f"/{app}/{HIDDEN}" if slash and key else path
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


def _redact_param(param: str) -> str:
    name, eq, _ = param.partition("=")
    return f"{name}={HIDDEN}" if eq and SECRET_PARAM.search(name) else param
