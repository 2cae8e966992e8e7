# Requests /doc/0..N-1 once through the proxy (keep-alive), then prints the admin stats.
import http.client, json, sys
port, admin, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port)
total = 0
for i in range(n):
    c.request("GET", f"/doc/{i}")
    r = c.getresponse()
    total += len(r.read())
a = http.client.HTTPConnection("127.0.0.1", admin)
a.request("GET", "/admin/cache/stats", headers={"authorization": "Bearer benchtoken"})
s = json.loads(a.getresponse().read())
print(json.dumps({"identity_bytes_sent": total, "entries": s["entries"], "bytes": s["bytes"],
                  "bytes_per_object": s["bytes"] / max(s["entries"], 1), "avg_identity": total / n}))
