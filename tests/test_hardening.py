"""Issue 10 hardening: absurd sizes, specs that are not mappings, risk-control typos, shared specs,
implausible market data, and every loader's unreadable-file paths. Each test reproduces a failure
the issue reports (a native crash, an untyped exception, a silent pass) and pins the typed error.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import marginopt
from marginopt.batch._job import load_job
from marginopt.cli import app, sample_paths
from marginopt.errors import InputError, InvalidValue, MarginoptError, ModelError, SpecError
from marginopt.margins import load_model
from marginopt.market import MarketSnapshot, load_market
from marginopt.rebalance import RebalanceSpec, load_spec
from marginopt.rebalance._data import build_universe, limit_rows
from marginopt.portfolio import Portfolio, load_portfolio
from marginopt.thresholds import MAX_ABS_QUANTITY, MAX_MARK_IV_PCT

runner = CliRunner()
SAMPLE = sample_paths()


def sample_market_dict() -> dict:
    return json.loads(SAMPLE["market"].read_text())


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


# ----------------------------------------------------------------- 1. absurd position sizes
@pytest.mark.parametrize("qty", ["1e20", "1e308", "-1e11", "inf", "-inf", "nan", "1e400"])
def test_absurd_or_non_finite_quantities_are_refused_at_input(tmp_path, qty):
    path = write(tmp_path / "book.csv", f"instrument,quantity\nBTC-PERPETUAL,1\nBTC-25DEC26,{qty}\n")
    with pytest.raises(InvalidValue) as err:
        load_portfolio(path)
    assert err.value.source == str(path) and err.value.row == 2 and err.value.field == "quantity"


def test_the_plausible_maximum_is_stated_in_the_error(tmp_path):
    path = write(tmp_path / "book.json", json.dumps({"BTC-PERPETUAL": 1e20}))
    with pytest.raises(InvalidValue, match="1e\\+10 coin") as err:
        load_portfolio(path)
    assert err.value.field == "quantity"
    assert MAX_ABS_QUANTITY == 1e10
    load_portfolio({"BTC-PERPETUAL": MAX_ABS_QUANTITY})          # the bound itself is allowed


def test_rows_adding_up_past_the_maximum_are_refused(tmp_path):
    path = write(tmp_path / "book.csv", "instrument,quantity\nBTC-PERPETUAL,6e9\nBTC-PERPETUAL,6e9\n")
    with pytest.raises(InvalidValue) as err:
        load_portfolio(path)
    assert err.value.row == "BTC-PERPETUAL"


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e20, "x", None, True])
def test_portfolio_apply_refuses_nan_inf_and_absurd_trades(bad):
    book = Portfolio({"BTC-PERPETUAL": 1.0})
    with pytest.raises(InvalidValue) as err:
        book.apply({"BTC-PERPETUAL": bad})
    assert err.value.row == "BTC-PERPETUAL" and err.value.field == "quantity"
    with pytest.raises(InvalidValue):
        Portfolio({"BTC-PERPETUAL": bad})


def test_optimize_with_a_1e20_book_is_a_one_line_input_error_not_a_crash(tmp_path):
    # before: exit 134 (free(): invalid pointer) or 139 inside the solver
    book = SAMPLE["portfolio"].read_text() + "BTC-PERPETUAL,1e20\n"
    path = write(tmp_path / "big.csv", book)
    res = runner.invoke(app, ["optimize", "-p", str(path), "-m", str(SAMPLE["market"]),
                              "-s", str(SAMPLE["spec"])])
    assert res.exit_code == 2, res.output
    lines = [l for l in res.output.splitlines() if l.startswith("error")]
    assert len(lines) == 1 and str(path) in lines[0] and "field 'quantity'" in lines[0]
    assert "row 45" in lines[0]


# ----------------------------------------------------------------- 2. specs that are not mappings
@pytest.mark.parametrize("text, what", [("- a\n- b\n", "a list"), ("42\n", "a number"),
                                        ("just words\n", "a text string")])
def test_a_spec_that_is_not_a_mapping_is_a_spec_error_naming_the_file(tmp_path, text, what):
    path = write(tmp_path / "spec.yaml", text)
    with pytest.raises(SpecError, match=what) as err:
        load_spec(path)
    assert err.value.source == str(path)


def test_the_wrong_file_as_spec_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as err:
        load_spec(SAMPLE["portfolio"])         # a CSV book passed as the spec
    assert err.value.source == str(SAMPLE["portfolio"])
    with pytest.raises(SpecError) as err:
        load_spec(SAMPLE["market"])            # JSON is YAML: a mapping, but of the wrong keys
    assert "unknown key" in str(err.value)


@pytest.mark.parametrize("data, field", [
    ({"limits": ["BTC"]}, "limits"),
    ({"limits": {"BTC": {"vega_buckets": [1, 2]}}}, "limits.BTC.vega_buckets"),
    ({"limits": {"BTC": {"delta": [1, 2, 3]}}}, "limits.BTC.delta"),
    ({"limits": {"BTC": {"delta": [math.nan, 1]}}}, "limits.BTC.delta"),
    ({"trade_bounds": {"turnover_usd": math.inf}}, "trade_bounds.turnover_usd"),
    ({"min_saving_usd": math.nan}, "min_saving_usd"),
])
def test_spec_values_of_the_wrong_shape_are_spec_errors(data, field):
    with pytest.raises(SpecError) as err:
        RebalanceSpec.from_dict(data)
    assert err.value.field == field


def test_unknown_spec_key_is_named_with_the_closest_key():
    with pytest.raises(SpecError, match="unknown key 'do_not_trde' \\(did you mean 'do_not_trade'"):
        RebalanceSpec.from_dict({"do_not_trde": []})


# ----------------------------------------------------------------- 3. risk controls fail closed
@pytest.fixture(scope="module")
def sample():
    return (load_portfolio(SAMPLE["portfolio"]), load_market(SAMPLE["market"]),
            load_model("deribit-pm"))


@pytest.mark.parametrize("field", ["do_not_trade", "close_only"])
def test_a_typo_in_do_not_trade_or_close_only_is_a_spec_error(sample, tmp_path, field):
    book, market, model = sample
    path = write(tmp_path / "spec.yaml", f"{field}: [BTC-PERPETUL]\n")
    spec = load_spec(path)
    with pytest.raises(SpecError, match="BTC-PERPETUL.*closest: BTC-PERPETUAL") as err:
        build_universe(book, market, model, spec)
    assert err.value.field == field and err.value.value == "BTC-PERPETUL"
    assert err.value.source == str(path)
    with pytest.raises(SpecError):                  # and through the public API
        marginopt.optimize(book, market, model, spec)


def test_listed_but_unheld_names_in_risk_lists_are_fine(sample):
    book, market, model = sample
    unheld = [n for n in market.instrument_names if n not in book.positions][:2]
    spec = RebalanceSpec.from_dict({"do_not_trade": [unheld[0].lower()], "close_only": [unheld[1]],
                                    "universe": "held"})
    universe, _, _ = build_universe(book, market, model, spec)
    assert set(unheld) <= set(universe.excluded)


def test_do_not_trade_still_freezes_the_named_instrument(sample):
    book, market, model = sample
    spec = RebalanceSpec.from_dict({"do_not_trade": ["BTC-PERPETUAL"]})
    universe, _, _ = build_universe(book, market, model, spec)
    j = universe.names.index("BTC-PERPETUAL")
    assert universe.buy_max[j] == universe.sell_max[j] == 0.0


DUPLICATES = {
    "spec": ("limits:\n  BTC: {delta: 5}\nlimits:\n  ETH: {delta: 5}\n", load_spec, SpecError, "limits"),
    "nested spec": ("trade_bounds:\n  max_quantity: 5\n  max_quantity: 50\n", load_spec, SpecError,
                    "max_quantity"),
    "model": (SAMPLE["spec"].parent.parent.joinpath("models", "deribit-standard.yaml").read_text()
              + "\nname: again\n", load_model, ModelError, "name"),
    "job": ("market: a.json\nmarket: b.json\noutput_dir: out\naccounts_dir: books\n", load_job,
            InputError, "market"),
}


@pytest.mark.parametrize("kind", list(DUPLICATES))
def test_duplicate_yaml_keys_are_an_error_naming_the_key(tmp_path, kind):
    text, loader, error, key = DUPLICATES[kind]
    path = write(tmp_path / "file.yaml", text)
    with pytest.raises(error, match=f"key '{key}' is given twice") as err:
        loader(path)
    assert err.value.source == str(path)


def test_yaml_merge_keys_may_still_be_overridden(tmp_path):
    path = write(tmp_path / "spec.yaml", "limits:\n  BTC: &b {delta: 5}\n  ETH:\n    <<: *b\n    delta: 30\n")
    assert load_spec(path).limits["ETH"].delta == (-30.0, 30.0)


# ----------------------------------------------------------------- 4. shared specs
def test_limits_on_an_underlying_the_universe_lacks_are_skipped_and_recorded(sample):
    book, market, model = sample
    btc_only = Portfolio({k: v for k, v in book.positions.items() if k.startswith("BTC")})
    spec = load_spec(SAMPLE["spec"])            # limits and relative limits on BTC and ETH
    universe, _, inputs = build_universe(btc_only, market, model, spec)
    rows = limit_rows(spec, inputs, universe.x0)
    assert all(n.startswith("BTC.") for n in rows.names) and len(rows.names) == 3
    assert set(rows.skipped) == {"limits.ETH", "relative_limits.ETH"}
    assert "ETH" in rows.skipped["limits.ETH"]


def test_a_flat_book_under_a_shared_spec_skips_every_limit(sample):
    _, market, model = sample
    spec = load_spec(SAMPLE["spec"])
    universe, _, inputs = build_universe(Portfolio({}), market, model, spec)
    rows = limit_rows(spec, inputs, universe.x0)
    assert rows.names == [] and len(rows.skipped) == 4


def test_a_shared_spec_optimises_a_book_without_eth(sample):
    # before: SpecError "limits name ETH, which nothing in the universe has as underlying"
    book, market, model = sample
    btc_only = Portfolio({k: v for k, v in book.positions.items() if k.startswith("BTC")})
    proposal = marginopt.optimize(btc_only, market, model, SAMPLE["spec"])
    assert {l.name.split(".")[0] for l in proposal.limits} == {"BTC"}


# ----------------------------------------------------------------- 5. implausible market data
def market_with(edit, **snapshot_keys) -> dict:
    data = sample_market_dict()
    data.update(snapshot_keys)
    rows = {r["instrument_name"]: r for r in data["instruments"]}
    edit(rows)
    return data


def test_absurd_mark_iv_is_a_warning_naming_row_and_field(sample):
    # before: accepted silently. Not an error: Derive's stressed golden cases carry such vols.
    book, _, _ = sample
    name = next(n for n in book.names if n.endswith("-C"))
    data = market_with(lambda rows: rows[name].update(mark_iv=5000.0))
    market = MarketSnapshot.from_dict(data, source="m.json")
    assert len(market.warnings) == 1
    assert f"m.json, row {name}, field 'mark_iv': 5000% is above {MAX_MARK_IV_PCT:g}%" in market.warnings[0]


def test_a_crossed_quote_is_a_warning_and_is_not_traded_at(sample):
    book, _, model = sample
    data = market_with(lambda rows: rows["BTC-PERPETUAL"].update(bid_price=97300.0, ask_price=97200.0))
    market = MarketSnapshot.from_dict(data, source="m.json")
    assert len(market.warnings) == 1
    w = market.warnings[0]
    assert "m.json, row BTC-PERPETUAL, field 'bid_price'" in w and "crossed" in w
    assert np.isnan(market.column(["BTC-PERPETUAL"], "bid_price")[0])
    universe, _, _ = build_universe(book, market, model, RebalanceSpec())
    j = universe.names.index("BTC-PERPETUAL")
    assert universe.buy_max[j] == universe.sell_max[j] == 0.0


@pytest.mark.parametrize("field, value", [("mark_price", 1e12), ("underlying_price", 1e300),
                                          ("open_interest", 1e30), ("bid_price", 5e9)])
def test_absurd_prices_and_sizes_are_invalid_values(field, value):
    data = market_with(lambda rows: rows["BTC-25DEC26"].update({field: value}))
    with pytest.raises(InvalidValue, match="implausibly large") as err:
        MarketSnapshot.from_dict(data, source="m.json")
    assert (err.value.row, err.value.field) == ("BTC-25DEC26", field)


def test_an_absurd_index_price_is_an_invalid_value():
    with pytest.raises(InvalidValue) as err:
        MarketSnapshot.from_dict(market_with(lambda rows: None, index_prices={"BTC": 1e300, "ETH": 3420}))
    assert (err.value.row, err.value.field) == ("BTC", "index_prices")


def test_valuation_time_far_from_the_rows_own_timestamps():
    stamp = 1_700_000_000_000     # 2023-11-14, three years before the snapshot's valuation time
    data = market_with(lambda rows: rows["BTC-PERPETUAL"].update(creation_timestamp=stamp))
    with pytest.raises(InvalidValue, match="hours from the row's creation_timestamp") as err:
        MarketSnapshot.from_dict(data, source="m.json")
    assert (err.value.row, err.value.field) == ("BTC-PERPETUAL", "creation_timestamp")
    # two hours apart: possible (a delayed snapshot), so a warning
    near = int(MarketSnapshot.from_dict(sample_market_dict()).valuation_time.timestamp() * 1000) - 7_200_000
    data = market_with(lambda rows: rows["BTC-PERPETUAL"].update(creation_timestamp=near))
    market = MarketSnapshot.from_dict(data, source="m.json")
    assert any("creation_timestamp" in w and "2.0 hours" in w for w in market.warnings)


@pytest.mark.parametrize("when, words", [("2029-01-01T08:00:00Z", "expired more than a day before"),
                                         ("2021-01-01T08:00:00Z", "nearest listed expiry")])
def test_valuation_time_years_from_the_listed_expiries_is_a_warning(when, words):
    market = MarketSnapshot.from_dict(sample_market_dict(), valuation_time=when, source="m.json")
    assert any(words in w and "valuation_time" in w for w in market.warnings)


def test_the_sample_snapshot_has_no_warnings():
    assert load_market(SAMPLE["market"]).warnings == ()


def test_the_cli_prints_market_warnings_on_stderr(tmp_path):
    data = market_with(lambda rows: rows["BTC-PERPETUAL"].update(bid_price=97300.0, ask_price=97200.0))
    path = write(tmp_path / "m.json", json.dumps(data))
    res = runner.invoke(app, ["margin", "-p", str(SAMPLE["portfolio"]), "-m", str(path)])
    assert res.exit_code == 0, res.output
    assert f"warning: {path}, row BTC-PERPETUAL, field 'bid_price'" in res.output


@pytest.mark.parametrize("size", [0, -1, math.inf])
def test_lot_sizes_must_be_positive_and_finite(size):
    with pytest.raises(SpecError) as err:
        RebalanceSpec.from_dict({"lots": {"mode": "round", "sizes": {"BTC-option": size}}})
    assert err.value.field == "lots.sizes.BTC-option"


def test_nan_quantity_through_apply_never_gives_a_nan_margin(sample):
    book, market, _ = sample
    with pytest.raises(InvalidValue):
        marginopt.margin(book.apply({"BTC-PERPETUAL": math.nan}), market, "deribit-pm")


def test_a_margin_that_overflows_is_an_invalid_value_not_an_inf(sample):
    # before: "initial margin inf USD" with exit 0
    _, market, _ = sample
    data = yaml.safe_load((SAMPLE["spec"].parent.parent / "models" / "deribit-standard.yaml").read_text())
    for comp in [*data["currencies"]["BTC"]["initial"], *data["currencies"]["BTC"]["maintenance"]]:
        if comp["type"] == "futures_size":
            comp["size_rate"] = 1e300
    with np.errstate(over="ignore", invalid="ignore"), pytest.raises(InvalidValue, match="not a finite"):
        marginopt.margin({"BTC-PERPETUAL": 1e9}, market, load_model(data))


def test_a_model_parameter_of_inf_is_a_model_error():
    data = yaml.safe_load((SAMPLE["spec"].parent.parent / "models" / "deribit-standard.yaml").read_text())
    data["currencies"]["BTC"]["maintenance"] = None
    data["currencies"]["BTC"]["maintenance_factor"] = math.inf
    with pytest.raises(ModelError):
        load_model(data)


# ----------------------------------------------------------------- 6. unreadable files
GARBAGE = {
    "binary": bytes(range(256)) * 4,
    "latin-1": "é: 1\n".encode("latin-1"),
    "empty": b"",
    "json list": b"[1, 2, 3]",
    "json scalar": b"42",
    "json string": b'"x"',
    "json null": b"null",
    "deep json": b"[" * 100_000 + b"]" * 100_000,
    "list of objects": b'[{"a": 1}]',
    "yaml list": b"- a\n- b\n",
    "yaml string": b"just words\n",
    "huge integer": b'{"a": ' + b"9" * 5000 + b"}",
}


@functools.lru_cache(maxsize=1)
def _sample_inputs():
    return load_portfolio(SAMPLE["portfolio"]), load_market(SAMPLE["market"])


def _cov_margin(path):
    book, market = _sample_inputs()
    return marginopt.margin(book, market, load_model("covariance-var", covariance=path))


def _scenario_margin(path):
    book, market = _sample_inputs()
    return marginopt.margin(book, market, load_model("scenario-max", scenario_matrix=path))


LOADERS = {
    "book.json": load_portfolio, "book.csv": load_portfolio, "market.json": load_market,
    "spec.yaml": load_spec, "model.yaml": load_model, "job.yaml": load_job,
    "cov.csv": _cov_margin, "cov.npy": _cov_margin, "scen.csv": _scenario_margin,
}


def _check(loader, path: Path):
    """The loader either accepts the file (its result is returned) or raises a typed InputError
    naming it."""
    try:
        return loader(path)
    except InputError as exc:
        if path.name.startswith("scen") and "scenario matrix has no column" in str(exc):
            return None   # a readable matrix without this book's instruments: named by field
        assert str(path) in str(exc), str(exc)
        assert "\n" not in str(exc)
        return None


@pytest.mark.parametrize("garbage", list(GARBAGE))
@pytest.mark.parametrize("name", list(LOADERS))
def test_every_loader_gives_a_typed_error_naming_the_file(tmp_path, name, garbage):
    _check(LOADERS[name], write(tmp_path / name, GARBAGE[garbage]))


@pytest.mark.parametrize("name", [n for n in LOADERS if not n.startswith(("cov", "scen"))])
def test_a_folder_or_nothing_is_a_typed_error(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    with pytest.raises(InputError, match="folder|no margin model") as err:
        LOADERS[name](folder)
    with pytest.raises(InputError):
        LOADERS[name](None) if name != "spec.yaml" else load_spec(3.5)


@pytest.mark.parametrize("data", [
    {"valuation_time": "2026-11-20T08:00:00Z", "index_prices": [1], "instruments": []},
    {"valuation_time": "nope", "index_prices": {"BTC": 1}, "instruments": []},
    {"result": "x", "valuation_time": "2026-11-20T08:00:00Z", "index_prices": {"BTC": 1}},
    {"result": [1], "valuation_time": "2026-11-20T08:00:00Z", "index_prices": {"BTC": 1}},
    {"result": [], "valuation_time": "nope", "index_prices": {"BTC": 1}},
    {"result": [], "valuation_time": "2026-11-20T08:00:00Z", "index_prices": [1]},
    {"valuation_time": "2026-11-20T08:00:00Z", "index_prices": {"BTC": 1},
     "instruments": [{"instrument_name": "BTC-PERPETUAL", "mark_price": [1]}]},
])
def test_market_json_of_the_wrong_shape_is_a_typed_error(tmp_path, data):
    path = write(tmp_path / "m.json", json.dumps(data))
    with pytest.raises(InputError) as err:
        load_market(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("data", [
    {"positions": {"a": 1}}, {"result": "x"}, [1, 2], {"BTC-PERPETUAL": [1]},
    {"BTC-PERPETUAL": True}, [{"instrument": {"x": 1}, "quantity": 1}],
])
def test_portfolio_json_of_the_wrong_shape_is_a_typed_error(tmp_path, data):
    path = write(tmp_path / "b.json", json.dumps(data))
    with pytest.raises(InputError) as err:
        load_portfolio(path)
    assert str(path) in str(err.value)


def test_the_cli_names_a_binary_portfolio_in_one_line(tmp_path):
    path = write(tmp_path / "book.json", GARBAGE["binary"])
    res = runner.invoke(app, ["margin", "-p", str(path), "-m", str(SAMPLE["market"])])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [res.output.strip()]
    assert str(path) in res.output and "UTF-8" in res.output


# random bytes and random structured garbage through every loader. MARGINOPT_FUZZ_EXAMPLES sets
# the count per loader: 40 by default (a quick local run); CI (.ci/run) runs 2,000 per loader, the
# issue's bar (about a minute for the nine loader files in all)
_json = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(
                         st.sampled_from(["instruments", "result", "positions", "limits", "name",
                                          "currencies", "quantity", "instrument", "market",
                                          "valuation_time", "index_prices", "BTC", "x"]), c, max_size=4),
                     max_leaves=12)
FUZZ_EXAMPLES = int(os.environ.get("MARGINOPT_FUZZ_EXAMPLES", "40"))
_FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                 database=None)
#: matrices: numbers in CSV rows (with the sample book's instruments as a header for scenarios)
_names = sorted(load_portfolio(SAMPLE["portfolio"]).names)
_cells = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-10**30, 10**30) | st.text(max_size=4)
_csv = st.lists(st.lists(_cells, min_size=1, max_size=6), max_size=6).map(
    lambda rows: "\n".join(",".join(map(str, r)) for r in rows).encode())
_scen_csv = st.lists(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=len(_names),
                              max_size=len(_names)), max_size=4).map(
    lambda rows: "\n".join([",".join(_names)] + [",".join(map(str, r)) for r in rows]).encode())


def _npy(values) -> bytes:
    import io
    buf = io.BytesIO()
    np.save(buf, np.asarray(values, dtype=float))
    return buf.getvalue()


_npy_data = st.lists(st.lists(st.floats(), min_size=1, max_size=4), min_size=1, max_size=4).filter(
    lambda rows: len({len(r) for r in rows}) == 1).map(_npy)
_garbage = st.binary(max_size=200) | _json.map(lambda v: json.dumps(v).encode()) \
    | _json.map(lambda v: yaml.safe_dump(v).encode())
_FUZZ_DATA = {"cov.csv": _garbage | _csv, "cov.npy": _garbage | _npy_data,
              "scen.csv": _garbage | _csv | _scen_csv}


@pytest.mark.parametrize("name", list(LOADERS))
@_FUZZ
@given(data=st.data())
def test_fuzz_loaders_raise_only_typed_errors(name, data):
    raw = data.draw(_FUZZ_DATA.get(name, _garbage))
    with tempfile.TemporaryDirectory() as d:
        result = _check(LOADERS[name], write(Path(d) / name, raw))
    if result is not None and hasattr(result, "initial_margin_usd"):   # never a NaN or inf margin
        assert math.isfinite(result.initial_margin_usd) and math.isfinite(result.maintenance_margin_usd)


def test_margins_are_always_finite_for_accepted_books(sample):
    _, market, _ = sample
    res = marginopt.margin({"BTC-PERPETUAL": MAX_ABS_QUANTITY}, market, "deribit-pm")
    assert math.isfinite(res.initial_margin_usd)


def test_every_failure_here_is_a_marginopt_error():
    assert issubclass(InvalidValue, MarginoptError) and issubclass(SpecError, InputError)


# ----------------------------------------------------------------- universe lists and lot-size keys
@pytest.mark.parametrize("data, field, name, closest", [
    ({"universe": ["BTC-PERPETUAL", "BTC-PERPETUL"]}, "universe", "BTC-PERPETUL", "BTC-PERPETUAL"),
    ({"universe": ["BTC-PERPETUAL", "BTC-27NOV26-104000-X"]}, "universe", "BTC-27NOV26-104000-X",
     "BTC-27NOV26-104000-C"),
    ({"lots": {"mode": "round", "sizes": {"BTC-optoin": 0.1}}}, "lots.sizes.BTC-optoin", "BTC-optoin",
     "BTC-option"),
    ({"lots": {"mode": "round", "sizes": {"btc-option": 0.1}}}, "lots.sizes.btc-option", "btc-option",
     "BTC-option"),
    ({"lots": {"mode": "exact", "sizes": {"BTC-25DEC62": 1}}}, "lots.sizes.BTC-25DEC62", "BTC-25DEC62",
     "BTC-25DEC26"),
])
def test_unknown_names_in_universe_lists_and_lot_sizes_are_spec_errors(sample, tmp_path, data, field,
                                                                       name, closest):
    # before: an unparseable universe name was left out silently, a lot-size key that matched
    # nothing was never used, both with exit 0
    book, market, model = sample
    path = write(tmp_path / "spec.yaml", yaml.safe_dump(data))
    spec = load_spec(path)
    with pytest.raises(SpecError, match=f"{name} is not .*closest: .*{closest}") as err:
        build_universe(book, market, model, spec)
    assert err.value.field == field and err.value.value == name and err.value.source == str(path)


def test_known_universe_names_and_lot_keys_are_accepted(sample):
    book, market, model = sample
    spec = RebalanceSpec.from_dict({"universe": ["btc-perpetual", "BTC-25DEC26"],
                                    "lots": {"mode": "round", "sizes": {"BTC-option": 0.1,
                                                                        "ETH-future": 0.01,
                                                                        "BTC-PERPETUAL": 0.001}}})
    universe, _, _ = build_universe(book, market, model, spec)
    assert {"BTC-PERPETUAL", "BTC-25DEC26"} <= set(universe.names)
