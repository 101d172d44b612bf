#!/usr/bin/env python3
"""Captures real ClientHellos into this folder: a loopback listener records the first bytes of each
connection (until the client gives up, 2 s) while openssl s_client and curl connect to it.
Run from this folder: python3 capture.py. The files are committed; tests/tls_hello.rs replays them.
Captured 2026-12-06 with OpenSSL 3.0.19 (s_client) and curl 7.88.1 (libcurl with OpenSSL 3.0.19,
nghttp2 1.52.0) on Debian; each hello is random per run, so a new capture differs byte for byte but
not in the names the tests expect."""
import socket, subprocess, threading

def capture(name, argv):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = bytearray()

    def serve():
        conn, _ = srv.accept()
        conn.settimeout(2)
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got.extend(chunk)
        except socket.timeout:
            pass
        conn.close()

    t = threading.Thread(target=serve)
    t.start()
    argv = [a.replace("PORT", str(port)) for a in argv]
    subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=10)
    t.join()
    srv.close()
    with open(name, "wb") as f:
        f.write(bytes(got))
    print(name, len(got))

S = ["openssl", "s_client", "-connect", "127.0.0.1:PORT"]
capture("openssl-sni.bin", S + ["-servername", "api.example.com"])
capture("openssl-sni-alpn.bin", S + ["-servername", "WWW.Example.COM", "-alpn", "h2,http/1.1"])
capture("openssl-no-sni.bin", S + ["-noservername"])
capture("openssl-tls12.bin", S + ["-servername", "a.example.com", "-tls1_2"])
capture("openssl-tls13-pq-groups.bin", S + ["-servername", "b.example.com", "-tls1_3", "-groups", "X25519:P-256:P-384:P-521:ffdhe2048"])
capture("openssl-long-name.bin", S + ["-servername", ".".join(["a" * 63] * 3) + "." + "b" * 61])
capture("curl-resolve.bin", ["curl", "-sk", "--max-time", "3", "--resolve", "api.example.com:PORT:127.0.0.1", "https://api.example.com:PORT/"])
capture("curl-http11.bin", ["curl", "-sk", "--http1.1", "--max-time", "3", "--resolve", "web.example.org:PORT:127.0.0.1", "https://web.example.org:PORT/"])
