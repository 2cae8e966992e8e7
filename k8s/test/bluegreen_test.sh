#!/usr/bin/env bash
# Tests for k8s/bluegreen.sh against recording stand-ins for kubectl and curl (stubs/),
# placed first on PATH. Each case writes the stubs' canned answers, runs the script, and
# compares the exact sequence of kubectl/curl calls and the exit code. POLL_SECONDS=0: the
# script's WATCH_SECONDS then counts /admin/status readings, taken back to back.
# Ends with `N passed, M failed`; exits non-zero on any failure. Needs bash and python3.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SCRIPT="$HERE/../bluegreen.sh"
STUBS="$HERE/stubs"
WORK=$(mktemp -d)
trap '[[ -n ${KEEP_WORK:-} ]] || rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
NS=bg-test
TOKEN=t0k3n-for-tests
AB=http://admin-blue.test:9091
AG=http://admin-green.test:9091
PV=http://preview.test

GOOD='{"healthy":true,"hit_ratio":0.92,"error_rate":0.001,"latency_p95_ms":35,"alerts":[]}'
BAD_ERR='{"healthy":true,"hit_ratio":0.90,"error_rate":0.20,"latency_p95_ms":40,"alerts":["5xx"]}'
BAD_P95='{"healthy":true,"hit_ratio":0.90,"error_rate":0.001,"latency_p95_ms":5000,"alerts":[]}'
BAD_HIT='{"healthy":true,"hit_ratio":0.05,"cacheable_requests":500,"error_rate":0.0,"latency_p95_ms":20,"alerts":[]}'
# A cold slot: few cacheable requests so far, all misses (hit_ratio is not judged yet).
COLD='{"healthy":true,"hit_ratio":0.0,"cacheable_requests":150,"error_ratio":0.0,"latency_p95_ms":20,"alerts":[]}'
# Below alert_min_requests /admin/status reports no hit ratio at all.
COLD_NULL='{"healthy":true,"hit_ratio":null,"cacheable_requests":3,"error_ratio":0.0,"latency_p95_ms":20,"alerts":[]}'
# An older status without cacheable_requests: its hit ratio is not judged.
NO_COUNT='{"healthy":true,"hit_ratio":0.01,"error_rate":0.0,"latency_p95_ms":20,"alerts":[]}'
BAD_ERR_RATIO='{"healthy":true,"hit_ratio":null,"cacheable_requests":0,"error_ratio":0.5,"latency_p95_ms":20,"alerts":[]}'

# Call lines shared by several cases.
GET_LIVE="kubectl -n $NS get service seawall -o jsonpath={.spec.selector.slot}"
GET_PREVIEW="kubectl -n $NS get service seawall-preview -o jsonpath={.spec.selector.slot}"
rollout() { echo "kubectl -n $NS rollout status deployment/seawall-$1 --timeout=$2s"; }
ready_replicas() { echo "kubectl -n $NS get deployment/seawall-$1 -o jsonpath={.status.readyReplicas}"; }
get_pods() { printf '%s\n' "kubectl -n $NS get pods -l app=seawall,slot=$1 -o jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"; }
patch() { echo "kubectl -n $NS patch service $1 --type=merge -p {\"spec\":{\"selector\":{\"app\":\"seawall\",\"slot\":\"$2\"}}}"; }
AUTH="[Authorization: Bearer $TOKEN]"

# new_case NAME [LIVE [PREVIEW]]: a fresh stub directory; the Services select LIVE (blue)
# and PREVIEW (the other slot); both slots have 2 ready pods; every other kubectl call
# succeeds silently.
new_case() {
    CASE=$1
    local live=${2:-blue} preview=${3:-}
    [[ -n $preview ]] || if [[ $live == blue ]]; then preview=green; else preview=blue; fi
    export STUB_DIR="$WORK/$CASE"
    mkdir -p "$STUB_DIR"
    : > "$STUB_DIR/calls.log"
    : > "$STUB_DIR/argv.log"
    : > "$STUB_DIR/kubectl.rules"
    : > "$STUB_DIR/curl.rules"
    kubectl_rule "$GET_LIVE|0|$live"
    kubectl_rule "$GET_PREVIEW|0|$preview"
    DEFAULT_RULES=(
        "$(ready_replicas blue)|0|2"
        "$(ready_replicas green)|0|2"
        "$(get_pods blue)|0|seawall-blue-1=True\\nseawall-blue-2=True\\n"
        "$(get_pods green)|0|seawall-green-1=True\\nseawall-green-2=True\\n"
    )
}
# Rules added by a case come before the defaults (first match wins).
add_default_rules() { printf '%s\n' "${DEFAULT_RULES[@]#kubectl }" >> "$STUB_DIR/kubectl.rules"; }
# kubectl_rule 'kubectl ARGS|EXIT|STDOUT' (first match wins; the leading "kubectl " is optional).
kubectl_rule() { printf '%s\n' "${1#kubectl }" >> "$STUB_DIR/kubectl.rules"; }
# curl_rule METHOD URL CODE [BODY]; repeated rules for one METHOD URL answer in turn.
curl_rule() { printf '%s %s|%s|%s\n' "$1" "$2" "$3" "${4:-}" >> "$STUB_DIR/curl.rules"; }

# run_script ARGS...: runs bluegreen.sh with the stubs first on PATH; sets RC.
run_script() {
    set +e
    add_default_rules
    env PATH="$STUBS:$PATH" NAMESPACE=$NS SEAWALL_ADMIN_TOKEN="${TEST_TOKEN-$TOKEN}" \
        ADMIN_URL_BLUE=$AB ADMIN_URL_GREEN=$AG PREVIEW_URL=$PV \
        READY_TIMEOUT="${READY_TIMEOUT:-5}" WATCH_SECONDS="${WATCH_SECONDS:-2}" POLL_SECONDS="${POLL_SECONDS:-0}" \
        BAD_CHECKS="${BAD_CHECKS:-2}" MAX_ERROR_RATE=0.05 MAX_P95_MS=2000 MIN_HIT_RATIO=0.5 \
        MIN_CACHEABLE_REQUESTS="${MIN_CACHEABLE_REQUESTS:-200}" \
        bash "$SCRIPT" "$@" > "$STUB_DIR/stdout" 2> "$STUB_DIR/stderr"
    RC=$?
    set -e
}

# Failed expectations of the current case (the test script itself never stops on one).
FAILS=()
assert() { # assert DESCRIPTION COMMAND [ARGS...]: COMMAND must succeed
    local what=$1
    shift
    if ! "$@"; then FAILS+=("$what"); fi
}
refute() { # refute DESCRIPTION COMMAND [ARGS...]: COMMAND must fail
    local what=$1
    shift
    if "$@"; then FAILS+=("$what"); fi
}
expect_rc() {
    if [[ $RC != "$1" ]]; then FAILS+=("exit code $RC, expected $1"); fi
}
expect_calls() { # the exact expected call lines, on stdin
    cat > "$STUB_DIR/expected.log"
    if ! diff -u "$STUB_DIR/expected.log" "$STUB_DIR/calls.log" > "$STUB_DIR/calls.diff"; then
        FAILS+=("call sequence differs (--- expected, +++ actual):
$(sed 's/^/      /' "$STUB_DIR/calls.diff")")
    fi
}
expect_no_call() { # PATTERN (grep -E) that must not appear in calls.log
    refute "unexpected call matching /$1/" grep -Eq -- "$1" "$STUB_DIR/calls.log"
}
finish_case() {
    if ((${#FAILS[@]} == 0)); then
        PASSED=$((PASSED + 1))
        echo "ok - $CASE"
    else
        FAILED=$((FAILED + 1))
        echo "not ok - $CASE"
        printf '    %s\n' "${FAILS[@]}"
        echo "    --- script stdout:"
        sed 's/^/      /' "$STUB_DIR/stdout"
        echo "    --- script stderr:"
        sed 's/^/      /' "$STUB_DIR/stderr"
    fi
    FAILS=()
}

# --- cases -------------------------------------------------------------------------------

new_case switch_success
curl_rule GET "$AG/readyz" 200 '{"ready":true}'
curl_rule GET "$PV/" 200 hello
curl_rule POST "$AB/admin/drain" 202 '{}'
curl_rule GET "$AG/admin/status" 200 "$GOOD"
run_script switch
expect_rc 0
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
$(rollout green 5)
curl GET $AG/readyz
curl GET $PV/
$(patch seawall green)
$(patch seawall-preview blue)
curl POST $AB/admin/drain $AUTH
curl GET $AG/admin/status $AUTH
curl GET $AG/admin/status $AUTH
EOF
# The token travels in a header file, never in argv.
refute "the admin token appears in curl's argv" grep -q -- "$TOKEN" "$STUB_DIR/argv.log"
finish_case

new_case switch_from_green_to_blue green
curl_rule GET "$AB/readyz" 200
curl_rule GET "$PV/" 404
curl_rule POST "$AG/admin/drain" 200
curl_rule GET "$AB/admin/status" 200 "$GOOD"
WATCH_SECONDS=1 run_script switch
expect_rc 0
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
$(rollout blue 5)
curl GET $AB/readyz
curl GET $PV/
$(patch seawall blue)
$(patch seawall-preview green)
curl POST $AG/admin/drain $AUTH
curl GET $AB/admin/status $AUTH
EOF
finish_case

new_case idle_never_ready_rollout
kubectl_rule "$(rollout green 5)|1|error: timed out waiting for the condition"
run_script switch
expect_rc 3
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
$(rollout green 5)
EOF
expect_no_call ' patch '
assert "no 'refusing to switch' message" grep -q 'refusing to switch' "$STUB_DIR/stderr"
finish_case

new_case idle_never_ready_readyz
curl_rule GET "$AG/readyz" 503 '{"ready":false,"status":"warming"}'
READY_TIMEOUT=1 run_script switch
expect_rc 3
expect_no_call ' patch '
expect_no_call 'drain'
expect_no_call "$PV"
finish_case

new_case smoke_test_fails
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 502 'bad gateway'
run_script switch
expect_rc 3
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
$(rollout green 5)
curl GET $AG/readyz
curl GET $PV/
EOF
finish_case

new_case preview_not_on_idle_slot blue blue
run_script switch
expect_rc 3
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
EOF
finish_case

new_case no_token_no_calls
TEST_TOKEN='' run_script switch
expect_rc 2
expect_calls < /dev/null
finish_case

new_case bad_metrics_roll_back
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 200
curl_rule POST "$AB/admin/drain" 202
curl_rule GET "$AG/admin/status" 200 "$GOOD"
curl_rule GET "$AG/admin/status" 200 "$BAD_ERR"
curl_rule GET "$AG/admin/status" 200 "$BAD_P95"
curl_rule GET "$AB/readyz" 200
WATCH_SECONDS=5 run_script switch
expect_rc 4
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
$(rollout green 5)
curl GET $AG/readyz
curl GET $PV/
$(patch seawall green)
$(patch seawall-preview blue)
curl POST $AB/admin/drain $AUTH
curl GET $AG/admin/status $AUTH
curl GET $AG/admin/status $AUTH
curl GET $AG/admin/status $AUTH
$(ready_replicas blue)
$(patch seawall blue)
$(patch seawall-preview green)
$(get_pods blue)
EOF
assert "error_rate reason not logged" grep -q 'error_rate 0.2 > 0.05' "$STUB_DIR/stderr"
assert "latency reason not logged" grep -q 'latency_p95_ms 5000 > 2000' "$STUB_DIR/stderr"
finish_case

new_case low_hit_ratio_roll_back_replaces_drained_pod
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 200
curl_rule POST "$AB/admin/drain" 202
curl_rule GET "$AG/admin/status" 200 "$BAD_HIT"
kubectl_rule "$(ready_replicas blue)|0|1"
kubectl_rule "$(get_pods blue)|0|seawall-blue-1=True\\nseawall-blue-2=False\\n"
BAD_CHECKS=1 WATCH_SECONDS=3 run_script switch
expect_rc 4
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
$(rollout green 5)
curl GET $AG/readyz
curl GET $PV/
$(patch seawall green)
$(patch seawall-preview blue)
curl POST $AB/admin/drain $AUTH
curl GET $AG/admin/status $AUTH
$(ready_replicas blue)
$(patch seawall blue)
$(patch seawall-preview green)
$(get_pods blue)
kubectl -n $NS delete pod seawall-blue-2 --wait=false
EOF
assert "hit ratio reason not logged" grep -q 'hit_ratio 0.05 < 0.5' "$STUB_DIR/stderr"
finish_case

new_case cold_slot_is_promoted_below_min_cacheable_requests
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 200
curl_rule POST "$AB/admin/drain" 202
curl_rule GET "$AG/admin/status" 200 "$COLD_NULL"
curl_rule GET "$AG/admin/status" 200 "$COLD"
curl_rule GET "$AG/admin/status" 200 "$NO_COUNT"
BAD_CHECKS=1 WATCH_SECONDS=3 run_script switch
expect_rc 0
expect_no_call 'patch service seawall .*"blue"'
assert "hit ratio shown as not judged" grep -q 'not judged: fewer than 200 cacheable requests' "$STUB_DIR/stderr"
assert "switch complete" grep -q 'switch complete: green is live' "$STUB_DIR/stderr"
finish_case

new_case min_cacheable_requests_is_configurable
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 200
curl_rule POST "$AB/admin/drain" 202
curl_rule GET "$AG/admin/status" 200 "$COLD"
kubectl_rule "$(ready_replicas blue)|0|2"
BAD_CHECKS=1 WATCH_SECONDS=1 MIN_CACHEABLE_REQUESTS=100 run_script switch
expect_rc 4
assert "hit ratio judged at 150 >= 100" grep -q 'hit_ratio 0 < 0.5' "$STUB_DIR/stderr"
assert "rolled back" grep -q 'rolled back: blue is live again' "$STUB_DIR/stderr"
finish_case

new_case error_ratio_field_rolls_back
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 200
curl_rule POST "$AB/admin/drain" 202
curl_rule GET "$AG/admin/status" 200 "$BAD_ERR_RATIO"
BAD_CHECKS=1 WATCH_SECONDS=1 run_script switch
expect_rc 4
assert "error_ratio reason logged" grep -q 'error_ratio 0.5 > 0.05' "$STUB_DIR/stderr"
finish_case

new_case min_cacheable_requests_must_be_a_number
MIN_CACHEABLE_REQUESTS=lots run_script switch
expect_rc 2
expect_calls < /dev/null
finish_case

new_case roll_back_to_slot_without_ready_pods_restarts_it_first
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 200
curl_rule POST "$AB/admin/drain" 202
curl_rule GET "$AG/admin/status" 200 "$BAD_P95"
kubectl_rule "$(ready_replicas blue)|0|"
curl_rule GET "$AB/readyz" 200
BAD_CHECKS=1 run_script switch
expect_rc 4
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
$(rollout green 5)
curl GET $AG/readyz
curl GET $PV/
$(patch seawall green)
$(patch seawall-preview blue)
curl POST $AB/admin/drain $AUTH
curl GET $AG/admin/status $AUTH
$(ready_replicas blue)
kubectl -n $NS rollout restart deployment/seawall-blue
$(rollout blue 5)
curl GET $AB/readyz
$(patch seawall blue)
$(patch seawall-preview green)
EOF
finish_case

new_case status_unreachable_roll_back
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 200
curl_rule POST "$AB/admin/drain" 202
curl_rule GET "$AB/readyz" 200
# no rule for $AG/admin/status: the stub answers 000 (no connection)
WATCH_SECONDS=4 run_script switch
expect_rc 4
expect_calls <<EOF
$GET_LIVE
$GET_PREVIEW
$(rollout green 5)
curl GET $AG/readyz
curl GET $PV/
$(patch seawall green)
$(patch seawall-preview blue)
curl POST $AB/admin/drain $AUTH
curl GET $AG/admin/status $AUTH
curl GET $AG/admin/status $AUTH
$(ready_replicas blue)
$(patch seawall blue)
$(patch seawall-preview green)
$(get_pods blue)
EOF
finish_case

new_case rollback_never_ready_keeps_new_slot
curl_rule GET "$AG/readyz" 200
curl_rule GET "$PV/" 200
curl_rule POST "$AB/admin/drain" 202
curl_rule GET "$AG/admin/status" 200 "$BAD_ERR"
kubectl_rule "$(ready_replicas blue)|0|0"
curl_rule GET "$AB/readyz" 503 '{"ready":false,"status":"draining"}'
BAD_CHECKS=1 READY_TIMEOUT=0 run_script switch
expect_rc 5
# Selector patched to green once, never back to blue.
assert "selector not patched to green" grep -qxF -- "$(patch seawall green)" "$STUB_DIR/calls.log"
refute "selector patched back to a slot that is not ready" grep -qxF -- "$(patch seawall blue)" "$STUB_DIR/calls.log"
assert "no restart of the drained slot" grep -q "rollout restart deployment/seawall-blue" "$STUB_DIR/calls.log"
finish_case

new_case manual_rollback green
run_script rollback
expect_rc 0
expect_calls <<EOF
$GET_LIVE
$(ready_replicas blue)
$(patch seawall blue)
$(patch seawall-preview green)
$(get_pods blue)
EOF
finish_case

new_case deploy_idle_slot
run_script deploy green registry.example.invalid/seawall:0.2.0
expect_rc 0
expect_calls <<EOF
$GET_LIVE
kubectl -n $NS set image deployment/seawall-green seawall=registry.example.invalid/seawall:0.2.0
kubectl -n $NS rollout status deployment/seawall-green --timeout=600s
EOF
finish_case

new_case deploy_refuses_live_slot
run_script deploy blue registry.example.invalid/seawall:0.2.0
expect_rc 2
expect_calls <<EOF
$GET_LIVE
EOF
finish_case

new_case status_report
kubectl_rule "-n $NS get deployment/seawall-blue -o jsonpath={.spec.template.spec.containers[0].image}|0|seawall:0.1.0"
kubectl_rule "-n $NS get deployment/seawall-blue -o jsonpath={.status.readyReplicas}|0|2"
kubectl_rule "-n $NS get deployment/seawall-blue -o jsonpath={.spec.replicas}|0|2"
curl_rule GET "$AB/readyz" 200
curl_rule GET "$AG/readyz" 503
run_script status
expect_rc 0
assert "status: live slot line" grep -q '^live slot: blue' "$STUB_DIR/stdout"
assert "status: blue line" grep -Eq '^blue +LIVE +image=seawall:0.1.0 ready=2/2 readyz=200' "$STUB_DIR/stdout"
assert "status: green line" grep -Eq '^green +idle .*readyz=503' "$STUB_DIR/stdout"
expect_no_call ' patch '
finish_case

new_case unknown_slot_is_usage_error
run_script deploy purple img
expect_rc 2
expect_calls < /dev/null
finish_case

echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
