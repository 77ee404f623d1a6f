"""Docker HEALTHCHECK: exit 0 when this instance's `GET /healthz` answers 200, else 1.

The probe connects to 127.0.0.1, which a production ALLOWED_HOSTS usually does not list (Django
would answer 400), so it sends the first ALLOWED_HOSTS entry as the Host header. /healthz is
exempt from the https redirect, so plain http is fine. Standard library only: it runs often.
"""

from __future__ import annotations

import http.client
import os
import sys

TIMEOUT_SECONDS = 5.0


def probe_host() -> str:
    first = os.environ.get("ALLOWED_HOSTS", "localhost").split(",")[0].strip()
    if first in {"", "*"}:
        return "localhost"
    return first.lstrip(".")  # ".example.com" allows example.com itself too.


def main() -> int:
    port = int(os.environ.get("PORT", "8000"))
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/healthz", headers={"Host": probe_host()})
        response = connection.getresponse()
        body = response.read(1000).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as error:
        print(f"unhealthy: {error!r}")
        return 1
    finally:
        connection.close()
    print(response.status, body)
    return 0 if response.status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
