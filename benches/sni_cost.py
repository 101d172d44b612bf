#!/usr/bin/env python3
"""What a client costs edgefwd through an SNI listener, beside a plain one (docs/tls-sni.md, Figures).

    python3 benches/sni_cost.py target/release/edgefwd 3000 tests/corpus/tls/curl-resolve.bin

Runs the binary twice on loopback, in front of a local echo upstream: a plain route, then two SNI
routes sharing a port (`api.example.com` and a default). N sequential clients each send the hello file
and read it back whole (the hello reaches the upstream unchanged), then close; printed are the client
rate and edgefwd's CPU time (utime + stime from /proc) per connection. Two rounds of each.
"""
import os, socket, socketserver, subprocess, sys, threading, time
BIN = sys.argv[1]; N = int(sys.argv[2]); HELLO = open(sys.argv[3], 'rb').read()
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            d = self.request.recv(65536)
            if not d: return
            self.request.sendall(d)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
srv = socketserver.ThreadingTCPServer(('127.0.0.1', 0), Echo)
threading.Thread(target=srv.serve_forever, daemon=True).start()
up = srv.server_address[1]
def free():
    s = socket.socket(); s.bind(('127.0.0.1', 0)); p = s.getsockname()[1]; s.close(); return p
def cpu(pid):
    f = open(f'/proc/{pid}/stat').read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
def run(name, text, port):
    path = f'/tmp/edgefwd-sni-cost-{name}.toml'; open(path, 'w').write(text)
    p = subprocess.Popen([BIN, '--config', path], stderr=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG='warn'))
    for _ in range(200):
        try: socket.create_connection(('127.0.0.1', port)).close(); break
        except OSError: time.sleep(0.02)
    time.sleep(0.3)
    c0, t0 = cpu(p.pid), time.time()
    for _ in range(N):
        s = socket.create_connection(('127.0.0.1', port))
        s.sendall(HELLO); got = b''
        while len(got) < len(HELLO):
            d = s.recv(65536)
            if not d: raise SystemExit(f'{name}: closed early')
            got += d
        assert got == HELLO
        s.close()
    wall, used = time.time() - t0, cpu(p.pid) - c0
    p.terminate(); p.wait()
    print(f'{name}: {N} connections, {N/wall:.0f}/s, edgefwd CPU {used*1e6/N:.0f} us per connection')
route = lambda n, port, extra: f'[[route]]\nname = "{n}"\nlisten = "127.0.0.1:{port}"\nupstreams = ["127.0.0.1:{up}"]\n{extra}\n'
for rnd in range(2):
    p1 = free(); run('plain', route('plain', p1, ''), p1)
    p2 = free(); run('sni', route('api', p2, 'sni = ["api.example.com"]') + route('rest', p2, 'default = true'), p2)
