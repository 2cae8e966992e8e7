#!/usr/bin/env python3
"""Policy checks for Seawall's Kubernetes manifests, beyond schema validation.

    python3 k8s/test/manifest_policy.py RENDERED.yaml [SIDECAR.yaml]

RENDERED.yaml is `kubectl kustomize k8s/` output (the blue/green set); SIDECAR.yaml is
k8s/sidecar-example.yaml. Prints one line per finding and exits 1 if there is any.
Needs PyYAML. Checks what the deployment relies on: the blue/green objects and selectors,
the security context, probes, the preStop sleep, the termination grace period against
Seawall's drain settings, the memory limit against the cache size, and the shared cache
tier's settings (the Redis URL from a Secret; no other [cache.redis] key without a URL).
"""
import re
import sys

import yaml

try:
    import tomllib  # Python >= 3.11
except ImportError:  # pragma: no cover
    tomllib = None

MIB = 1024 * 1024
FINDINGS = []


def finding(where, msg):
    FINDINGS.append(f"{where}: {msg}")


def parse_size(s):
    """Seawall sizes: 256MiB, 64KiB, 1GiB, 1024 (bytes)."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", str(s))
    if not m:
        raise ValueError(f"bad size {s!r}")
    mult = {None: 1, "B": 1, "KiB": 1024, "MiB": MIB, "GiB": 1024 * MIB, "TiB": 1024**4,
            "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4}[m.group(2)]
    return int(float(m.group(1)) * mult)


def parse_quantity(s):
    """Kubernetes memory quantities: 384Mi, 1Gi, 500M, 1e9."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(s))
    if not m:
        raise ValueError(f"bad quantity {s!r}")
    mult = {None: 1, "Ki": 1024, "Mi": MIB, "Gi": 1024 * MIB, "Ti": 1024**4,
            "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}[m.group(2)]
    return int(float(m.group(1)) * mult)


def parse_duration(s):
    """Seawall durations: 300ms, 5s, 2m, 1h."""
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(s)):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def load_toml(text):
    if tomllib:
        return tomllib.loads(text)
    # Python < 3.11: enough of TOML for these files ([section], [[array]], scalars, string lists).
    out = {}
    cur = out
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[["):
            cur = {}
            out.setdefault(line.strip("[] "), []).append(cur)
        elif line.startswith("["):
            cur = out.setdefault(line.strip("[] "), {})
        elif "=" in line:
            k, v = (x.strip() for x in line.split("=", 1))
            cur[k] = re.findall(r'"([^"]*)"', v) if v.startswith("[") else v.strip('"')
    return out


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def by_kind(objs, kind):
    return {o["metadata"]["name"]: o for o in objs if o.get("kind") == kind}


def env_map(container):
    return {e["name"]: e for e in container.get("env", [])}


def check_pod(where, pod_spec, labels, configmaps, sidecar=False, slot=None):
    """Checks one pod template; returns nothing, records findings."""
    psc = pod_spec.get("securityContext", {})
    if pod_spec.get("enableServiceLinks") is not False:
        finding(where, "enableServiceLinks must be false (service env vars look like SEAWALL_* settings)")
    if pod_spec.get("automountServiceAccountToken") is not False:
        finding(where, "automountServiceAccountToken should be false (Seawall needs no API access)")
    containers = [("containers", c) for c in pod_spec.get("containers", [])]
    containers += [("initContainers", c) for c in pod_spec.get("initContainers", [])]
    seawall = [c for kind, c in containers if c["name"] == "seawall"]
    if len(seawall) != 1:
        finding(where, "expected exactly one container named seawall")
        return
    c = seawall[0]
    cw = f"{where} container seawall"
    if sidecar:
        if not any(x is c for kind, x in containers if kind == "initContainers"):
            finding(cw, "a native sidecar must be an initContainer")
        if c.get("restartPolicy") != "Always":
            finding(cw, "a native sidecar needs restartPolicy: Always")

    # Security context (container level, or inherited from the pod).
    csc = c.get("securityContext", {})
    if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
        finding(cw, "runAsNonRoot must be true")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if uid is not None and uid == 0:
        finding(cw, "runAsUser must not be 0")
    if csc.get("readOnlyRootFilesystem") is not True:
        finding(cw, "readOnlyRootFilesystem must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        finding(cw, "allowPrivilegeEscalation must be false")
    if "ALL" not in (csc.get("capabilities", {}).get("drop") or []):
        finding(cw, "capabilities.drop must include ALL")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})) or {}
    if seccomp.get("type") != "RuntimeDefault":
        finding(cw, "seccompProfile.type must be RuntimeDefault")

    # Ports and probes.
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if 8080 not in ports.values() or 9091 not in ports.values():
        finding(cw, "must declare containerPorts 8080 (data) and 9091 (admin)")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        port = hg.get("port")
        if hg.get("path") != path or ports.get(port, port) != 9091:
            finding(cw, f"{probe} must be httpGet {path} on the admin port 9091")

    # Environment: token from a Secret; slot from the label.
    env = env_map(c)
    tok = env.get("SEAWALL_ADMIN_TOKEN", {})
    if not (tok.get("valueFrom", {}).get("secretKeyRef")):
        finding(cw, "SEAWALL_ADMIN_TOKEN must come from a secretKeyRef")
    # The shared tier's URL may carry a password: from a Secret, never a literal value.
    redis_url = env.get("SEAWALL_CACHE_REDIS_URL")
    if redis_url is not None and not redis_url.get("valueFrom", {}).get("secretKeyRef"):
        finding(cw, "SEAWALL_CACHE_REDIS_URL must come from a secretKeyRef (it may carry a password)")
    if slot is not None:
        if env.get("SEAWALL_SLOT", {}).get("value") != slot:
            finding(cw, f"SEAWALL_SLOT must be {slot!r}")
        if labels.get("slot") != slot or labels.get("app") != "seawall":
            finding(where, f"pod labels must include app=seawall, slot={slot}")

    # The configuration: mounted ConfigMap at /etc/seawall, plus SEAWALL_* overrides.
    mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
    cfg_text = None
    for v in pod_spec.get("volumes", []):
        cm = (v.get("configMap") or {}).get("name")
        if cm and v["name"] in mounts and mounts[v["name"]]["mountPath"] == "/etc/seawall":
            if slot is not None and cm != f"seawall-config-{slot}":
                finding(cw, f"must mount ConfigMap seawall-config-{slot} (mounts {cm})")
            if cm not in configmaps:
                finding(cw, f"mounts ConfigMap {cm}, which is not defined")
            else:
                cfg_text = configmaps[cm].get("data", {}).get("proxy.toml")
    if cfg_text is None:
        finding(cw, "no ConfigMap with proxy.toml mounted at /etc/seawall")
        return
    args = c.get("args") or []
    if "--config" in args and args[args.index("--config") + 1] != "/etc/seawall/proxy.toml":
        finding(cw, "--config must be /etc/seawall/proxy.toml")
    cfg = load_toml(cfg_text)

    def setting(section, key, default):
        e = env.get(f"SEAWALL_{section}_{key}".upper(), {})
        if "value" in e:
            return e["value"]
        return cfg.get(section, {}).get(key, default)

    if setting("server", "listen", "") != "0.0.0.0:8080" or setting("server", "admin_listen", "") != "0.0.0.0:9091":
        finding(cw, "config must listen on 0.0.0.0:8080 and 0.0.0.0:9091")

    # [cache.redis]: any SEAWALL_CACHE_REDIS_* variable creates the table, and Seawall refuses
    # one without a url. So other keys need a URL that is always there: in the file, a
    # literal value, or a non-optional secretKeyRef.
    redis_file = (cfg.get("cache", {}) or {}).get("redis")
    url_always = bool(isinstance(redis_file, dict) and redis_file.get("url")) or (
        redis_url is not None
        and ("value" in redis_url
             or not redis_url.get("valueFrom", {}).get("secretKeyRef", {}).get("optional", False)))
    if redis_url is not None and "value" in redis_url and not redis_url["value"]:
        finding(cw, "SEAWALL_CACHE_REDIS_URL must not be empty")
    if isinstance(redis_file, dict) and not url_always:
        finding(cw, "[cache.redis] without a url, and SEAWALL_CACHE_REDIS_URL is optional or absent")
    for name in sorted(env):
        if name.startswith("SEAWALL_CACHE_REDIS_") and name != "SEAWALL_CACHE_REDIS_URL" and not url_always:
            finding(cw, f"{name} is set but the Redis URL is optional or absent: without a URL "
                        "Seawall refuses to start ([cache.redis] needs a url)")

    # Memory: the limit must hold the cache plus ~30MiB.
    res = c.get("resources", {})
    for k in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in res.get(k, {}) and not (k == "limits" and r == "cpu"):
                finding(cw, f"resources.{k}.{r} missing")
    mem = res.get("limits", {}).get("memory")
    if "cpu" not in res.get("limits", {}):
        finding(cw, "resources.limits.cpu missing")
    if mem:
        max_size = parse_size(setting("cache", "max_size", "256MiB"))
        if parse_quantity(mem) < max_size + 30 * MIB:
            finding(cw, f"memory limit {mem} is below cache max_size ({max_size // MIB}MiB) + 30MiB")

    # Termination: preStop sleep (of this container, or of the app for a sidecar) +
    # drain_delay + grace_period must fit in terminationGracePeriodSeconds.
    if sidecar:
        prestops = [x.get("lifecycle", {}).get("preStop", {}) for _, x in containers if x is not c]
    else:
        prestops = [c.get("lifecycle", {}).get("preStop", {})]
    sleeps = [p.get("sleep", {}).get("seconds") for p in prestops if p]
    if not sleeps or any(not isinstance(s, int) for s in sleeps):
        finding(cw if not sidecar else where, "needs a native preStop sleep action (lifecycle.preStop.sleep.seconds)")
        sleeps = [0]
    if any("exec" in p for p in prestops if p):
        finding(where, "preStop exec needs a shell; the Seawall image has none")
    needed = max(sleeps) + parse_duration(setting("server", "drain_delay", "5s")) \
        + parse_duration(setting("server", "grace_period", "30s"))
    tgp = pod_spec.get("terminationGracePeriodSeconds", 30)
    if not tgp > needed:
        finding(where, f"terminationGracePeriodSeconds {tgp} must exceed preStop + drain_delay + grace_period = {needed:g}s")


def selector_matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def check_bluegreen(path):
    objs = docs(path)
    deps, svcs = by_kind(objs, "Deployment"), by_kind(objs, "Service")
    cms, secrets, pdbs = by_kind(objs, "ConfigMap"), by_kind(objs, "Secret"), by_kind(objs, "PodDisruptionBudget")
    for name in ("seawall-blue", "seawall-green"):
        if name not in deps:
            finding(path, f"Deployment {name} missing")
    for name in ("seawall", "seawall-preview", "seawall-admin-blue", "seawall-admin-green"):
        if name not in svcs:
            finding(path, f"Service {name} missing")
    for name in ("seawall-config-blue", "seawall-config-green"):
        if "proxy.toml" not in cms.get(name, {}).get("data", {}):
            finding(path, f"ConfigMap {name} with proxy.toml missing")
    sec = secrets.get("seawall-admin-token")
    if not sec or "token" not in {**sec.get("data", {}), **sec.get("stringData", {})}:
        finding(path, "Secret seawall-admin-token with key token missing")

    pod_labels = {}
    for slot in ("blue", "green"):
        d = deps.get(f"seawall-{slot}")
        if not d:
            continue
        tpl = d["spec"]["template"]
        labels = tpl["metadata"].get("labels", {})
        pod_labels[slot] = labels
        if not selector_matches(d["spec"]["selector"]["matchLabels"], labels):
            finding(f"Deployment seawall-{slot}", "selector does not match its pod labels")
        if d["spec"]["selector"]["matchLabels"] != {"app": "seawall", "slot": slot}:
            finding(f"Deployment seawall-{slot}", f"selector must be exactly app=seawall, slot={slot}")
        check_pod(f"Deployment seawall-{slot}", tpl["spec"], labels, cms, slot=slot)
        pdb = pdbs.get(f"seawall-{slot}")
        if not pdb or not selector_matches(pdb["spec"]["selector"].get("matchLabels", {}), labels):
            finding(path, f"PodDisruptionBudget seawall-{slot} selecting the {slot} pods missing")

    expect = {"seawall": "blue", "seawall-preview": "green",
              "seawall-admin-blue": "blue", "seawall-admin-green": "green"}
    for name, slot in expect.items():
        s = svcs.get(name)
        if not s:
            continue
        sel = s["spec"].get("selector", {})
        if sel != {"app": "seawall", "slot": slot}:
            finding(f"Service {name}", f"selector must be exactly app=seawall, slot={slot} (bluegreen.sh patches it)")
        if slot in pod_labels and not selector_matches(sel, pod_labels[slot]):
            finding(f"Service {name}", "selects no pods")
        want_port = 9091 if name.startswith("seawall-admin") else 8080
        targets = {p.get("targetPort") for p in s["spec"].get("ports", [])}
        if not targets & {want_port, "admin" if want_port == 9091 else "http"}:
            finding(f"Service {name}", f"must target port {want_port}")


def check_sidecar(path):
    objs = docs(path)
    deps, cms = by_kind(objs, "Deployment"), by_kind(objs, "ConfigMap")
    if len(deps) != 1:
        finding(path, "expected one Deployment")
        return
    (name, d), = deps.items()
    tpl = d["spec"]["template"]
    check_pod(f"{path} Deployment {name}", tpl["spec"], tpl["metadata"].get("labels", {}), cms, sidecar=True)
    c = next(c for c in tpl["spec"].get("initContainers", []) if c["name"] == "seawall")
    cfg = load_toml(next(iter(cms.values()))["data"]["proxy.toml"]) if cms else {}
    eps = [e for u in cfg.get("upstreams", []) for e in (u.get("endpoints") or [])]
    if not eps or not all(re.match(r"http://(127\.0\.0\.1|localhost)[:/]", e) for e in eps):
        finding(path, "the sidecar's upstream must be the app on localhost")
    if "SEAWALL_CACHE_MAX_SIZE" not in env_map(c):
        finding(path, "the sidecar should size its cache with SEAWALL_CACHE_MAX_SIZE")


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    check_bluegreen(argv[1])
    if len(argv) > 2:
        check_sidecar(argv[2])
    for f in FINDINGS:
        print(f)
    return 1 if FINDINGS else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
