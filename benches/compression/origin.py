# Compressible corpus origin: /doc/N -> a ~4 KiB JSON document, deterministic per N.
import json, sys
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

def doc(n):
    items = []
    i = 0
    s = ""
    while len(s) < 4096:
        items.append({"id": n * 1000 + i, "name": f"product {(n * 31 + i) % 997}",
                      "price": round(((n + i) * 7.31) % 500, 2), "tags": ["red", "large", "sale"][: (i % 3) + 1],
                      "description": "A sturdy item for everyday use, shipped in two days."})
        i += 1
        s = json.dumps({"page": n, "items": items})
    return s.encode()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        try:
            n = int(self.path.rsplit("/", 1)[1])
        except Exception:
            n = 0
        b = doc(n)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("cache-control", "max-age=3600")
        self.send_header("etag", f'"d{n}"')
        self.send_header("content-length", str(len(b)))
        self.end_headers()
        self.wfile.write(b)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
