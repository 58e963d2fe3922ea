"""Add the lookout sidecar to pod specs: the code behind `lookout inject` and the webhook.

Traffic is taken over by port *name*: the app's serving port is renamed, the sidecar
gets the original name on a port of its own and forwards to the app on 127.0.0.1, so a
Service that targets the port by name routes through lookout without being touched.
Services that target the port by number are rewritten when they are in the input. A
gRPC port (`lookout.io/grpc-port`) is taken over the same way, beside the HTTP one. The
app's probes that named its port follow the new name: a probe finds a named port only
among its own container's ports.

Everything here is a pure function of dictionaries (the shapes `kubectl get -o yaml`
prints), so the CLI, the webhook and the tests share it, and injecting twice changes
nothing.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lookout.k8s import annotations as notes
from lookout.sidecar.config import parse_endpoint, parse_reference_url, parse_sample_url
from lookout.sidecar.samples.policy import DEFAULT_POLICY, parse_policy

CONTAINER = "lookout"
ADMIN_PORT_NAME = "lookout-admin"
GRPC_LISTEN_PORT = 8081  # the sidecar's gRPC port (moved up if the pod uses it)
SAMPLES_VOLUME, TMP_VOLUME, TOKEN_VOLUME = "lookout-samples", "lookout-tmp", "lookout-token"
SHM_VOLUME, SHM_PATH = "lookout-shm", "/dev/shm"
# what the sidecar needs per analysis worker beyond the first (measured in
# docs/PERFORMANCE.md): a core, and memory for one more interpreter with its models
# the channel: the default 64Mi, or room for one largest observation (2 x 16Mi) per worker
CHANNEL_MIB, CHANNEL_PER_WORKER_MIB, FORWARD_RING_MIB, SHM_HEADROOM_MIB = 64, 40, 32, 16
WORKER_MEMORY_MIB = 256
ENVOY_THREAD_MEMORY_MIB = 128  # one more Envoy worker thread, with its rings and buffers
SAMPLES_PATH, TOKEN_PATH = "/var/lib/lookout/samples", "/var/run/secrets/lookout"
DEFAULT_IMAGE = "ghcr.io/yolo-lookout/lookout:0.1.0"
RUN_AS_USER = 65532  # the Dockerfile's non-root user
_QUANTITY = re.compile(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_UNITS = {None: 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}

# kind -> path from the object to its pod template's (metadata, spec) holder
TEMPLATE_PATHS: dict[str, tuple[str, ...]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Rollout": ("spec", "template"),
    "Pod": (),
}


class InjectError(ValueError):
    """A pod that cannot be injected as asked; the message says what to set."""


@dataclass(frozen=True, slots=True)
class InjectOptions:
    image: str = DEFAULT_IMAGE
    native_sidecar: bool = True  # init container with restartPolicy Always (1.29+)
    listen_port: int = 8080  # the sidecar's data port (moved up if the pod uses it)
    admin_port: int = 9090
    analysis_workers: int = 1
    envoy_concurrency: int = 1
    cpu: str = ""  # empty: one CPU per analysis worker and per Envoy thread beyond one
    memory: str = ""  # empty: 512Mi, 256Mi more per analysis worker beyond the first,
    # 128Mi more per Envoy worker thread beyond the first
    samples_size: str = "1Gi"


@dataclass(frozen=True, slots=True)
class GrpcTakeover:
    """The gRPC port lookout took over, beside the HTTP one."""

    app_port: int
    app_port_name: str | None
    sidecar_port: int
    sidecar_port_name: str


@dataclass(slots=True)
class Takeover:
    """Which ports lookout took over in one pod template."""

    workload: str
    app_port: int
    app_port_name: str | None
    sidecar_port: int
    sidecar_port_name: str
    admin_port: int
    labels: dict[str, str]
    namespace: str | None
    grpc: GrpcTakeover | None = None

    def routes(self) -> list[tuple[int, str]]:
        """(app port, the sidecar's port name) of each port taken over."""
        taken = [(self.app_port, self.sidecar_port_name)]
        if self.grpc is not None:
            taken.append((self.grpc.app_port, self.grpc.sidecar_port_name))
        return taken


@dataclass(slots=True)
class InjectOutcome:
    warnings: list[str] = field(default_factory=list)
    takeovers: list[Takeover] = field(default_factory=list)


def quantity_bytes(text: str) -> int:
    match = _QUANTITY.fullmatch(text.strip())
    if not match:
        raise InjectError(f"{text!r} is not a Kubernetes quantity such as 1Gi or 500Mi")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def is_injected(spec: dict[str, Any]) -> bool:
    return any(c.get("name") == CONTAINER
               for c in [*spec.get("containers", []), *spec.get("initContainers", [])])


def wants_injection(metadata: dict[str, Any], namespace_enabled: bool) -> bool:
    """`lookout.io/inject: "false"` always opts out; otherwise a namespace opted in, or
    the annotation set to "true", opts in."""
    value = notes.read(metadata.get("annotations")).get("inject", "").lower()
    if value == "false":
        return False
    return namespace_enabled or value == "true"


def _image_tag(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return name.rsplit("@", 1)[-1][:63]
    return name.rsplit(":", 1)[1] if ":" in name else "unknown"


def _named_port(container: dict[str, Any], wanted: str, annotation: str
                ) -> tuple[int, dict | None]:
    """The container's port named or numbered `wanted`, as an annotation gave it; a
    number the container does not declare is taken as it is."""
    for port in container.get("ports") or []:
        if port.get("name") == wanted or str(port.get("containerPort")) == wanted:
            return int(port["containerPort"]), port
    if wanted.isascii() and wanted.isdigit():
        return int(wanted), None
    raise InjectError(f"container {container.get('name')!r} has no port named {wanted!r} "
                      f"(lookout.io/{annotation})")


def _app_port(container: dict[str, Any], wanted: str | None) -> tuple[int, dict | None]:
    ports = container.get("ports") or []
    if wanted:
        return _named_port(container, wanted, "upstream-port")
    for port in ports:
        if port.get("name") == "http":
            return int(port["containerPort"]), port
    if ports:
        return int(ports[0]["containerPort"]), ports[0]
    raise InjectError(f"container {container.get('name')!r} declares no port: set "
                      f"lookout.io/upstream-port to the port it serves on")


def _take_name(app: dict[str, Any], entry: dict | None, names: set[str],
               default: str) -> str:
    """The name the sidecar's port takes over: the app port's own, which the app's port
    gives up for a new one (its probes that named it follow it), or `default`."""
    original = entry.get("name") if entry else None
    if not original:
        return default
    entry["name"] = _renamed(original, names)
    names.add(entry["name"])
    _follow_renamed_port(app, original, entry["name"])
    return original


def _follow_renamed_port(container: dict[str, Any], old: str, new: str) -> None:
    """A probe resolves a named port among its own container's ports: the app's probes
    that named its port must name the port's new name, or they find no port at all. (A
    gRPC probe takes a number, which the app keeps.)"""
    for key in ("startupProbe", "readinessProbe", "livenessProbe"):
        for action in ("httpGet", "tcpSocket", "grpc"):
            handler = (container.get(key) or {}).get(action)
            if isinstance(handler, dict) and handler.get("port") == old:
                handler["port"] = new


def _free_port(start: int, used: set[int]) -> int:
    port = start
    while port in used:
        port += 1
    used.add(port)
    return port


def _renamed(name: str, taken: set[str]) -> str:
    """The app port's new name: at most 15 characters, unique in the pod."""
    for suffix in ("-app", "-a", "-0", "-1", "-2"):
        candidate = f"{name[:15 - len(suffix)]}{suffix}"
        if candidate not in taken:
            return candidate
    raise InjectError(f"no free name to rename port {name!r} to")


def _policy(rate: str | None) -> str:
    if rate is None:
        return DEFAULT_POLICY
    policy = DEFAULT_POLICY.replace("random share=0.01", f"random share={rate}")
    try:
        parse_policy(policy)
    except ValueError as error:
        raise InjectError(f"lookout.io/sample-rate {rate!r}: {error}") from None
    return policy


def _sample_store(note: dict[str, str]) -> dict[str, str]:
    """The fleet store's variables, checked now rather than in a crash-looping pod."""
    env = {}
    for key, variable, parse in (("sample-url", "LOOKOUT_SAMPLE_URL", parse_sample_url),
                                 ("sample-store-endpoint", "LOOKOUT_SAMPLE_STORE_ENDPOINT",
                                  parse_endpoint)):
        if key in note:
            try:
                env[variable] = parse(note[key])
            except ValueError as error:
                raise InjectError(f"lookout.io/{key} {note[key]!r}: {error}") from None
    if ("sample-store-secret" in note or "sample-store-endpoint" in note) and \
            "sample-url" not in note:
        raise InjectError("lookout.io/sample-store-secret and sample-store-endpoint need "
                          "lookout.io/sample-url, the store they are for")
    return env


def _remote_reference(note: dict[str, str]) -> dict[str, str]:
    """The shared reference's variables, checked now rather than in a crash-looping pod."""
    url, model = note.get("reference-url", ""), note.get("reference-name", "")
    if not url and not model:
        return {}
    if not (url and model):
        raise InjectError("lookout.io/reference-url and lookout.io/reference-name go "
                          "together: the server's address and the model's V2 name")
    if "reference-model" in note:
        raise InjectError("lookout.io/reference-url: the pod already names a local "
                          "reference (lookout.io/reference-model); choose one")
    try:
        parse_reference_url(url)
    except ValueError as error:
        raise InjectError(f"lookout.io/reference-url {url!r}: {error}") from None
    name, _, version = model.partition(":")
    env = {"LOOKOUT_SHADOW_REFERENCE_URL": url, "LOOKOUT_SHADOW_REFERENCE_MODEL": name}
    if version:
        env["LOOKOUT_SHADOW_REFERENCE_VERSION"] = version
    return env


def _sidecar(app: dict[str, Any], note: dict[str, str], name: str, options: InjectOptions,
             app_port: int, data: tuple[int, str], admin: int, grace: int,
             grpc: GrpcTakeover | None = None) -> dict[str, Any]:
    version = note.get("model-version") or _image_tag(str(app.get("image", "")))
    env = {
        "LOOKOUT_UPSTREAM": f"http://127.0.0.1:{app_port}",
        "LOOKOUT_LISTEN": f"0.0.0.0:{data[0]}",
        "LOOKOUT_ADMIN": f"0.0.0.0:{admin}",
        "LOOKOUT_MODEL_NAME": note.get("model-name") or name,
        "LOOKOUT_MODEL_VERSION": version,
        "LOOKOUT_SAMPLE_DIR": SAMPLES_PATH,
        "LOOKOUT_SAMPLE_STORE_MAX_BYTES": str(int(quantity_bytes(
            note.get("samples-size", options.samples_size)) * 0.9)),
        "LOOKOUT_SAMPLE_STRATEGIES": _policy(note.get("sample-rate")),
        "LOOKOUT_SHUTDOWN_GRACE": str(max(1, grace - 5)),
        "OTEL_SERVICE_NAME": note.get("model-name") or name,
    }
    if grpc is not None:
        env["LOOKOUT_GRPC_LISTEN"] = f"0.0.0.0:{grpc.sidecar_port}"
        env["LOOKOUT_GRPC_UPSTREAM"] = f"127.0.0.1:{grpc.app_port}"
    if "reference-model" in note:
        env["LOOKOUT_SHADOW_MODEL_PATH"] = note["reference-model"]
    if "reference-model-sha256" in note:
        env["LOOKOUT_SHADOW_MODEL_SHA256"] = note["reference-model-sha256"]
    env.update(_remote_reference(note))
    env.update(_sample_store(note))
    if note.get("gpu-devices"):  # the container runtime mounts these GPUs for NVML
        env["NVIDIA_VISIBLE_DEVICES"] = note["gpu-devices"]
    if "token-secret" in note:
        env["LOOKOUT_ADMIN_TOKEN_FILE"] = f"{TOKEN_PATH}/token"
    workers = analysis_workers(note, options)
    processes = envoy_concurrency(note, options)
    env["LOOKOUT_ANALYSIS_WORKERS"] = str(workers)
    env["LOOKOUT_OBSERVATION_QUEUE_BYTES"] = f"{channel_mib(workers, processes)}MiB"
    if processes > 1:  # the data plane's producers are Envoy's worker threads
        env["LOOKOUT_ENVOY_CONCURRENCY"] = str(processes)
    memory_mib = (512 + WORKER_MEMORY_MIB * (workers - 1)
                  + ENVOY_THREAD_MEMORY_MIB * (processes - 1))
    resources = {"cpu": note.get("cpu") or options.cpu or str(workers + processes - 1),
                 "memory": note.get("memory") or options.memory or f"{memory_mib}Mi"}
    mounts = [{"name": SAMPLES_VOLUME, "mountPath": SAMPLES_PATH},
              {"name": TMP_VOLUME, "mountPath": "/tmp"},
              {"name": SHM_VOLUME, "mountPath": SHM_PATH}]
    if "token-secret" in note:
        mounts.append({"name": TOKEN_VOLUME, "mountPath": TOKEN_PATH, "readOnly": True})

    def probe(path: str, period: int, failures: int) -> dict[str, Any]:
        return {"httpGet": {"path": path, "port": ADMIN_PORT_NAME}, "periodSeconds": period,
                "failureThreshold": failures, "timeoutSeconds": 2}

    return {
        "name": CONTAINER,
        "image": note.get("image", options.image),
        "imagePullPolicy": "IfNotPresent",
        "command": ["lookout"],
        "args": ["serve"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE",
                 "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                *({"name": k, "value": v} for k, v in env.items()),
                {"name": "OTEL_RESOURCE_ATTRIBUTES",
                 "value": "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"}],
        "ports": [{"name": data[1], "containerPort": data[0], "protocol": "TCP"},
                  *([] if grpc is None else [{"name": grpc.sidecar_port_name,
                                              "containerPort": grpc.sidecar_port,
                                              "protocol": "TCP"}]),
                  {"name": ADMIN_PORT_NAME, "containerPort": admin, "protocol": "TCP"}],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "startupProbe": probe("/healthz", 1, 30),
        "readinessProbe": probe("/readyz", 5, 2),
        "livenessProbe": probe("/healthz", 10, 3),
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS_USER, "runAsGroup": RUN_AS_USER,
            "readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
        # the object store's credentials, never in the pod spec itself
        **({"envFrom": [{"secretRef": {"name": note["sample-store-secret"]}}]}
           if "sample-store-secret" in note else {}),
    }


def _process_count(note: dict[str, str], key: str, default: int) -> int:
    raw = note.get(key, str(default))
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 16:
        raise InjectError(f"lookout.io/{key} {raw!r}: expected 1 to 16")
    return int(raw)


def analysis_workers(note: dict[str, str], options: InjectOptions) -> int:
    return _process_count(note, "analysis-workers", options.analysis_workers)


def envoy_concurrency(note: dict[str, str], options: InjectOptions) -> int:
    return _process_count(note, "envoy-concurrency", options.envoy_concurrency)


def channel_mib(workers: int, processes: int = 1) -> int:
    """A ring from each Envoy worker thread to each worker, each holding one whole
    observation at least."""
    return max(CHANNEL_MIB, CHANNEL_PER_WORKER_MIB * workers * processes)


def shm_size(workers: int, processes: int = 1) -> str:
    """The analysis channel lives in /dev/shm, which a container gets at 64 MiB: a
    memory-backed emptyDir sized for the channel and the workers' forwarding rings."""
    channel = channel_mib(workers, processes)
    return f"{channel + FORWARD_RING_MIB * (workers - 1) + SHM_HEADROOM_MIB}Mi"


def _volumes(note: dict[str, str], options: InjectOptions) -> list[dict[str, Any]]:
    samples: dict[str, Any] = {"name": SAMPLES_VOLUME}
    if "samples-pvc" in note:
        samples["persistentVolumeClaim"] = {"claimName": note["samples-pvc"]}
    else:
        samples["emptyDir"] = {"sizeLimit": note.get("samples-size", options.samples_size)}
    volumes = [samples, {"name": TMP_VOLUME, "emptyDir": {"sizeLimit": "256Mi"}},
               {"name": SHM_VOLUME, "emptyDir": {
                   "medium": "Memory", "sizeLimit": shm_size(
                       analysis_workers(note, options), envoy_concurrency(note, options))}}]
    if "token-secret" in note:
        volumes.append({"name": TOKEN_VOLUME, "secret": {
            "secretName": note["token-secret"], "defaultMode": 0o440,
            "items": [{"key": "token", "path": "token"}]}})
    return volumes


def inject_template(metadata: dict[str, Any], spec: dict[str, Any], name: str,
                    options: InjectOptions, outcome: InjectOutcome, kind: str = "Pod",
                    namespace: str | None = None) -> None:
    """Add the sidecar to one pod template (in place). Raises InjectError when the pod
    cannot be injected as configured; does nothing to a pod already injected."""
    if is_injected(spec):
        return
    if spec.get("hostNetwork"):
        outcome.warnings.append(f"{name}: hostNetwork pods are not injected (the sidecar "
                                f"cannot take over a port of the node)")
        return
    note = notes.read(metadata.get("annotations"))
    outcome.warnings += [f"{name}: {warning}"
                         for warning in notes.deprecated(metadata.get("annotations"))]
    containers = spec.get("containers") or []
    if not containers:
        raise InjectError(f"{name}: the pod has no containers")
    wanted = note.get("container")
    app = next((c for c in containers if c.get("name") == wanted), None) if wanted \
        else containers[0]
    if app is None:
        raise InjectError(f"{name}: no container named {wanted!r} (lookout.io/container)")
    app_port, port_entry = _app_port(app, note.get("upstream-port"))
    all_ports = [p for c in [*containers, *spec.get("initContainers", [])]
                 for p in c.get("ports") or []]
    used = {int(p["containerPort"]) for p in all_ports} | {app_port}
    names = {p["name"] for p in all_ports if p.get("name")}
    grpc_wanted = note.get("grpc-port")
    grpc_port, grpc_entry = _named_port(app, grpc_wanted, "grpc-port") if grpc_wanted \
        else (None, None)
    if grpc_port is not None:
        used.add(grpc_port)
        if grpc_port == app_port:
            raise InjectError(f"{name}: lookout.io/grpc-port names the HTTP port "
                              f"({app_port}); name the port the app serves gRPC on")
    data_port = _free_port(options.listen_port, used)
    admin_port = _free_port(options.admin_port, used)
    original_name = port_entry.get("name") if port_entry else None
    sidecar_name = _take_name(app, port_entry, names, "lookout-http")
    grpc = None
    if grpc_port is not None:
        grpc_name = grpc_entry.get("name") if grpc_entry else None
        grpc = GrpcTakeover(grpc_port, grpc_name, _free_port(GRPC_LISTEN_PORT, used),
                            _take_name(app, grpc_entry, names, "lookout-grpc"))
    grace = int(spec.get("terminationGracePeriodSeconds", 30))
    sidecar = _sidecar(app, note, name, options, app_port, (data_port, sidecar_name),
                       admin_port, grace, grpc)
    if options.native_sidecar:
        sidecar["restartPolicy"] = "Always"
        spec["initContainers"] = [sidecar, *spec.get("initContainers", [])]
    else:
        spec["containers"] = [*containers, sidecar]
        if kind in ("Job", "CronJob"):
            outcome.warnings.append(f"{name}: with --no-native-sidecar the Job never "
                                    f"completes while lookout runs; use native sidecars")
    spec["volumes"] = [*spec.get("volumes", []), *_volumes(note, options)]
    pod_notes = metadata.setdefault("annotations", {})
    scrape = {"prometheus.io/scrape": "true", "prometheus.io/port": str(admin_port),
              "prometheus.io/path": "/metrics"}
    if any(key in pod_notes for key in scrape):
        outcome.warnings.append(f"{name}: prometheus.io/* annotations already set (the "
                                f"app's own metrics?); scrape lookout on port {admin_port} "
                                f"with --pod-monitor instead")
    else:
        pod_notes.update(scrape)
    outcome.takeovers.append(Takeover(name, app_port, original_name, data_port, sidecar_name,
                                      admin_port, dict(metadata.get("labels") or {}),
                                      namespace, grpc))


def _holder(document: dict[str, Any], kind: str) -> dict[str, Any] | None:
    holder: Any = document
    for key in TEMPLATE_PATHS[kind]:
        holder = holder.get(key) if isinstance(holder, dict) else None
    return holder if isinstance(holder, dict) else None


def workload_name(document: dict[str, Any]) -> str:
    metadata = document.get("metadata") or {}
    labels = metadata.get("labels") or {}
    return (metadata.get("name") or labels.get("app.kubernetes.io/name") or labels.get("app")
            or str(metadata.get("generateName", "pod")).rstrip("-") or "pod")


def inject_documents(documents: Iterable[dict[str, Any] | None], options: InjectOptions,
                     ) -> tuple[list[dict[str, Any] | None], InjectOutcome]:
    """Every workload injected and every Service in the input pointed at the sidecar."""
    outcome = InjectOutcome()
    result = [copy.deepcopy(d) for d in documents]
    for document in result:
        kind = (document or {}).get("kind")
        if kind not in TEMPLATE_PATHS:
            continue
        name = workload_name(document)
        holder = _holder(document, kind)
        if holder is None or "spec" not in holder:
            outcome.warnings.append(f"{kind} {name}: no pod template (an Argo Rollout with "
                                    f"workloadRef is injected through its Deployment)")
            continue
        metadata = holder.setdefault("metadata", {})
        if notes.read(metadata.get("annotations")).get("inject", "").lower() == "false":
            continue
        namespace = (document.get("metadata") or {}).get("namespace")
        inject_template(metadata, holder["spec"], name, options, outcome, kind, namespace)
    _point_services(result, outcome)
    return result, outcome


def pod_monitors(outcome: InjectOutcome) -> list[dict[str, Any]]:
    """A prometheus-operator PodMonitor per injected workload, scraping the admin port."""
    monitors = []
    for takeover in outcome.takeovers:
        metadata: dict[str, Any] = {"name": f"{takeover.workload}-lookout",
                                    "labels": {"app.kubernetes.io/name": "lookout"}}
        if takeover.namespace:
            metadata["namespace"] = takeover.namespace
        monitors.append({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor",
            "metadata": metadata,
            "spec": {"selector": {"matchLabels": takeover.labels},
                     "podMetricsEndpoints": [{"port": ADMIN_PORT_NAME, "path": "/metrics",
                                              "interval": "15s"}]},
        })
    return monitors


def _point_services(documents: list[dict[str, Any] | None], outcome: InjectOutcome) -> None:
    services = [d for d in documents if (d or {}).get("kind") == "Service"]
    for takeover in outcome.takeovers:
        routed = False
        for service in services:
            selector = (service.get("spec") or {}).get("selector") or {}
            namespace = (service.get("metadata") or {}).get("namespace")
            if not selector or namespace != takeover.namespace or any(
                    takeover.labels.get(k) != v for k, v in selector.items()):
                continue
            routed = True
            routes = {str(app_port): name for app_port, name in takeover.routes()}
            for port in service["spec"].get("ports") or []:
                target = str(port.get("targetPort", port.get("port")))
                if target in routes:
                    port["targetPort"] = routes[target]
        if not routed:
            via = (f"by name ({takeover.app_port_name!r}) already route through lookout"
                   if takeover.app_port_name else "must target port 'lookout-http'")
            outcome.warnings.append(
                f"no Service in the input selects the pod serving on port "
                f"{takeover.app_port}: Services that target it by number bypass lookout; "
                f"those targeting it {via}")
