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
           ("--compare-zoo", "")]


@pytest.mark.parametrize(("flag", "value"), REFUSED, ids=[f"{f}={v}" for f, v in REFUSED])
def test_out_of_range_flags_exit_2_naming_the_flag(capsys, flag, value):
    with pytest.raises(SystemExit) as stop:
        parse_args([flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and err[-1].startswith(f"python -m server: error: argument {flag}"), err
    assert "Traceback" not in "\n".join(err)


def test_values_within_range_are_taken():
    args = parse_args(["--sessions", "1", "--max-batch", "1024", "--max-wait-ms", "0", "--shutdown-timeout", "0",
                       "--ort-threads", "2", "--max-aspect", "1", "--header-timeout", "0.5", "--zoo", "org/name"])
    assert (args.sessions, args.max_batch, args.max_wait_ms, args.shutdown_timeout, args.ort_threads,
            args.max_aspect, args.header_timeout, args.zoo) == (1, 1024, 0.0, 0.0, 2, 1.0, 0.5, "org/name")
