#!/usr/bin/env bash
# Blue/green operations for Seawall on Kubernetes (the manifests in this directory).
#
#   bluegreen.sh status                 which slot is live, images, readiness
#   bluegreen.sh deploy <slot> <image>  set the image of the idle slot and wait for its rollout
#   bluegreen.sh switch                 idle slot ready? smoke test it, make it live, drain the
#                                       old slot, watch the new one, roll back if it misbehaves
#   bluegreen.sh rollback               make the other (previous) slot live again
#   bluegreen.sh drain <slot>           POST /admin/drain to a slot (closes keep-alive clients)
#
# Uses kubectl and curl, and python3 to read /admin/status JSON.
#
# Environment (defaults in brackets):
#   NAMESPACE [default]            namespace of the Deployments and Services
#   SEAWALL_ADMIN_TOKEN            bearer token for /admin/* (required by switch and drain)
#   ADMIN_URL_BLUE / ADMIN_URL_GREEN [http://seawall-admin-<slot>.<ns>.svc.<domain>:9091]
#   PREVIEW_URL [http://seawall-preview.<ns>.svc.<domain>]   the idle slot's data Service
#   CLUSTER_DOMAIN [cluster.local]
#     The defaults are in-cluster Service names: run the script from a pod or a CI job in the
#     cluster, or point these at `kubectl port-forward`s when running it from a workstation.
#   SMOKE_PATH [/]  SMOKE_EXPECT [^[234][0-9][0-9]$]  request and accepted status of the smoke test
#   READY_TIMEOUT [300]            seconds the idle slot gets to be ready before switch gives up
#   ROLLOUT_TIMEOUT [600]          seconds `deploy` waits for the rollout
#   WATCH_SECONDS [120]  POLL_SECONDS [10]   how long and how often switch reads /admin/status
#                                  (POLL_SECONDS=0, for tests: WATCH_SECONDS readings back to back)
#   MAX_ERROR_RATE [0.05]  MAX_P95_MS [2000]  MIN_HIT_RATIO [0.3]   rollback thresholds
#   MIN_CACHEABLE_REQUESTS [200]   hit_ratio is judged only once /admin/status counts this many
#                                  cacheable requests in its window (`cacheable_requests`): a
#                                  new slot starts cold, and a few misses say nothing about it.
#                                  A status without `cacheable_requests` (or with `hit_ratio`
#                                  null) is not judged on its hit ratio.
#   BAD_CHECKS [2]                 consecutive bad readings (or unreachable status) that roll back
#   CURL_TIMEOUT [5]               seconds per HTTP request
#   FORCE [0]                      1: deploy to the live slot / roll back to a slot with no ready pod
#
# Exit codes: 0 done; 1 error; 2 usage; 3 switch refused (nothing changed);
#             4 switched, then rolled back automatically; 5 rollback impossible (still on new slot).
#
# Seawall's POST /admin/drain is one-way: a drained slot stays unready until its pods are
# replaced. A rollback to it therefore switches at once if it still has ready pods and then
# replaces the drained ones, or restarts it first if none is ready.
set -euo pipefail

NAMESPACE=${NAMESPACE:-default}
CLUSTER_DOMAIN=${CLUSTER_DOMAIN:-cluster.local}
LIVE_SERVICE=${LIVE_SERVICE:-seawall}
PREVIEW_SERVICE=${PREVIEW_SERVICE:-seawall-preview}
ADMIN_URL_BLUE=${ADMIN_URL_BLUE:-http://seawall-admin-blue.${NAMESPACE}.svc.${CLUSTER_DOMAIN}:9091}
ADMIN_URL_GREEN=${ADMIN_URL_GREEN:-http://seawall-admin-green.${NAMESPACE}.svc.${CLUSTER_DOMAIN}:9091}
PREVIEW_URL=${PREVIEW_URL:-http://${PREVIEW_SERVICE}.${NAMESPACE}.svc.${CLUSTER_DOMAIN}}
SMOKE_PATH=${SMOKE_PATH:-/}
SMOKE_EXPECT=${SMOKE_EXPECT:-'^[234][0-9][0-9]$'}
READY_TIMEOUT=${READY_TIMEOUT:-300}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-600}
WATCH_SECONDS=${WATCH_SECONDS:-120}
POLL_SECONDS=${POLL_SECONDS:-10}
MAX_ERROR_RATE=${MAX_ERROR_RATE:-0.05}
MAX_P95_MS=${MAX_P95_MS:-2000}
MIN_HIT_RATIO=${MIN_HIT_RATIO:-0.3}
MIN_CACHEABLE_REQUESTS=${MIN_CACHEABLE_REQUESTS:-200}
BAD_CHECKS=${BAD_CHECKS:-2}
CURL_TIMEOUT=${CURL_TIMEOUT:-5}
FORCE=${FORCE:-0}

log() { printf '%s bluegreen: %s\n' "$(date -u +%H:%M:%SZ)" "$*" >&2; }
die() {
    local code=$1
    shift
    log "ERROR: $*"
    exit "$code"
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
for v in READY_TIMEOUT ROLLOUT_TIMEOUT WATCH_SECONDS POLL_SECONDS BAD_CHECKS CURL_TIMEOUT MIN_CACHEABLE_REQUESTS; do
    is_uint "${!v}" || die 2 "$v must be a whole number of seconds/checks, got '${!v}'"
done

kc() { kubectl -n "$NAMESPACE" "$@"; }

check_slot() { [[ $1 == blue || $1 == green ]] || die 2 "slot must be blue or green, got '$1'"; }
other_slot() { if [[ $1 == blue ]]; then echo green; else echo blue; fi; }
admin_url() { if [[ $1 == blue ]]; then echo "$ADMIN_URL_BLUE"; else echo "$ADMIN_URL_GREEN"; fi; }

# The header goes through a private file, not argv, so the token does not show in `ps`.
AUTH_FILE=
auth_header_file() {
    [[ -n ${SEAWALL_ADMIN_TOKEN:-} ]] || die 2 "SEAWALL_ADMIN_TOKEN is not set"
    if [[ -z $AUTH_FILE ]]; then
        AUTH_FILE=$(mktemp)
        chmod 600 "$AUTH_FILE"
        printf 'Authorization: Bearer %s\n' "$SEAWALL_ADMIN_TOKEN" > "$AUTH_FILE"
    fi
}
cleanup() { if [[ -n $AUTH_FILE ]]; then rm -f "$AUTH_FILE"; fi; }
trap cleanup EXIT

# http_code URL [curl args...]: the HTTP status, or 000 when there was no answer.
http_code() {
    local url=$1 code
    shift
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time "$CURL_TIMEOUT" "$@" "$url" 2>/dev/null) || true
    [[ $code =~ ^[0-9]{3}$ ]] || code=000
    echo "$code"
}

live_slot() {
    local s
    s=$(kc get service "$LIVE_SERVICE" -o 'jsonpath={.spec.selector.slot}') \
        || die 1 "cannot read service/$LIVE_SERVICE"
    [[ $s == blue || $s == green ]] || die 1 "service/$LIVE_SERVICE selects slot '$s' (expected blue or green)"
    echo "$s"
}

# set_selector SERVICE SLOT
set_selector() {
    kc patch service "$1" --type=merge -p "{\"spec\":{\"selector\":{\"app\":\"seawall\",\"slot\":\"$2\"}}}" >/dev/null
}

# make_live SLOT: the live Service to SLOT, the preview Service to the other slot.
make_live() {
    local slot=$1 other
    other=$(other_slot "$slot")
    set_selector "$LIVE_SERVICE" "$slot" || die 1 "patching service/$LIVE_SERVICE failed"
    log "service/$LIVE_SERVICE -> $slot"
    set_selector "$PREVIEW_SERVICE" "$other" || log "WARNING: patching service/$PREVIEW_SERVICE failed (it should select $other)"
}

# wait_ready SLOT TIMEOUT: its rollout is complete and its /readyz answers 200, within TIMEOUT.
wait_ready() {
    local slot=$1 timeout=$2 deadline code
    deadline=$((SECONDS + timeout))
    if ! kc rollout status "deployment/seawall-$slot" "--timeout=${timeout}s" >&2; then
        log "deployment/seawall-$slot is not rolled out and available within ${timeout}s"
        return 1
    fi
    while :; do
        code=$(http_code "$(admin_url "$slot")/readyz")
        [[ $code == 200 ]] && return 0
        if ((SECONDS >= deadline)); then
            log "seawall-$slot /readyz answers $code, not 200, after ${timeout}s"
            return 1
        fi
        sleep 2
    done
}

drain_slot() {
    local slot=$1 code
    auth_header_file
    code=$(http_code "$(admin_url "$slot")/admin/drain" -X POST -H "@$AUTH_FILE")
    if [[ $code =~ ^2 ]]; then
        log "drained seawall-$slot ($code)"
    else
        log "WARNING: POST /admin/drain to seawall-$slot answered $code"
        return 1
    fi
}

# judge: reads /admin/status JSON on stdin; prints "ok <summary>" or "bad <reasons>".
judge() {
    python3 -c '
import json, sys
max_err, max_p95, min_hit = (float(a) for a in sys.argv[1:4])
min_cacheable = int(sys.argv[4])
try:
    s = json.load(sys.stdin)
    assert isinstance(s, dict)
except Exception:
    print("bad /admin/status is not a JSON object")
    sys.exit(0)
def num(key):
    v = s.get(key)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
err_key = "error_ratio" if num("error_ratio") is not None else "error_rate"
err = num(err_key)
p95, hit, cacheable = num("latency_p95_ms"), num("hit_ratio"), num("cacheable_requests")
bad = []
if s.get("healthy") is False:
    bad.append("healthy=false")
if err is not None and err > max_err:
    bad.append("%s %g > %g" % (err_key, err, max_err))
if p95 is not None and p95 > max_p95:
    bad.append("latency_p95_ms %g > %g" % (p95, max_p95))
# A cold slot misses until it has seen its traffic: the hit ratio counts once enough
# cacheable requests are in the window.
judged = hit is not None and cacheable is not None and cacheable >= min_cacheable
if judged and hit < min_hit:
    bad.append("hit_ratio %g < %g" % (hit, min_hit))
alerts = s.get("alerts") or []
summary = "%s=%s latency_p95_ms=%s hit_ratio=%s%s cacheable_requests=%s alerts=%s" % (
    err_key, err, p95, hit, "" if judged else " (not judged: fewer than %d cacheable requests)" % min_cacheable,
    cacheable, json.dumps(alerts))
print(("bad " + "; ".join(bad) + " (" + summary + ")") if bad else ("ok " + summary))
' "$MAX_ERROR_RATE" "$MAX_P95_MS" "$MIN_HIT_RATIO" "$MIN_CACHEABLE_REQUESTS"
}

# watch SLOT: 0 if it stays healthy for WATCH_SECONDS, 1 as soon as BAD_CHECKS readings in a
# row are bad.
watch_slot() {
    local slot=$1 checks bad_run=0 i body verdict
    auth_header_file
    if ((POLL_SECONDS > 0)); then
        checks=$(((WATCH_SECONDS + POLL_SECONDS - 1) / POLL_SECONDS))
    else
        checks=$WATCH_SECONDS
    fi
    ((checks >= 1)) || checks=1
    ((BAD_CHECKS >= 1)) || BAD_CHECKS=1
    log "watching seawall-$slot: $checks checks, every ${POLL_SECONDS}s"
    for ((i = 1; i <= checks; i++)); do
        sleep "$POLL_SECONDS"
        if body=$(curl -fsS --max-time "$CURL_TIMEOUT" -H "@$AUTH_FILE" "$(admin_url "$slot")/admin/status" 2>/dev/null); then
            verdict=$(printf '%s' "$body" | judge)
        else
            verdict="bad /admin/status unreachable"
        fi
        log "check $i/$checks: $verdict"
        if [[ $verdict == ok* ]]; then
            bad_run=0
        else
            bad_run=$((bad_run + 1))
            if ((bad_run >= BAD_CHECKS)); then
                return 1
            fi
        fi
    done
    return 0
}

# rollback_to SLOT: make SLOT live again, if it can serve.
# Seawall's drain is one-way (a drained process stays unready until restarted), so:
#  - SLOT has ready pods: switch at once, then delete its pods that are not ready (drained
#    ones); their ReplicaSet replaces them.
#  - SLOT has no ready pod: restart it and wait for it first (FORCE=1: switch anyway).
rollback_to() {
    local slot=$1 ready pods line
    ready=$(kc get "deployment/seawall-$slot" -o 'jsonpath={.status.readyReplicas}') || ready=0
    [[ $ready =~ ^[0-9]+$ ]] || ready=0
    if ((ready == 0)); then
        if [[ $FORCE == 1 ]]; then
            log "WARNING: seawall-$slot has no ready pod; FORCE=1, switching anyway"
        else
            log "seawall-$slot has no ready pod (drained?): restarting it before switching back"
            kc rollout restart "deployment/seawall-$slot" >&2 || die 5 "cannot restart deployment/seawall-$slot"
            wait_ready "$slot" "$READY_TIMEOUT" \
                || die 5 "seawall-$slot did not become ready; traffic stays on $(other_slot "$slot") (FORCE=1 to override)"
        fi
        make_live "$slot"
        return 0
    fi
    make_live "$slot"
    pods=$(kc get pods -l "app=seawall,slot=$slot" \
        -o 'jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}') || pods=
    while IFS= read -r line; do
        [[ -n $line && ${line#*=} != True ]] || continue
        log "pod ${line%%=*} of seawall-$slot is not ready (drained?): deleting it to have it replaced"
        kc delete pod "${line%%=*}" --wait=false >&2 || log "WARNING: could not delete pod ${line%%=*}"
    done <<< "$pods"
}

cmd_status() {
    local live slot image ready want code
    live=$(live_slot)
    printf 'live slot: %s (service/%s)\n' "$live" "$LIVE_SERVICE"
    printf 'preview:   %s (service/%s)\n' \
        "$(kc get service "$PREVIEW_SERVICE" -o 'jsonpath={.spec.selector.slot}' 2>/dev/null || echo '?')" "$PREVIEW_SERVICE"
    for slot in blue green; do
        image=$(kc get "deployment/seawall-$slot" -o 'jsonpath={.spec.template.spec.containers[0].image}' 2>/dev/null || echo '?')
        ready=$(kc get "deployment/seawall-$slot" -o 'jsonpath={.status.readyReplicas}' 2>/dev/null || true)
        want=$(kc get "deployment/seawall-$slot" -o 'jsonpath={.spec.replicas}' 2>/dev/null || true)
        code=$(http_code "$(admin_url "$slot")/readyz")
        printf '%-5s %-4s image=%s ready=%s/%s readyz=%s\n' "$slot" \
            "$([[ $slot == "$live" ]] && echo LIVE || echo idle)" "$image" "${ready:-0}" "${want:-?}" "$code"
    done
}

cmd_deploy() {
    [[ $# -eq 2 ]] || die 2 "usage: deploy <blue|green> <image>"
    local slot=$1 image=$2 live
    check_slot "$slot"
    live=$(live_slot)
    if [[ $slot == "$live" && $FORCE != 1 ]]; then
        die 2 "seawall-$slot is live; deploy to the idle slot (or FORCE=1)"
    fi
    kc set image "deployment/seawall-$slot" "seawall=$image" >&2
    kc rollout status "deployment/seawall-$slot" "--timeout=${ROLLOUT_TIMEOUT}s" >&2 \
        || die 1 "rollout of seawall-$slot did not complete within ${ROLLOUT_TIMEOUT}s"
    log "seawall-$slot runs $image; smoke test it at $PREVIEW_URL, then: $0 switch"
}

cmd_switch() {
    [[ $# -eq 0 ]] || die 2 "usage: switch"
    auth_header_file
    local live idle preview code
    live=$(live_slot)
    idle=$(other_slot "$live")
    preview=$(kc get service "$PREVIEW_SERVICE" -o 'jsonpath={.spec.selector.slot}') \
        || die 3 "cannot read service/$PREVIEW_SERVICE"
    [[ $preview == "$idle" ]] \
        || die 3 "service/$PREVIEW_SERVICE selects '$preview', not the idle slot $idle; refusing (nothing changed)"
    log "live: $live; switching to $idle"

    wait_ready "$idle" "$READY_TIMEOUT" || die 3 "seawall-$idle is not ready; refusing to switch (nothing changed)"
    code=$(http_code "${PREVIEW_URL%/}${SMOKE_PATH}")
    [[ $code =~ $SMOKE_EXPECT ]] \
        || die 3 "smoke test GET ${PREVIEW_URL%/}${SMOKE_PATH} answered $code; refusing to switch (nothing changed)"
    log "smoke test through $PREVIEW_SERVICE: $code"

    make_live "$idle"
    drain_slot "$live" || true

    if watch_slot "$idle"; then
        log "switch complete: $idle is live; $live is kept for rollback"
        return 0
    fi
    log "seawall-$idle is unhealthy: rolling back to $live"
    rollback_to "$live"
    log "rolled back: $live is live again"
    exit 4
}

cmd_rollback() {
    [[ $# -eq 0 ]] || die 2 "usage: rollback"
    local live prev
    live=$(live_slot)
    prev=$(other_slot "$live")
    log "rolling back: $live -> $prev"
    rollback_to "$prev"
    log "rolled back: $prev is live"
}

cmd_drain() {
    [[ $# -eq 1 ]] || die 2 "usage: drain <blue|green>"
    check_slot "$1"
    drain_slot "$1"
}

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd=${1:-}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        status) cmd_status "$@" ;;
        deploy) cmd_deploy "$@" ;;
        switch) cmd_switch "$@" ;;
        rollback) cmd_rollback "$@" ;;
        drain) cmd_drain "$@" ;;
        -h | --help | help | '') usage ;;
        *) log "unknown command '$cmd'"; usage ;;
    esac
}

main "$@"
