"""`python -m server`'s numeric and zoo flags: every value that would make a limit refuse everything, wait for ever
or fall back silently to another zoo is refused at parse time with one line naming the flag."""

from __future__ import annotations

import pytest

from server.__main__ import parse_args

REFUSED = [("--sessions", "0"), ("--sessions", "-1"), ("--max-batch", "0"), ("--max-batch", "-5"),
           ("--max-wait-ms", "nan"), ("--max-wait-ms", "-1"), ("--shutdown-timeout", "nan"),
           ("--shutdown-timeout", "-1"), ("--shutdown-timeout", "inf"), ("--ort-threads", "-1"), ("--ort-threads", "0"),
           ("--cache-max-mb", "0"), ("--cache-max-mb", "1e3"), ("--max-aspect", "inf"), ("--max-aspect", "0.5"),
           ("--header-timeout", "nan"), ("--body-timeout", "inf"), ("--max-images", "100000"),
           ("--max-image-pixels", str(2**40)), ("--max-image-bytes", "-1"), ("--zoo", ""), ("--zoo", "  "),
           ("--compare-zoo", ""), ("--port", "65536"), ("--port", "-1"), ("--grpc-port", "65536"),
           ("--grpc-port", "-1"), ("--grpc-port", "\u00b2"), ("--grpc-port", "80.5")]


@pytest.mark.parametrize(("flag", "value"), REFUSED, ids=[f"{f}={v}" for f, v in REFUSED])
def test_out_of_range_flags_exit_2_naming_the_flag(capsys, flag, value):
    with pytest.raises(SystemExit) as stop:
        parse_args([flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err[-1].startswith(f"python -m server: error: argument {flag}"), err
    assert "Traceback" not in "\n".join(err)


def test_values_within_range_are_taken():
    args = parse_args(["--sessions", "1", "--max-batch", "1024", "--max-wait-ms", "0", "--shutdown-timeout", "0",
                       "--ort-threads", "2", "--max-aspect", "1", "--header-timeout", "0.5", "--zoo", "org/name",
                       "--port", "0", "--grpc-port", "8001"])
    assert (args.sessions, args.max_batch, args.max_wait_ms, args.shutdown_timeout, args.ort_threads,
            args.max_aspect, args.header_timeout, args.zoo, args.port, args.grpc_port) == (
        1, 1024, 0.0, 0.0, 2, 1.0, 0.5, ["org/name"], 0, 8001)


def test_grpc_is_off_by_default_and_on_beside_http_on_the_same_host(monkeypatch):
    from server.__main__ import grpc_address, server_config

    monkeypatch.delenv("PREZOO_GRPC_PORT", raising=False)
    args = parse_args([])
    assert args.grpc_port == 0 and server_config(args, None, []).grpc_address is None
    args = parse_args(["--host", "0.0.0.0", "--grpc-port", "8001", "--shutdown-timeout", "3"])
    assert (server_config(args, None, []).grpc_address, server_config(args, None, []).grpc_grace_s) == (
        "0.0.0.0:8001", 3.0)
    assert grpc_address("::1", 8001) == "[::1]:8001"
    monkeypatch.setenv("PREZOO_GRPC_PORT", "9001")
    assert parse_args([]).grpc_port == 9001
