"""Side by side: every model's margin equals a direct call; models that cannot margin the book
are listed with the reason; savings are against the current mode."""

from __future__ import annotations

import pytest
import yaml

from marginopt import ModelError, Portfolio, margin
from marginopt.explain import compare

from .conftest import shipped


def test_every_shipped_model(book, market):
    c = compare(book, market)
    by = {m.model: m for m in c.models}
    assert c.current == "deribit-standard"
    for name in ("deribit-pm", "deribit-standard", "covariance-var"):
        m = by[name]
        direct = margin(book, market, name)
        assert m.applies and m.initial_margin_usd == pytest.approx(direct.initial_margin_usd, rel=1e-12)
        assert m.maintenance_margin_usd == pytest.approx(direct.maintenance_margin_usd, rel=1e-12)
        assert m.saving_usd == pytest.approx(by["deribit-standard"].initial_margin_usd
                                             - direct.initial_margin_usd, rel=1e-12)
    assert not by["derive-pm2"].applies and "inverse" in by["derive-pm2"].reason
    assert not by["scenario-max"].applies and "matrix" in by["scenario-max"].reason
    # a currency the model has no parameters for: listed with the reason
    sol = compare(Portfolio({"SOL_USDC-PERPETUAL": 10.0}), market, ["deribit-standard", "covariance-var"])
    assert sol.models[0].applies and not sol.models[1].applies and "SOL" in sol.models[1].reason
    frame = c.to_frame()
    assert list(frame["model"]) == [m.model for m in c.models]
    assert c.best.model == min((m for m in c.models if m.applies), key=lambda m: m.initial_margin_usd).model


def test_a_user_model_and_current(market, tmp_path):
    book = Portfolio({"BTC-27SEP24-55000-P": -3.0, "BTC-PERPETUAL": 0.5})
    data = shipped("deribit-pm")
    data["name"] = "deribit-pm-wider"
    data["currencies"]["BTC"]["initial"][0]["price_range"] = 0.2
    path = tmp_path / "wider.yaml"
    path.write_text(yaml.safe_dump(data))
    c = compare(book, market, ["deribit-pm", str(path)], current="deribit-pm")
    pm, wider = c.models
    assert wider.model == "deribit-pm-wider"
    assert wider.initial_margin_usd == pytest.approx(margin(book, market, path).initial_margin_usd, rel=1e-12)
    assert wider.saving_usd == pytest.approx(pm.initial_margin_usd - wider.initial_margin_usd, rel=1e-12)
    assert pm.saving_usd == 0.0
    with pytest.raises(ModelError, match="not among"):
        compare(book, market, ["deribit-pm"], current="deribit-standard")
    with pytest.raises(ModelError, match="does not apply"):
        compare(book, market, ["deribit-pm", "derive-pm2"], current="derive-pm2")
    with pytest.raises(ModelError, match="no margin model"):
        compare(book, market, ["deribit-pmm"])
