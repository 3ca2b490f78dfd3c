"""Webhook sink: POSTs alert events as JSON to a URL, with retries."""
from __future__ import annotations

import base64
import logging
import time
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from monitor.records import AlertEvent, to_json
from monitor.redaction import redact
from monitor.sinks import Sink

log = logging.getLogger(__name__)


class WebhookSink(Sink):
    """POSTs alert events as JSON (`records.to_json`) to a URL, retrying with capped exponential backoff.

    It takes alert events only and, by default, posts the firing and resolved ones. `Sinks` runs
    it on its own thread, so a dead endpoint (up to `retries` backoffs per event) delays only the
    webhook; an event not delivered is counted in `lost` and reported by `health()`.
    Credentials in the URL (https://user:pass@host/…) are sent as HTTP basic auth and never logged.
    """

    kinds = frozenset({"alerts"})

    def __init__(self, url: str, retries: int = 3, backoff_s: float = 0.5, max_backoff_s: float = 30.0,
                 timeout_s: float = 5.0, states: tuple[str, ...] = ("firing", "resolved")):
        self.url, self.headers = _basic_auth(url)
        self.safe_url = redact(url)
        self.retries, self.backoff_s, self.max_backoff_s = retries, backoff_s, max_backoff_s
        self.timeout_s, self.states = timeout_s, states
        self.lost = 0
        self._problem: str | None = None

    def post(self, event: AlertEvent) -> bool:
        """Deliver one event; True once the endpoint answers 2xx. Client errors (4xx but 408/429) are not retried."""
        body = to_json(event).encode()
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)))
            req = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", **self.headers})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s):
                    self._problem = None
                    return True
            except urllib.error.HTTPError as e:
                problem = f"HTTP {e.code}"
                if 400 <= e.code < 500 and e.code not in (408, 429):
                    break
            except (urllib.error.URLError, OSError) as e:
                problem = str(getattr(e, "reason", e))
        self.lost += 1
        self._problem = f"webhook {self.safe_url}: not delivered after {attempt + 1} attempt(s): {problem}"
        log.warning("webhook %s: alert %s (%s) not delivered after %d attempt(s): %s",
                    self.safe_url, event.alert_id, event.state, attempt + 1, problem)
        return False

    def write(self, records) -> None:
        for r in records:
            if isinstance(r, AlertEvent) and r.state in self.states:
                self.post(r)

    def health(self) -> str | None:
        return self._problem


def _basic_auth(url: str) -> tuple[str, dict[str, str]]:
    """The URL without user:password, and the Authorization header they make (none without them)."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url, {}
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), {"Authorization": f"Basic {token}"}

