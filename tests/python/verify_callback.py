"""Verifies a Nagare task callback the way README.md tells receivers to.
Usage: verify_callback.py SECRET SIGNATURE_HEADER < body; exits 0 when valid."""
import hashlib
import hmac
import sys
import time


def verify(secret: bytes, header: str, body: bytes, tolerance_secs: int = 300) -> bool:
    """`header` is the Nagare-Signature value: t=<unix seconds>,v1=<hex HMAC-SHA256>."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        sent_at, signature = int(fields["t"]), fields["v1"]
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret, f"{sent_at}.".encode() + body, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - sent_at) <= tolerance_secs
    return fresh and hmac.compare_digest(expected, signature)


if __name__ == "__main__":
    sys.exit(0 if verify(sys.argv[1].encode(), sys.argv[2], sys.stdin.buffer.read()) else 1)
