#!/usr/bin/env python3
"""Verifies the DKIM signature of a message with dkimpy, against a given public key
instead of DNS. Usage: dkim_verify.py MESSAGE.eml "v=DKIM1; k=rsa; p=BASE64"
Prints "pass" or "fail" and exits 0 or 1."""
import sys

import dkim

message = open(sys.argv[1], "rb").read()
record = sys.argv[2].encode()


def dns(name, timeout=5):
    return record


ok = dkim.verify(message, dnsfunc=dns)
print("pass" if ok else "fail")
sys.exit(0 if ok else 1)
