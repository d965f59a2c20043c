"""tcpsrv: a TCP server for one client, with state (a running counter and digest).

usage: tcpsrv.py PORT GOFILE

Accepts one connection on 127.0.0.1:PORT, then answers each 16-byte message with
"<n>:<MESSAGE UPPER>:<digest>" (digest over everything received so far). Before message
3 it waits for GOFILE to exist, so that messages the client sends meanwhile sit unread in
its receive queue. Ends when it receives "bye".
"""
import hashlib
import os
import socket
import sys
import time

port, gofile = int(sys.argv[1]), sys.argv[2]
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(4)
print("listening", flush=True)
conn, _ = srv.accept()
print("accepted", flush=True)
digest = hashlib.sha256()
n = 0
while True:
    if n == 3:
        while not os.path.exists(gofile):
            time.sleep(0.01)
    msg = b""
    while len(msg) < 16:
        part = conn.recv(16 - len(msg))
        if not part:
            sys.exit(1)
        msg += part
    msg = msg.rstrip(b".")
    if msg == b"bye":
        break
    n += 1
    digest.update(msg)
    conn.sendall(b"%d:%s:%s\n" % (n, msg.upper(), digest.hexdigest()[:12].encode()))
    print("handled", n, msg.decode(), flush=True)
print("done", n, flush=True)
