"""Names the generated artefacts share: recording rules, alerts. Rules, dashboards and
runbooks are generated apart; reading the names from here keeps them consistent."""

from __future__ import annotations

from lookout.slo.spec import Kind

ERROR_RATIO = "lookout:slo_error_ratio:rate{window}"
BURN_RATE = "lookout:slo_burn_rate:rate{window}"
EVENTS = "lookout:slo_events:increase{window}"
BUDGET_REMAINING = "lookout:slo_error_budget_remaining:ratio"
OBJECTIVE = "lookout:slo_objective:ratio"
# a drift SLO's time slices: 1 where the model's drift alarm was up that minute, else 0
DRIFT_SLICES = "lookout:slo_drift_alarm:max"
# a plain proxy plus the bias its newest audit measured (label rate), and that audit's age
PROXY_CORRECTED = "lookout:proxy_audit_corrected:ratio_rate1h"
AUDIT_AGE = "lookout:audit_age:seconds"

BURN_ALERTS = {
    Kind.AVAILABILITY: "LookoutAvailabilityBudgetBurn",
    Kind.LATENCY: "LookoutLatencyBudgetBurn",
    Kind.QUALITY: "LookoutQualityBudgetBurn",
    Kind.DRIFT: "LookoutDriftBudgetBurn",
    Kind.RATIO: "LookoutSLOBudgetBurn",
}
UPSTREAM_DOWN = "LookoutUpstreamDown"
OBSERVATIONS_DROPPED = "LookoutObservationsDropped"
SAMPLES_DROPPED = "LookoutSamplesDropped"
METRICS_ABSENT = "LookoutMetricsAbsent"
MODEL_VERSION_CHANGED = "LookoutModelVersionChanged"
SERVED_VERSION_MISMATCH = "LookoutServedVersionMismatch"
GPU_MEMORY_NEAR_FULL = "LookoutGPUMemoryNearFull"
GPU_PROCESS_MEMORY_RISING = "LookoutGPUProcessMemoryRising"
GPU_XID_ERRORS = "LookoutGPUXidErrors"
REFERENCE_MODEL_MISSING = "LookoutReferenceModelMissing"
REFERENCE_OUT_OF_DISTRIBUTION = "LookoutReferenceOutOfDistribution"
SHADOW_STALLED = "LookoutShadowStalled"
SHADOW_DISABLED = "LookoutShadowDisabled"
PROXY_BIAS_HIGH = "LookoutProxyBiasHigh"
ALWAYS = (UPSTREAM_DOWN, OBSERVATIONS_DROPPED, SAMPLES_DROPPED, METRICS_ABSENT,
          MODEL_VERSION_CHANGED, SERVED_VERSION_MISMATCH, GPU_MEMORY_NEAR_FULL,
          GPU_PROCESS_MEMORY_RISING, GPU_XID_ERRORS)
WITH_QUALITY_SLO = (REFERENCE_MODEL_MISSING, REFERENCE_OUT_OF_DISTRIBUTION, SHADOW_STALLED,
                    SHADOW_DISABLED, PROXY_BIAS_HIGH)


def alert_names(kinds: set[Kind]) -> list[str]:
    """Every alert a spec with SLOs of these kinds generates."""
    names = {BURN_ALERTS[kind] for kind in kinds} | set(ALWAYS)
    if Kind.QUALITY in kinds:
        names |= set(WITH_QUALITY_SLO)
    return sorted(names)
