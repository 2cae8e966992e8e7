vcl 4.1;
# Varnish: the builtin VCL (hit-for-miss for uncacheable responses, request coalescing on
# the waiting list) plus the backend and an X-Cache header. Rendered by benches/e2e/run.sh.
backend origin { .host = "127.0.0.1"; .port = "27100"; }
sub vcl_deliver {
  if (obj.hits > 0) { set resp.http.X-Cache = "HIT"; } else { set resp.http.X-Cache = "MISS"; }
}
