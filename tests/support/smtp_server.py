#!/usr/bin/env python3
"""A real SMTP server for nurture's email tests (aiosmtpd).

Usage: smtp_server.py PORT DIR

Every accepted message is written to DIR/NNNN.eml, with DIR/NNNN.json holding the
envelope and the time it arrived. Recipients steer failures, as real servers fail:
  *bounce-hard*  -> 550 at RCPT (permanent: the address must be suppressed)
  *bounce-soft*  -> 451 at RCPT (temporary: retry, never suppress)
  *drop*         -> the message is accepted and stored, then the connection is cut
                    before the final reply (the sender cannot know it was accepted)
Prints "ready" on stdout once it listens.
"""
import asyncio
import json
import os
import sys
import time

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if "bounce-hard" in address:
            return "550 5.1.1 <%s>: Recipient address rejected: User unknown" % address
        if "bounce-soft" in address:
            return "451 4.2.0 <%s>: Mailbox busy, try again later" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.directory, "%04d" % self.count)
        # The envelope first, then the message, each renamed into place once written:
        # the tests list `.eml` files and read the `.json` beside each while mail arrives.
        meta = {"from": envelope.mail_from, "to": envelope.rcpt_tos, "at": time.time()}
        whole(base + ".json", json.dumps(meta).encode())
        whole(base + ".eml", envelope.original_content or envelope.content)
        if any("drop" in r for r in envelope.rcpt_tos):
            server.transport.abort()
            return "250 OK (never seen by the client)"
        return "250 2.0.0 Ok: queued as %04d" % self.count


def whole(path, data):
    with open(path + ".part", "wb") as f:
        f.write(data)
    os.replace(path + ".part", path)


def main():
    port = int(sys.argv[1])
    directory = sys.argv[2]
    os.makedirs(directory, exist_ok=True)
    controller = Controller(Recorder(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
