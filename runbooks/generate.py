"""One markdown runbook per alert, generated so that every PromQL query in it names
metrics that exist and every alert's `runbook_url` has a page behind it."""

from __future__ import annotations

from dataclasses import dataclass

from lookout.slo import catalog, links, names
from lookout.slo.names import BUDGET_REMAINING, BURN_ALERTS, BURN_RATE, ERROR_RATIO
from lookout.slo.spec import Kind, ServiceSpec


@dataclass(frozen=True, slots=True)
class Guide:
    meaning: str
    checks: tuple[str, ...]  # PromQL, shown as code
    causes: tuple[str, ...]
    mitigation: tuple[str, ...]
    rollback: str = ("Roll the model or image back with the deployment's own tooling "
                     "(`kubectl rollout undo deployment/<name>`), then confirm the burn "
                     "rate falls below 1 on the 5m window.")


def _guides(spec: ServiceSpec) -> dict[str, Guide]:
    sel = spec.selector()
    requests = catalog.REQUESTS.sample_name
    latency = catalog.REQUEST_DURATION.bucket_name
    burn_checks = (
        f'{BURN_RATE.format(window="5m")}{{slo="$SLO"}}',
        f'{BURN_RATE.format(window="1h")}{{slo="$SLO"}}',
        f'{BUDGET_REMAINING}{{slo="$SLO"}}',
    )
    samples = ("kubectl port-forward $POD 9090 & LOOKOUT_ADMIN_TOKEN=$TOKEN "
               "lookout samples list --url http://127.0.0.1:9090 --since 1h --strategy error")
    return {
        BURN_ALERTS[Kind.AVAILABILITY]: Guide(
            "Too many requests end in 5xx (the server's own, or `sidecar_5xx` that lookout "
            "made because the upstream was unreachable, reset or timed out).",
            (*burn_checks,
             f'sum by (code) (rate({requests}{{{sel},code=~"{catalog.SERVER_ERROR_CODE_REGEX}"}}'
             f"[5m]))",
             f"sum by (instance) ({catalog.UPSTREAM_UP.name})", samples),
            ("GPU out of memory: a larger batch, a second model on the GPU, or a memory leak "
             "(`sidecar_502` with `upstream-reset` as the container restarts)",
             "the inference container crash-looping or being OOM-killed (kubectl describe pod)",
             "a new model export that fails on some inputs (unsupported opset, dynamic shapes)",
             "timeouts (`sidecar_504`) from a saturated GPU queue"),
            ("shed load or scale out replicas", "reduce the server's max batch size",
             "move the shadow reference model off the GPU (`shadow_providers: cpu`) or lower "
             "`shadow_rate`")),
        BURN_ALERTS[Kind.LATENCY]: Guide(
            "Too many requests take longer than the SLO threshold, as the client sees it.",
            (*burn_checks,
             f"histogram_quantile(0.99, sum by (le) (rate({latency}{{{sel}}}[5m])))",
             f"histogram_quantile(0.99, sum by (le) "
             f"(rate({catalog.UPSTREAM_DURATION.bucket_name}{{{sel}}}[5m])))",
             f"{catalog.GPU_UTILIZATION.name}", samples.replace("error", "slow")),
            ("GPU saturated: traffic above capacity, or the shadow model competing",
             "batch size or dynamic batching delay raised in the server config",
             "larger input frames (resolution drift) making pre-processing slower",
             "a model swapped for a bigger one, or TensorRT engine rebuilt without FP16",
             "many detections per frame making NMS slow (check "
             f"{catalog.DETECTIONS_PER_REQUEST.name})"),
            ("scale out", "lower the batch size or batching delay",
             "if upstream latency is fine but client latency is not, look at the sidecar "
             "(CPU limits) and the network")),
        BURN_ALERTS[Kind.QUALITY]: Guide(
            "The primary model agrees less with the reference model than the SLO allows: its "
            "precision or recall proxy fell.",
            (*burn_checks,
             f"sum(rate({catalog.SHADOW_MATCHED_BOXES.sample_name}{{{sel}}}[1h])) / "
             f"sum(rate({catalog.SHADOW_PRIMARY_BOXES.sample_name}{{{sel}}}[1h]))",
             f"sum(rate({catalog.SHADOW_MATCHED_BOXES.sample_name}{{{sel}}}[1h])) / "
             f"sum(rate({catalog.SHADOW_REFERENCE_BOXES.sample_name}{{{sel}}}[1h]))",
             f"{catalog.DRIFT_ALARM.name}{{{sel}}} == 1",
             samples.replace("error", "disagreement")),
            ("lighting or camera drift: night, glare, a dirty or moved lens, new resolution",
             "a quantization regression (INT8/FP16 export) in a new model version",
             "an NMS or confidence threshold changed in the server config",
             "stale weights: an old model version still served by some pods",
             "objects of a class the model was never trained on"),
            ("compare by version: `sum by (version) (...)` of the queries above",
             "if one version is worse, roll it back",
             "if all versions degraded together, it is the input: check the drift alarms and "
             "the sampled thumbnails")),
        BURN_ALERTS[Kind.DRIFT]: Guide(
            "Drift alarms have been raised for more of the time than the SLO allows: the "
            "inputs or outputs no longer look like the baseline.",
            (*burn_checks, f"{catalog.DRIFT_ALARM.name}{{{sel}}} == 1",
             f"{catalog.DRIFT_STATISTIC.name}{{{sel}}} / {catalog.DRIFT_THRESHOLD.name}{{{sel}}}",
             f"{catalog.DRIFT_PSI.name}{{{sel}}}", samples.replace("error", "drift")),
            ("brightness/contrast: lighting change, day-night cycle, exposure settings",
             "sharpness: focus lost, lens dirty or fogged, motion blur",
             "resolution/aspect ratio: a camera replaced or reconfigured",
             "detections/confidence/class mix: the scene changed, or the model did"),
            ("`lookout shadow report --baseline baseline.json --features DIR --since 6h` "
             "shows which features moved and by how much",
             "if the change is legitimate and lasting, record a new baseline "
             "(`lookout shadow baseline --features DIR --since ...`) and redeploy with it")),
        BURN_ALERTS[Kind.RATIO]: Guide(
            "An OpenSLO ratio SLO burns its budget too fast.",
            (*burn_checks, f'{ERROR_RATIO.format(window="5m")}{{slo="$SLO"}}'),
            ("see the SLO's own description for what its good and total events are",),
            ("treat as the availability runbook if the SLO counts errors, the latency one if "
             "it counts slow requests",)),
        names.UPSTREAM_DOWN: Guide(
            "lookout cannot reach the inference container in its pod.",
            (f"{catalog.UPSTREAM_UP.name} == 0",
             f'sum by (code) (rate({requests}{{code=~"{catalog.SIDECAR_SERVER_ERROR_CODE_REGEX}"}}'
             f'[5m]))'),
            ("container crash-looping (CUDA OOM at load, missing model file)",
             "model still loading after a restart (TensorRT engine build)",
             "the server listening on another port than `upstream`"),
            ("kubectl logs <pod> -c <inference container> --previous",
             "kubectl describe pod <pod>: OOMKilled, image pull, probes")),
        names.OBSERVATIONS_DROPPED: Guide(
            "The analysis side of lookout cannot keep up; requests are unaffected but "
            "detection, shadow and drift signals undercount.",
            (f"sum by (queue) (rate({catalog.QUEUE_DROPPED.sample_name}[5m]))",),
            ("traffic above what the analysis workers can parse", "large JSON responses",
             f"an analysis worker restarting ({catalog.COMPONENT_ERRORS.sample_name}"
             f"{{component=\"analysis_worker\"}})"),
            ("raise `analysis_workers` (lookout.io/analysis-workers) with the sidecar's "
             "CPU limit", "lower `drift_sample_share`")),
        names.SAMPLES_DROPPED: Guide(
            "Chosen input samples are not being stored (quota drops, which are the "
            "policy working, do not page or ticket).",
            (f"sum by (reason) (rate({catalog.SAMPLES_DROPPED.sample_name}[15m]))",
             f"{catalog.SAMPLE_STORE_BYTES.name}",
             f'sum by (component) (rate({catalog.COMPONENT_ERRORS.sample_name}'
             f'{{component="samples"}}[15m]))',
             "kubectl exec $POD -c lookout -- df -h /var/lib/lookout/samples"),
            ("`disk_full`: the sample volume (emptyDir sizeLimit or PVC) is full, or "
             "`sample_store_max_bytes` is larger than the volume",
             "`write_error`: the volume turned read-only or has I/O errors",
             "`queue_full`: bursts of chosen inputs faster than thumbnails are written",
             "`byte_quota`: `sample_bytes_per_day` is spent; no more samples until 00:00 UTC",
             "`store_unavailable`: the store could not be opened at start-up (see the log)"),
            ("set `sample_store_max_bytes` below the volume size (sampling resumes by "
             "itself within a minute once space is free)",
             "raise `sample_bytes_per_day` or tighten the strategies' quotas",
             "user requests are never affected; there is no need to restart the pod")),
        names.METRICS_ABSENT: Guide(
            "Prometheus sees no lookout series for this service.",
            ("up{job=~\".*lookout.*\"}", f"{catalog.MODEL_INFO.name}"),
            ("sidecar not injected or crashed", "scrape config or network policy changed",
             "model label renamed (`model_name`)"),
            ("check the pod has the lookout container and its admin port is scraped",)),
        names.MODEL_VERSION_CHANGED: Guide(
            "More than one primary model version reported within an hour.",
            (f'count by (version) ({catalog.MODEL_INFO.name}{{{sel},role="primary"}})',),
            ("a rollout or rollback (expected)", "pods flapping between weights",
             "a stale replica never updated"),
            ("if no deploy was planned, find the pods on the old version and restart them",)),
        names.SERVED_VERSION_MISMATCH: Guide(
            "The inference server in a pod answers with a model version (the "
            "`model_version` of its V2 responses) other than the one the pod is deployed "
            "with.",
            (f"sum by (instance, version, served_version) "
             f"(rate({catalog.SERVED_RESPONSES.sample_name}{{{sel}}}[10m]))",
             f'{catalog.MODEL_INFO.name}{{{sel},role="primary"}}',
             "kubectl get pods -l app=$APP -o jsonpath='{..image}'"),
            ("stale weights: the model repository or volume was not updated with the roll-out",
             "the server kept an old version loaded (Triton `version_policy`, KServe storage "
             "URI cached) and serves it by default",
             "a partial roll-out: the lookout annotation was bumped but the server image not, "
             "or the other way round"),
            ("compare the model files the server loaded with the release "
             "(`GET /v2/models/$MODEL` names its versions)",
             "roll the pods named in the alert, or fix `lookout.io/model-version` if the "
             "deployed label is what is wrong")),
        names.GPU_MEMORY_NEAR_FULL: Guide(
            "GPU memory is nearly exhausted.",
            (f"{catalog.GPU_MEMORY_USED.name} / {catalog.GPU_MEMORY_TOTAL.name}",),
            ("batch size raised", "a second model (the shadow reference) on the same GPU",
             "memory fragmentation or a leak in the server"),
            ("move the reference model to the CPU (`shadow_providers: cpu`)",
             "lower the batch size; restart the server to defragment")),
        names.GPU_PROCESS_MEMORY_RISING: Guide(
            "The pod's own processes hold most of the GPU's memory and keep taking more: at "
            "this rate the next allocation fails within the hour.",
            (f"{catalog.GPU_PROCESS_MEMORY.name} / on (instance, gpu) "
             f"{catalog.GPU_MEMORY_TOTAL.name}",
             f"deriv({catalog.GPU_PROCESS_MEMORY.name}[30m])",
             f"sum by (instance) (rate({catalog.REQUESTS.sample_name}{{{sel}}}[30m]))",
             "kubectl exec $POD -c <inference container> -- nvidia-smi "
             "--query-compute-apps=pid,used_memory --format=csv"),
            ("a memory leak in the server or a custom pre/post-processing step (growth "
             "without more traffic)",
             "a caching allocator growing with new input shapes (dynamic batching, many "
             "resolutions: PyTorch, TensorRT profiles)",
             "a local shadow reference on the same GPU (`shadow_providers` with cuda)",
             "more models loaded by the server (Triton/KServe multi-model)"),
            ("restart the pod during a quiet period to reclaim memory, before the OOM does",
             "cap the server's batch size or input shapes; set the framework's memory limit "
             "(TensorRT workspace, `PYTORCH_CUDA_ALLOC_CONF`)",
             "move the reference off this GPU: a shared remote reference "
             "(`shadow_reference_url`) or `shadow_providers: cpu`")),
        names.GPU_XID_ERRORS: Guide(
            "The NVIDIA driver reported a critical XID event on a GPU of this pod.",
            (f"increase({catalog.GPU_XID_ERRORS.sample_name}[1h])",
             f"increase({catalog.GPU_ECC_ERRORS.sample_name}[1h])",
             f"{catalog.GPU_UP.name}",
             "kubectl debug node/$NODE -it --image=busybox -- dmesg | grep -i xid"),
            ("13/31/43/45: an application fault (a bad kernel, an illegal address) in the "
             "server", "48/63/64/92/94/95: GPU memory ECC errors, row remapping",
             "79: the GPU has fallen off the bus (NVML calls then hang: `reason=\"timeout\"`)",
             "74: an NVLink error; 119/120: the GSP firmware timed out"),
            ("application XIDs: read the server's log and roll back a new model or image",
             "memory, bus and firmware XIDs: cordon and drain the node, and reset or replace "
             "the GPU (your cluster's GPU health process)")),
        names.REFERENCE_MODEL_MISSING: Guide(
            "No reference model is loaded, so quality SLOs have no data.",
            (f'{catalog.MODEL_INFO.name}{{role="reference"}}',
             f'increase({catalog.COMPONENT_ERRORS.sample_name}{{component="shadow"}}[1h])'),
            ("`shadow_model_path` not set", "sha256 pin does not match the file",
             "corrupt or missing model file on the volume",
             "a remote reference (`shadow_reference_url`) never reached: the sidecar logs "
             "`remote reference not usable yet` with what the server answered"),
            ("read the sidecar's log line `shadow evaluation disabled: ...`",)),
        names.REFERENCE_OUT_OF_DISTRIBUTION: Guide(
            "The reference model is out of its normal behaviour, so the quality proxies "
            "are unknown: the quality SLOs stop burning budget until it is back.",
            (f"{catalog.PROXY_DISTRUST.name}{{{sel}}} == 1",
             f"sum by (count) (rate({catalog.SHADOW_UNTRUSTED.sample_name}{{{sel}}}[1h]))",
             f"max by (feature) ({catalog.DRIFT_ALARM.name}{{{sel}}})",
             samples.replace("--strategy error", "--strategy disagreement")),
            ("`reference_boxes` up: the reference reports boxes that are not there — rain, "
             "snow, sensor noise, busy textures (the robust recall proxy, which counts only "
             "flip-confirmed boxes, is the better reading meanwhile)",
             "`reference_flip_consistency` down: interlacing, banding, compression damage",
             "a new camera or site whose normal differs from the band learnt at start-up"),
            ("look at the frames in the gallery and the drift alarms: fix the camera or the "
             "pipeline if the input is broken",
             "if the new input is the new normal, restart the sidecars so the band is learnt "
             "again (and refresh the drift baseline)",
             "judge the primary by the precision proxy and the robust recall proxy "
             f"({catalog.SHADOW_CONFIRMED_MATCHED_BOXES.name} / "
             f"{catalog.SHADOW_CONFIRMED_REFERENCE_BOXES.name}) until trust is back")),
        names.SHADOW_STALLED: Guide(
            "Traffic flows, but nothing is shadow-evaluated.",
            (f"sum by (outcome) (rate({catalog.SHADOW_EVALUATIONS.sample_name}[15m]))",),
            ("compute budget exhausted (`over_budget`)", "queue full (`dropped`)",
             "no parsable images (`no_image`)",
             "a remote reference down, slow or refusing (`reference_error`; the sidecar "
             "logs what it answered and backs off)"),
            ("raise `shadow_rate` / `shadow_max_busy_share`, or give the reference a GPU",)),
        names.SHADOW_DISABLED: Guide(
            "The shadow component fails.",
            (f'increase({catalog.COMPONENT_ERRORS.sample_name}{{component="shadow"}}[15m])',),
            ("reference model failed to load", "CUDA errors at inference"),
            ("read the sidecar's error log; the proxy is unaffected",)),
        names.PROXY_BIAS_HIGH: Guide(
            "The newest labelled audit of a model version (`lookout audit import`) measured "
            "its precision or recall with a 95% interval, and the shadow proxy on the same "
            "images lies outside that interval by more than the spec's `proxy_bias_margin`: "
            "the proxy, and the quality SLO built on it, are biased on this traffic. The "
            "alert's `class` and `rate` labels say which.",
            (f'{catalog.AUDIT_ESTIMATE.name}{{{sel},rate="$RATE",class="$CLASS"}}',
             f"time() - {catalog.AUDIT_TIMESTAMP.name}{{{sel}}}",
             f"{catalog.AUDIT_IMAGES.name}{{{sel}}}",
             f"min by (version) ({catalog.PROXY_TRUST.name}{{{sel}}})",
             "lookout audit show --store $STORE --model $MODEL"),
            ("the reference model shares the primary's blind spots (both miss the same "
             "objects: the recall proxy reads too high) or disagrees with it where the "
             "labels agree with the primary (the proxy reads too low)",
             "a class the reference was trained with other definitions of (its boxes, or "
             "its names, do not match the annotators')",
             "input the reference was not built for (night, weather, a new site): see the "
             "drift alarms and the proxy trust",
             "an audit too small for its class: look at the interval's width and the "
             "labelled images before acting"),
            ("read the audited numbers, not the proxy, for this version and class until "
             "the bias is understood (the dashboards show both side by side)",
             "look at the audited images where the boxes disagree (the gallery marks the "
             "audited samples and draws the annotators' boxes)",
             "if the bias is stable, move the quality SLO's objective by it, or give the "
             "reference model the missing training; if it is new, audit again after "
             "fixing the input"),
            "Nothing to roll back: the primary model may be fine. Roll it back only if the "
            "audited rates themselves are below what the service needs."),
    }


def render(spec: ServiceSpec, alert: str, guide: Guide) -> str:
    lines = [f"# {alert}", "", f"Service `{spec.service}`, model `{spec.model}`. "
             "Generated by `lookout generate` from the SLO spec; edit the generator, not "
             "this file.", "", "## What it means", "", guide.meaning, "", "## First checks",
             "", "Replace `$SLO` with the alert's `slo` label.", ""]
    for check in guide.checks:
        language = "sh" if check.startswith(("lookout ", "kubectl ")) else "promql"
        lines += [f"```{language}", check, "```", ""]
    kind = next((k for k, name in BURN_ALERTS.items() if name == alert), None)
    lines += ["## Look at the frames", "",
              "The alert's `gallery_url` annotation opens the sample gallery on the frames "
              "sampled over the window the alert looked at. Without it (the admin port is "
              "not behind the Service): `kubectl port-forward $POD 9090`, sign in with the "
              "admin token, then open", "", f"<{links.for_runbook(spec, kind)}>", ""]
    lines += ["## Likely causes", ""] + [f"- {cause}" for cause in guide.causes]
    lines += ["", "## Mitigation", ""] + [f"- {step}" for step in guide.mitigation]
    lines += ["", "## Rollback", "", guide.rollback, ""]
    return "\n".join(lines)


def runbooks(spec: ServiceSpec) -> dict[str, str]:
    """File name -> markdown, for every alert the spec generates."""
    guides = _guides(spec)
    return {f"{name}.md": render(spec, name, guides[name])
            for name in names.alert_names({slo.kind for slo in spec.slos})}
