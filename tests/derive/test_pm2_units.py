"""Hand-computed checks of the individual PM2 pieces, and of the loader's errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from marginopt.derive import (
    DeriveCaseError,
    build_risk_arrays,
    case_from_mapping,
    confidence_charge,
    initial_margin,
    load_case,
    load_params,
    maintenance_margin,
    option_contingency,
    oracle_contingency,
    skew_vol_multiplier,
    static_discounts,
    svi_vol,
    vol_shock_multipliers,
)

YEAR = 365 * 86400.0
DAY = 86400.0


def test_svi_at_the_money():
    # k = 0: w = a + b (rho (0 - 0) + sqrt(0 + sigma^2)) = 0.04 + 0.1 * 0.1 = 0.05
    vol = svi_vol(100.0, 0.04, 0.1, -0.5, 0.0, 0.1, 100.0, 0.25)
    assert vol == pytest.approx(math.sqrt(0.05 / 0.25), rel=1e-15)


def test_svi_clips_log_moneyness_and_caps_total_variance():
    # bound = 4 sqrt(a + b sigma) = 4 sqrt(0.05); beyond it the wing is flat
    bound = 4.0 * math.sqrt(0.05)
    w_edge = 0.04 + 0.1 * (-0.5 * bound + math.sqrt(bound**2 + 0.01))
    far = svi_vol(100.0 * math.exp(2.0), 0.04, 0.1, -0.5, 0.0, 0.1, 100.0, 0.25)
    assert far == pytest.approx(math.sqrt(w_edge / 0.25), rel=1e-14)
    # a = 30 gives w > 20: capped at 20
    assert svi_vol(100.0, 30.0, 0.1, 0.0, 0.0, 0.1, 100.0, 0.5) == pytest.approx(
        math.sqrt(20.0 / 0.5), rel=1e-15)


def test_vol_shock_multipliers_short_long_and_floor():
    vs = load_params().vol_shock  # up 0.5, down 0.275, powers 0.3 / 0.13, floor 1 day
    up, down = vol_shock_multipliers([7.5 * DAY, 60 * DAY, 0.5 * DAY], vs)
    m = np.array([4.0**0.3, 0.5**0.13, 30.0**0.3])  # 30/7.5, 30/60, 30/max(0.5, 1)
    np.testing.assert_allclose(up, 1 + 0.5 * m, rtol=1e-15)
    np.testing.assert_allclose(down, np.maximum(0.0, 1 - 0.275 * m), rtol=1e-15)


def test_skew_multiplier_linear_and_abs():
    sk = load_params().skew_shock  # cap 0.15 - 0.05 sqrt(tau), k* = max(.01, sqrt(tau) 4 (0.6 - 0.1 sqrt(tau)))
    tau = 0.25  # sqrt 0.5: cap = 0.125, k* = 0.5 * 4 * 0.55 = 1.1
    lin = skew_vol_multiplier([0.22, -0.22, -2.0], tau, sk, linear_cap=True, abs_moneyness=False)
    np.testing.assert_allclose(lin, [1.025, 0.975, 0.875], rtol=1e-14)
    ab = skew_vol_multiplier([-0.22, 5.0], tau, sk, linear_cap=False, abs_moneyness=True)
    np.testing.assert_allclose(ab, [1.025, 1.125], rtol=1e-14)


def test_static_discounts_and_rate_floor():
    mp = load_params().margin  # 0.95 / 1.04; long 1 x r + 0.08; short 0.5 x r + 0.08
    pos, neg = static_discounts([YEAR, YEAR], [0.05, -0.2], mp)
    np.testing.assert_allclose(pos, [0.95 * math.exp(-0.13), 0.95 * math.exp(-0.08)], rtol=1e-15)
    # negative-value factor capped at 1 / discount: e^{0.05} < 1.04 e^{0.105}; rate floored at 0
    np.testing.assert_allclose(neg, [math.exp(0.05), 1.0], rtol=1e-15)


def _case(options=(), perp=0.0, perp_conf=1.0, spot_conf=1.0, **scenario):
    feeds = [{"FeedExpiry": 2592000, "Forward": 1000.0, "ForwardConfidence": 1.0, "Rate": 0.0,
              "RateConfidence": 1.0, "SVIparam": [0.01, 0.1, 0.0, 0.0, 0.1, 1000.0, 0.08],
              "OptionVolConfidences": 1.0}]
    sc = {"Cash": 0.0, "SpotPrice": 1000.0, "SpotConfidence": spot_conf, "NumPerps": perp,
          "PerpPrice": 1000.0, "PerpConfidence": perp_conf, "StablePrice": 1.0,
          "Options": [{"Expiry": 2592000, "Strike": k, "IsCall": c, "Amount": a}
                      for k, c, a in options],
          "OptionFeeds": feeds, **scenario}
    return case_from_mapping({"Scenario": sc, "Parameters": {}})


def test_option_contingency_nets_calls_and_puts_per_strike():
    # strike 1000: call -3, put +1 -> 2 naked; strike 1100 call -2 -> 2; strike 900 put +5 -> 0
    case = _case([(1000.0, 1, -3.0), (1000.0, 0, 1.0), (1100.0, 1, -2.0), (900.0, 0, 5.0)])
    arrays = build_risk_arrays(case)
    assert option_contingency(None, arrays, 0.003) == pytest.approx(0.003 * 1000.0 * 4.0)
    mm, im = maintenance_margin(None, arrays), initial_margin(None, arrays)
    assert mm.option_contingency == pytest.approx(0.003 * 4000.0)
    assert im.option_contingency == pytest.approx(0.005 * 4000.0)


def test_oracle_contingency_perp_confidence_joins_options_only_when_held():
    # threshold 0.55, margin 1.0; spot conf 0.5, perp conf 0.4; 2 contracts gross at spot 1000
    opts = [(1000.0, 1, -1.0), (1100.0, 0, 1.0)]
    held = build_risk_arrays(_case(opts, perp=2.0, perp_conf=0.4, spot_conf=0.5))
    # perp: (1 - 0.4) 2 * 1000; options: (1 - 0.4) 2 * 1000
    assert oracle_contingency(None, held) == pytest.approx(0.6 * 2000.0 + 0.6 * 2000.0)
    flat = build_risk_arrays(_case(opts, perp=0.0, perp_conf=0.4, spot_conf=0.5))
    assert oracle_contingency(None, flat) == pytest.approx(0.5 * 2000.0)
    assert confidence_charge(0.55, 1000.0, held.params.other) == 0.0


def test_case_parameters_override_the_yaml_defaults():
    case = case_from_mapping({
        "Scenario": {"Cash": 10.0, "SpotPrice": 1.0, "SpotConfidence": 1.0, "StablePrice": 1.0},
        "Parameters": {"Margin": {"MM_LOSS_FACTOR": 0.5}},
    })
    assert case.params.margin.mm_loss_factor == 0.5
    assert case.params.margin.im_loss_factor == 1.0  # untouched default
    assert len(case.params.scenarios) == 31
    assert case.params.scenarios.kind.count("tail") == 6


def test_malformed_case_names_the_field(tmp_path):
    bad = {"Scenario": {"Cash": 0, "SpotPrice": 1.0, "SpotConfidence": 1.0, "StablePrice": 1.0,
                        "Options": [{"Expiry": 1, "Strike": "abc", "IsCall": 1, "Amount": 1}]},
           "Parameters": {}}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DeriveCaseError) as err:
        load_case(path)
    assert err.value.field == "Scenario.Options[0].Strike"

    bad["Scenario"]["Options"][0]["Strike"] = 100.0
    path.write_text(json.dumps(bad))
    with pytest.raises(DeriveCaseError) as err:
        load_case(path)
    assert err.value.field == "Scenario.Options[0].Expiry"  # no feed for that expiry

    bad["Scenario"]["Options"] = []
    bad["Parameters"] = {"VolShock": {"VOLRANGEUP": "x"}}
    path.write_text(json.dumps(bad))
    with pytest.raises(DeriveCaseError) as err:
        load_case(path)
    assert err.value.field == "Parameters.VolShock.VOLRANGEUP"
