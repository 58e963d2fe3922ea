"""Drift monitoring in the sidecar: features of live images, a baseline, the calibrated
detector, and the gauges that alerts and dashboards read.

Runs in the lead analysis worker and sees every analysis once; the features (a few
milliseconds per image) come computed from each worker's `DriftFeatures` stage, so the
one detector only tests them, and it leaves its alarm state on the analysis
(`drifting`) for the stages after it (the sampler's `drift` rule). The baseline is loaded from
`drift_baseline_path` or learnt from the first `drift_baseline_size` images; a baseline
file that cannot be read disables drift testing (counted, logged) rather than silently
learning another one, since a pinned baseline is a deliberate choice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from lookout.shadow_eval.baseline import Baseline, BaselineError
from lookout.shadow_eval.drift import DriftConfigError, DriftModel, WindowResult
from lookout.shadow_eval.features import FeatureRow
from lookout.shadow_eval.limits import FEATURES
from lookout.sidecar.pipeline.analysis import Analysis
from lookout.sidecar.pipeline.stage import HandOn
from lookout.sidecar.quality.drift_features import DriftFeatures
from lookout.sidecar.quality.feature_store import FeatureStore
from lookout.sidecar.runtime.metrics import SidecarMetrics
from lookout.sidecar.settings import DriftSettings
from lookout.slo import catalog

log = logging.getLogger(__name__)


class DriftMonitor:
    name = "drift"

    def __init__(self, config: DriftSettings, metrics: SidecarMetrics,
                 class_names: Sequence[str] = (), seed: int | None = None) -> None:
        self._config = config
        self._metrics = metrics
        self._seed = seed
        self._lock = threading.Lock()
        self._learning: list[FeatureRow] = []
        self.model: DriftModel | None = None
        self.disabled = False
        self.calibrated = threading.Event()  # set once the model is ready (or given up)
        self._calibrating = False
        self._features = DriftFeatures(config, metrics, class_names, seed)
        self.store = (FeatureStore(config.feature_store_dir, config.feature_store_hours)
                      if config.feature_store_dir else None)
        self._store_failing = False
        if config.drift_baseline_path:
            try:
                rows = Baseline.load(config.drift_baseline_path).rows
            except BaselineError as error:
                self._disable(f"drift testing disabled: {error}")
            else:
                self._calibrate(rows)

    def _disable(self, message: str, traceback: bool = False) -> None:
        self.disabled = True
        self._metrics.component_error(self.name)
        log.error("%s", message, exc_info=traceback)
        self.calibrated.set()

    def _calibrate(self, rows: Sequence[FeatureRow]) -> None:
        """Build the detector from baseline rows in a background thread."""
        self._calibrating = True
        threading.Thread(target=self._build, args=(rows,), name="lookout-drift-calibration",
                         daemon=True).start()

    def _build(self, rows: Sequence[FeatureRow]) -> None:
        config = self._config
        try:
            model = DriftModel.from_rows(
                rows, FEATURES, window=config.drift_window,
                false_alarm_images=config.drift_false_alarm_images,
                clear_windows=config.drift_clear_windows, seed=self._seed)
        except Exception as error:  # the baseline cannot support a detector, or a bug
            self._disable(f"drift testing disabled: {error}",
                          traceback=not isinstance(error, DriftConfigError))
            return
        labels = (config.model_name, config.model_version)
        for name, detector in model.detectors.items():
            self._metrics[catalog.DRIFT_THRESHOLD].labels(*labels, name).set(detector.threshold)
            self._metrics[catalog.DRIFT_ALARM].labels(*labels, name).set(0)
        for name, why in model.skipped.items():
            log.info("drift feature %s not tested: %s", name, why)
        log.info("drift detector ready: %d features from %d baseline images, window %d, "
                 "one false alarm per %d images expected", len(model.detectors),
                 len(rows), config.drift_window, config.drift_false_alarm_images)
        with self._lock:
            self.model = model
        self.calibrated.set()

    @property
    def alarming(self) -> bool:
        """Whether any feature's drift alarm is raised now."""
        model = self.model
        return model is not None and bool(model.alarms)

    def offer(self, analysis: Analysis) -> bool:
        """Test one analysis's features and note whether drift is alarming now."""
        self._test(analysis)
        analysis.drifting = self.alarming
        return False

    def _test(self, analysis: Analysis) -> None:
        """The features a worker's DriftFeatures stage computed, else computed here
        once (the monitor used on its own)."""
        if self.disabled:
            return
        if analysis.features is None:
            analysis.features = self._features.row(analysis)
        row = analysis.features
        if not row:
            return
        self._keep(analysis, row)
        with self._lock:
            if self.model is None:
                if not self._calibrating:
                    self._learning.append(row)
                    if len(self._learning) >= self._config.drift_baseline_size:
                        rows, self._learning = self._learning, []
                        self._calibrate(rows)
                return
            results = self.model.update(row)
        for result in results:
            self._publish(result)

    def _keep(self, analysis: Analysis, row: FeatureRow) -> None:
        if self.store is None:
            return
        try:
            self.store.append(analysis.observation.started_at, row, analysis.observation.trace_id)
        except OSError as error:
            self._metrics.component_error(FeatureStore.name)
            if not self._store_failing:
                log.error("feature store %s: cannot write (%s); rows are dropped until it "
                          "can", self.store.directory, error.strerror or error)
            self._store_failing = True
            self.store.close()
        else:
            if self._store_failing:
                log.info("feature store %s: writing again", self.store.directory)
            self._store_failing = False

    def _publish(self, result: WindowResult) -> None:
        labels = (self._config.model_name, self._config.model_version, result.feature)
        self._metrics[catalog.DRIFT_STATISTIC].labels(*labels).set(result.statistic)
        self._metrics[catalog.DRIFT_ALARM].labels(*labels).set(1 if result.alarm else 0)
        self._metrics[catalog.DRIFT_PSI].labels(*labels).set(result.psi)
        self._metrics[catalog.DRIFT_WINDOWS].labels(*labels).inc()
        if result.raised:
            log.warning("drift alarm raised on %s: statistic %.3f > threshold %.3f "
                        "(PSI %.3f, exact test p=%.2g)", result.feature, result.statistic,
                        result.threshold, result.psi, result.p_value)

    def start(self, hand_on: HandOn) -> None:
        """Nothing to start: it finishes each analysis in the call."""

    def drain(self, timeout: float) -> bool:
        return True

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
