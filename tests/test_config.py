"""`vqmon watch` config: defaults merge into streams; every mistake is one line naming the file and key."""
from __future__ import annotations

import pytest

from monitor import config
from monitor.config import ModelSpec
from monitor.errors import InputError
from monitor.source.sampling import Sampler
from monitor.windows import WindowSpec

GOOD = """
device: cpu
defaults: {sample: 5fps, window: 10s/2s, models: ["liqe:untrained"]}
streams:
  - {id: cam1, url: "rtmp://user:secret@ingest:1935/live/cam1"}
  - {url: "srt://10.0.0.2:9000", sample: all, ref: "udp://239.0.0.1:5000"}
sinks:
  parquet: {out: /tmp/x, roll: 30s}
  kafka: {bootstrap: "127.0.0.1:9092"}
"""


def write(tmp_path, text, name="watch.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_defaults_merge_and_ids_come_from_the_url(tmp_path):
    cfg = config.load(write(tmp_path, GOOD))
    a, b = cfg.streams
    assert (a.id, a.sample, a.window, a.models) == ("cam1", Sampler(max_fps=5.0), WindowSpec(10.0, 2.0),
                                                    (ModelSpec("liqe", "lite", None),))
    assert (b.id, b.sample, b.ref) == ("10.0.0.2:9000", Sampler(), "udp://239.0.0.1:5000")
    assert cfg.device == "cpu" and cfg.sinks[0].options.roll == 30.0


@pytest.mark.parametrize("text,words", [
    ("streams: []", ["'streams' must be a non-empty list"]),
    ("streams: [{id: a}]", ["streams[0]", "'url'"]),
    ("streams: [{url: x, smaple: all}]", ["streams[0]", "unknown key", "smaple"]),
    ("streams: [{url: x, listen: 'yes'}]", ["'listen' must be bool"]),
    ("streams: [{url: a/x}, {url: b/x}]", ["duplicate stream id 'x'"]),
    ("streams: [{url: x}]\nsinks: {kafka: {}}", ["sinks.kafka", "bootstrap"]),
    ("streams: [{url: x}]\nsinks: {s3: {}}", ["sinks.s3", "unknown sink type"]),
    ("streams: [{url: x}]\nsinks: {webhook: {retries: 2}}", ["sinks.webhook", "'url'"]),
    ("streams: [{url: x}\n", ["not valid YAML"]),
    ("streams: [{url: x, max_lag: soon}]", ["streams[0]", "max_lag", "expected a duration"]),
    ("defaults: {max_lag: 0}\nstreams: [{url: x}]", ["streams[0]", "max_lag", "must be positive"]),
    ("streams: [{url: x, adaptive: 'no'}]", ["'adaptive' must be bool"]),
])
def test_mistakes_are_one_line_errors_naming_the_file(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        config.load(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path)
    for w in words:
        assert w in msg


def test_json_config_and_missing_file(tmp_path):
    assert config.load(write(tmp_path, '{"streams": [{"url": "x.mp4"}]}', "w.json")).streams[0].id == "x"
    with pytest.raises(InputError, match="no such file"):
        config.load(str(tmp_path / "nope.yaml"))


def test_the_shipped_example_config_is_valid():
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "deploy", "watch.example.yaml")
    cfg = config.load(path)
    assert [s.id for s in cfg.streams] == ["studio-a", "channel-1"]
    assert cfg.streams[1].ref and [s.type for s in cfg.sinks] == ["parquet", "kafka", "otel", "webhook"]
    assert cfg.http == "127.0.0.1:8080"
    for s in cfg.streams:
        assert len(s.alerts) == 4


def test_ray_section_is_checked():
    cfg = config.parse({"streams": [{"url": "a.mp4"}], "ray": {"num_gpus": 0.25, "backoff": "2s"}})
    assert (cfg.ray.num_gpus, cfg.ray.num_cpus, cfg.ray.backoff, cfg.ray.max_backoff) == (0.25, 1.0, 2.0, 60.0)
    for bad, match in (({"gpus": 1}, "unknown key"), ({"num_gpus": -1}, "'num_gpus' must be a number"),
                       ({"backoff": "soon"}, "ray: 'backoff'")):
        with pytest.raises(InputError, match=match):
            config.parse({"streams": [{"url": "a.mp4"}], "ray": bad})


def test_keeping_up_keys_from_the_file_and_the_command_line():
    from monitor.cli.commands import watch_config
    from monitor.cli.parser import build_parser

    cfg = config.parse({"defaults": {"max_lag": "500ms"}, "streams": [{"url": "a.mp4"}, {"url": "b.mp4", "max_lag": 3}]})
    assert [(s.max_lag, s.adaptive) for s in cfg.streams] == [(0.5, True), (3.0, True)]
    flags = build_parser().parse_args(["watch", "rtmp://host/live/cam", "--max-lag", "1.5s", "--no-adaptive"])
    assert [(s.max_lag, s.adaptive) for s in watch_config(flags).streams] == [(1.5, False)]
    plain = watch_config(build_parser().parse_args(["watch", "rtmp://host/live/cam"])).streams[0]
    assert (plain.max_lag, plain.adaptive) == (2.0, True)


@pytest.mark.parametrize("stream,words", [
    ("{url: x, window: soon}", ["streams[0]", "'window'", "soon", "expected a duration"]),
    ("{url: x, sample: often}", ["streams[0]", "'sample'", "often", "expected 'all'"]),
    ("{url: x, models: [nosuch]}", ["streams[0]", "'models'", "nosuch", "unknown model"]),
    ("{url: x, models: ['liqe:/no/such.safetensors']}", ["streams[0]", "'models'", "no such weights file"]),
    ("{url: x, alerts: [{name: a, kind: nope}]}", ["streams[0]", "'alerts'", "'kind' must be one of"]),
    ("{url: x, alerts: [{name: a, kind: freeze, for: soon}]}", ["streams[0]", "'alerts'", "field 'for'"]),
])
def test_a_bad_stream_fails_in_parse_in_one_line_naming_file_and_key(tmp_path, stream, words):
    """What `vqmon live` runs is checked on the driver, so no actor starts (and crash-loops) on a typo."""
    path = write(tmp_path, f"streams: [{stream}]")
    with pytest.raises(InputError) as e:
        config.load(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize("text,seconds", [("1h", 3600.0), ("2min", 120.0), ("1.5m", 90.0), ("500ms", 0.5), (3, 3.0)])
def test_one_duration_grammar_for_alerts_max_lag_ray_backoff_and_parquet_roll(text, seconds):
    cfg = config.parse({"streams": [{"url": "a.mp4", "max_lag": text,
                                     "alerts": [{"name": "f", "kind": "freeze", "for": text}]}],
                        "sinks": {"parquet": {"out": "/tmp/x", "roll": text}},
                        "ray": {"backoff": text, "max_backoff": text}})
    stream = cfg.streams[0]
    assert (stream.max_lag, stream.alerts[0].for_s, cfg.sinks[0].options.roll, cfg.ray.backoff,
            cfg.ray.max_backoff) == (seconds,) * 5
