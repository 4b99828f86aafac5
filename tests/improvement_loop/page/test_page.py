"""The fleet page in Debian's headless Chromium, served by uvicorn on loopback from a real catalog: what an
operator reads each morning is on it, plots included, and each episode opens its viewer."""
from html.parser import HTMLParser

import pytest
from page_world import ROBOTS, browse, chromium

pytestmark = pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed "
                                                           "(apt-get install chromium): the browser tests need it")


class Elements(HTMLParser):
    """(tag, attributes, text) of every element of a dumped DOM; a child element's text starts a new word."""

    def __init__(self, text: str):
        super().__init__()
        self.found, self._open = [], []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        for element in self._open:  # cells and blocks read as separate words
            element[2] += " "
        self.found.append([tag, dict(attrs), ""])
        self._open.append(self.found[-1])

    def handle_endtag(self, tag):
        while self._open and self._open.pop()[0] != tag:
            pass

    def handle_data(self, data):
        for element in self._open:
            element[2] += data

    def all(self, tag: str, **attrs) -> list[tuple[dict, str]]:
        return [(a, t) for g, a, t in self.found if g == tag and all(a.get(k.replace("_", "-")) == v
                                                                    for k, v in attrs.items())]


@pytest.fixture(scope="module")
def dom(page, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chromium")
    text = browse(page.url + "/", tmp / "profile", tmp / "page.png")
    return Elements(text), tmp / "page.png"


def test_robots_with_their_versions_and_state(dom):
    elements, _ = dom
    rows = {t.split()[0]: t for a, t in elements.all("tr") if t.split() and t.split()[0] in ROBOTS}
    assert sorted(rows) == list(ROBOTS)
    for robot, row in rows.items():
        assert "reference-v2" in row  # installed and targeted after the canary rollback
        assert ("offline" if robot == "arm-3" else "online") in row
    assert "cycle 2 canary regressed" in rows["arm-1"] and "(rollback)" in rows["arm-1"]


def test_plots_are_drawn_with_their_series(dom):
    elements, _ = dom
    plots = {a["data-plot"]: t for a, t in elements.all("svg", **{"class": "plot"})}
    assert set(plots) == {"episodes-per-day", "success-by-release", "intervention-by-release", "success-by-robot",
                          "intervention-by-robot", "gate-vs-fleet"}
    series = {a["data-series"] for a, _ in elements.all("polyline", **{"class": "series"})}
    assert {"reference@v1", "reference@v2", *ROBOTS} <= series
    assert len(elements.all("rect", **{"class": "bar"})) >= 10  # one block per robot and day with episodes
    points = [t for a, t in elements.all("title") if ": gate " in t]  # the latest gate numbers of each release
    assert len(points) == 3 and any(t.startswith("reference@v2: gate 70%, fleet ") for t in points)


def test_the_cycle_and_every_decision_with_its_numbers(dom):
    elements, _ = dom
    [(_, current)] = elements.all("p", id="current-cycle")
    assert "cycle 4" in current and "policy" in current and "reference@v2" in current
    text = elements.found[0][2]
    for shown in ("not better: success 58% vs 70%", "0.58", "0.72", "0.48", "[0.583, 0.825]", "p_value: 0.0075",
                  "rule: one_sided_test", "offline.ok: yes",
                  "success 40% below the incumbent's 70% on the same period", "arm-1 back on reference-v2"):
        assert shown in text
    verdicts = [t for a, t in elements.all("span") if a.get("class") in ("ok", "bad")]
    assert "refused" in verdicts and "accepted" in verdicts
    [(_, r)] = elements.all("b", id="gate-fleet-r")
    assert -1.0 <= float(r) <= 1.0


def test_the_screenshot_is_taken(dom):
    _, png = dom
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000
    assert int.from_bytes(data[16:20], "big") == 1280


def test_an_episode_link_opens_its_viewer_page(dom, page, world, tmp_path):
    elements, _ = dom
    links = [a["href"] for a, _ in elements.all("a", **{"class": "episode"})]
    assert links and all(link.startswith("/episodes/") for link in links)
    episode_id = links[0].rsplit("/", 1)[1]
    assert episode_id in world.episode_ids
    viewer = Elements(browse(page.url + links[0], tmp_path / "profile"))
    [(_, title)] = viewer.all("title")
    assert title.startswith(episode_id)
    assert viewer.all("img", id="frame-front") and viewer.all("span", id="outcome")


def test_with_a_token_the_browser_gets_401_without_it_and_the_page_with_it(world, tmp_path):
    from robot_runtime.improvement_loop.page.app import PageServer

    token = "t0ken-for-the-fleet-page"
    server = PageServer(world.catalog, token=token)
    try:
        refused = Elements(browse(server.url + "/", tmp_path / "stranger"))
        assert "401" in refused.found[0][2] and not refused.all("svg")
        granted = Elements(browse(f"{server.url}/?token={token}", tmp_path / "operator"))
        assert granted.all("svg", **{"class": "plot"}) and "arm-1" in granted.found[0][2]
    finally:
        server.stop()
