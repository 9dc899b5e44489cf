"""Each series keeps one look (colour and pattern) on every page and chart, and no two series in a chart
share a fill. In Debian's Chromium against ``ledger serve`` (what is painted), and the rules alone."""

from __future__ import annotations

import re
from collections import defaultdict

import httpx
import pytest
from dashboard_helpers import browser, screenshot, sign_in, store_of  # noqa: F401 - fixture
from http_helpers import bearer, server  # noqa: F401 - fixture

from ledger_service.dashboard.charts import stacked_bars, ticks
from ledger_service.dashboard.styles import SLOTS, home_style, probes, styles

QUERY = "period=custom&from=2026-11-20&to=2026-11-26"
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("anthropic", "claude-haiku-3.5"),
          ("anthropic", "claude-sonnet-4"), ("google", "gemini-1.5-flash"), ("meta", "llama-3.1-70b"), (None, None)]
ACCOUNTS = {"acct-a": [0, 1, 2, 3, 6], "acct-b": [2, 3, 4, 5], "acct-c": [0, 5]}
#: For each stacked chart on a page: its id, and for each series the paints of its bars and of its legend swatch.
PAINTS = """() => {
  const paint = (id) => {
    const pattern = document.getElementById(id);
    return [...pattern.children].map((mark) => mark.outerHTML).join("");
  };
  return [...document.querySelectorAll("svg.chart:not(.bars)")].map((svg) => {
    const bars = {};
    for (const rect of svg.querySelectorAll("rect[data-series]")) {
      const id = rect.getAttribute("fill").match(/^url\\(#(.+)\\)$/)[1];
      (bars[rect.dataset.series] ||= []).push(paint(id));
    }
    const legend = {};
    for (const item of svg.nextElementSibling.querySelectorAll("li")) {
      legend[item.dataset.series] = paint(item.querySelector("pattern").id);
    }
    return {chart: svg.id, bars, legend};
  });
}"""


@pytest.fixture
def many_series(server, browser):  # noqa: F811 - the fixtures imported above
    admin = server.new_key("--role", "admin")
    items = [{"account_id": account, "user_id": "ada", "charge_type": "completion", "provider": MODELS[m][0],
              "model": MODELS[m][1], "prompt_tokens": 100 * (m + 1) + day, "completion_tokens": 9 * day,
              "charge_id": f"{account}-{m}-{day}", "occurred_at": f"2026-11-{20 + day}T10:00:00Z"}
             for account, models in ACCOUNTS.items() for m in models for day in range(0, 7, 1 + m % 2)]
    answer = httpx.post(f"{server.url}/v1/charges/batch", json={"charges": items}, headers=bearer(admin))
    assert answer.json()["recorded"] == len(items)
    context = browser.new_context(base_url=server.url)
    yield server, admin, context.new_page()
    context.close()


@pytest.mark.browser
def test_every_series_keeps_one_fill_across_pages_and_none_is_shared_in_a_chart(many_series):
    running, admin, page = many_series
    sign_in(page, admin)
    looks: dict[str, set[str]] = defaultdict(set)
    charts = 0
    for path in ["/dashboard/overview", *(f"/dashboard/accounts/{a}" for a in ACCOUNTS)]:
        assert page.goto(f"{path}?{QUERY}").status == 200
        for chart in page.evaluate(PAINTS):
            charts += 1
            legend = chart["legend"]
            assert len(set(legend.values())) == len(legend), f"{path} {chart['chart']}: two series share a fill"
            for series, paints in chart["bars"].items():
                assert set(paints) == {legend[series]}, f"{path} {chart['chart']}: {series} drawn unlike its legend"
            for series, paint in legend.items():
                looks[series].add(paint)
        screenshot(page, f"colours{path.replace('/', '-')}", store_of(running))
    assert charts == 2 * (1 + len(ACCOUNTS))
    assert len(looks) == len(MODELS)
    changed = {series: paints for series, paints in looks.items() if len(paints) != 1}
    assert not changed, f"series whose look changed between pages: {changed}"


def colliding_pair() -> tuple[str, str]:
    """Two keys whose home slots are the same (found deterministically)."""
    seen: dict[int, str] = {}
    for n in range(10_000):
        key = f"provider / model-{n}"
        slot = next(probes(key))
        if slot in seen:
            return seen[slot], key
        seen[slot] = key
    raise AssertionError("no collision found")


def test_a_series_look_comes_from_its_key_alone():
    assert home_style("openai / gpt-4o") == styles(["openai / gpt-4o"])["openai / gpt-4o"]
    assert (home_style("openai / gpt-4o").colour, home_style("openai / gpt-4o").pattern) == ("#000000", "cross")
    assert styles(["b", "a", "c"]) == styles(["c", "a", "b"])
    assert all(sorted(probes(key)) == list(range(SLOTS)) for key in ("a", "openai / gpt-4o", "x" * 300))


def test_colliding_keys_get_different_fills_deterministically():
    first, second = sorted(colliding_pair())  # the key sorting first keeps its home slot
    chosen = styles([second, first])
    assert chosen[first] == home_style(first) and chosen[second] != chosen[first]
    assert chosen == styles([first, second])


def test_no_fill_repeats_until_every_slot_is_used():
    chosen = styles([f"p / m{n}" for n in range(SLOTS)])
    assert len({style.slot for style in chosen.values()}) == SLOTS


@pytest.mark.parametrize(("top", "expected"), [
    (0, [0]), (1, [0, 1]), (3, [0, 1, 2, 3]), (7, [0, 2, 4, 6, 8]), (10, [0, 5, 10]), (1234, [0, 500, 1000, 1500]),
    (400_000, [0, 100_000, 200_000, 300_000, 400_000]),
])
def test_axis_ticks_are_round_and_cover_the_data(top, expected):
    assert ticks(top) == expected


def test_an_empty_chart_shows_one_zero_and_says_so():
    drawn = stacked_bars("c", "Cost", ["2026-01-01", "2026-01-02"], [], lambda day, series: 0, str,
                         lambda value, step: f"${value / 1e6:.2f}")
    assert re.findall(r'class="axis tick">([^<]*)<', drawn) == ["$0.00"]
    assert "No usage in this period" in drawn


def test_tick_labels_never_repeat():
    for top in (1, 2, 5, 9, 99, 12_345, 4_000_001):
        drawn = stacked_bars("c", "Tokens", ["2026-01-01"], ["s"], lambda day, series, top=top: top,
                             lambda v: f"{v:,}")
        labels = re.findall(r'class="axis tick">([^<]*)<', drawn)
        assert len(labels) == len(set(labels)) >= 2, (top, labels)
