from __future__ import annotations

import pytest

from lookout.sidecar.config import Address, ConfigError, load_config, parse_size
from lookout.sidecar.dataplane.routes import OTHER_ROUTE, RouteTemplates


def test_defaults_match_the_documented_pod_layout() -> None:
    config = load_config(env={})
    assert config.listen == Address("0.0.0.0", 8080)
    assert config.admin == Address("0.0.0.0", 9090)
    assert config.upstream == "http://127.0.0.1:8000"
    assert config.max_body_bytes == 64 * 1024 * 1024


def test_command_line_beats_env_beats_file(tmp_path) -> None:
    file = tmp_path / "lookout.yaml"
    file.write_text("model_name: from-file\nmodel-version: v-file\nread_timeout: 7\n")
    env = {"LOOKOUT_MODEL_VERSION": "v-env", "LOOKOUT_READ_TIMEOUT": "9"}
    config = load_config({"read_timeout": "11"}, env=env, config_file=file)
    assert config.model_name == "from-file"
    assert config.model_version == "v-env"
    assert config.read_timeout == 11.0


def test_config_file_can_come_from_env(tmp_path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("routes:\n  - /a/{id}\n  - /b\nmax_body_bytes: 2MiB\n")
    config = load_config(env={"LOOKOUT_CONFIG": str(file)})
    assert config.routes == ("/a/{id}", "/b")
    assert config.max_body_bytes == 2 * 1024 * 1024


@pytest.mark.parametrize(
    ("env", "fragment"),
    [
        ({"LOOKOUT_UPSTREAM": "127.0.0.1:8000"}, "LOOKOUT_UPSTREAM"),
        ({"LOOKOUT_LISTEN": "8080"}, "HOST:PORT"),
        ({"LOOKOUT_MAX_BODY_BYTES": "lots"}, "LOOKOUT_MAX_BODY_BYTES"),
        ({"LOOKOUT_READ_TIMEOUT": "-1"}, "greater than 0"),
        ({"LOOKOUT_LOG_LEVEL": "loud"}, "expected one of"),
        ({"LOOKOUT_ROUTES": "infer"}, "must start with '/'"),
    ],
)
def test_invalid_values_name_the_key_and_the_fix(env, fragment) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(env=env)
    assert fragment in str(caught.value)
    assert "environment variable" in str(caught.value)


def test_unknown_file_key_is_rejected_with_the_known_ones(tmp_path) -> None:
    file = tmp_path / "c.yaml"
    file.write_text("upstrem: http://x:1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'upstrem'.*upstream"):
        load_config(env={}, config_file=file)


def test_unreadable_and_malformed_files_are_clear(tmp_path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(env={}, config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(env={}, config_file=bad)


def test_sizes_accept_binary_and_decimal_units() -> None:
    assert parse_size("512KiB") == 512 * 1024
    assert parse_size("3MB") == 3_000_000
    with pytest.raises(ValueError):
        parse_size("3 parsecs")


def test_routes_bound_the_label_set() -> None:
    routes = RouteTemplates(("/v2/models/{model}/infer", "/v1/models/{model}:predict"))
    assert routes.label("/v2/models/yolo11n/infer") == "/v2/models/{model}/infer"
    assert routes.label("/v2/models/yolo11n/infer/") == "/v2/models/{model}/infer"
    assert routes.label("/v1/models/det:predict") == "/v1/models/{model}:predict"
    assert routes.label("/v2/models/a/b/infer") == OTHER_ROUTE
    assert routes.label("/images/123456.jpg") == OTHER_ROUTE


def test_a_drift_baseline_too_small_to_calibrate_is_refused_at_start_up() -> None:
    with pytest.raises(ConfigError, match=r"drift_baseline_size: 40 images cannot calibrate"
                                          r".*at least 50"):
        load_config({"drift_baseline_size": "40"}, env={})
    assert load_config({"drift_baseline_size": "40", "drift": "false"}, env={}).drift is False
    with pytest.raises(ConfigError, match="drift_window: 2000000 values per window"):
        load_config({"drift_window": "2000000", "drift_false_alarm_images": "100"}, env={})


def test_a_pinned_baseline_that_cannot_be_read_is_refused_at_start_up(tmp_path) -> None:
    missing = tmp_path / "baseline.json"
    with pytest.raises(ConfigError, match=r"drift_baseline_path: baseline .*baseline.json"):
        load_config({"drift_baseline_path": str(missing)}, env={})
    missing.write_text('{"format": "something-else"}')
    with pytest.raises(ConfigError, match="is not a lookout drift baseline"):
        load_config({"drift_baseline_path": str(missing)}, env={})


def test_model_files_that_are_not_onnx_are_refused_naming_the_key(tmp_path) -> None:
    import zipfile

    checkpoint = tmp_path / "yolo11n.pt"  # what `torch.save` writes: a zip archive
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("yolo11n/data.pkl", b"\x80\x02}q\x00.")
    with pytest.raises(ConfigError, match=r"model_path: model file .*yolo11n.pt is a zip "
                                          r"archive .*not ONNX; export it"):
        load_config({"model_path": str(checkpoint)}, env={})
    garbage = tmp_path / "reference.onnx"
    garbage.write_bytes(b"\x08\x07 not really a model")
    with pytest.raises(ConfigError, match=r"shadow_model_path: .* is not a loadable ONNX"):
        load_config({"shadow_model_path": str(garbage)}, env={})
    from lookout.lookout_demo.models import model_path

    cut = tmp_path / "cut.onnx"  # a copy that stopped half-way
    cut.write_bytes(model_path("primary").read_bytes()[:300_000])
    with pytest.raises(ConfigError, match=r"model_path: .* or cut short"):
        load_config({"model_path": str(cut)}, env={})
    assert load_config({"model_path": str(model_path("coarse"))}, env={}).model_path
    with pytest.raises(ConfigError, match=r"model_path: model file .*absent.onnx does not"):
        load_config({"model_path": str(tmp_path / "absent.onnx")}, env={})
