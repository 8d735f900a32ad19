"""The page at ``/`` in a real browser (Debian's Chromium) against ``scoreboard serve``.

These tests never skip: without /usr/bin/chromium every one of them fails, so that CI
cannot pass without having looked at the page.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.sync_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Dialog,
    Locator,
    Page,
    Route,
    expect,
    sync_playwright,
)

from tests.support import SECRET, ServerProcess

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
XSS_NAME = "<img src=x onerror=alert(1)>"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}

expect.set_options(timeout=5000)


# -- the server, seen from outside ----------------------------------------------------


class Board:
    """A running ``scoreboard serve`` and a plain HTTP client for it."""

    def __init__(self, process: ServerProcess, key: str) -> None:
        self.process = process
        self.url = process.url
        self.key = key
        self.http = httpx.Client(base_url=process.url, timeout=10)

    def token(self, user_id: str, name: str | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {"sub": user_id, "iat": now, "exp": now + 3600}
        if name is not None:
            claims["name"] = name
        return jwt.encode(claims, self.key, algorithm="HS256")

    def post(self, user_id: str, increment: int, name: str | None = None) -> dict[str, Any]:
        response = self.http.post(
            "/score", json={"user_id": user_id, "increment": increment},
            headers={"Authorization": f"Bearer {self.token(user_id, name)}"},
        )
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    def top(self) -> list[dict[str, Any]]:
        scores: list[dict[str, Any]] = self.http.get("/scores").json()
        return scores

    def top_score(self) -> int:
        top = self.top()
        return int(top[0]["score"]) if top else 0

    def user(self, user_id: str) -> dict[str, Any]:
        response = self.http.get(f"/users/{user_id}")
        assert response.status_code == 200, response.text
        user: dict[str, Any] = response.json()
        return user


def start_board(data_dir: Path, dev_key: bool) -> Board:
    env = {"SCOREBOARD_MAX_INCREMENT": "1000000000"}
    if dev_key:
        env["SCOREBOARD_JWT_SECRET"] = ""  # empty counts as unset: the server makes a dev key
    process = ServerProcess(data_dir, env=env)
    process.start()
    key = (data_dir / "dev-jwt-secret").read_text().strip() if dev_key else SECRET
    return Board(process, key)


def stop_board(board: Board) -> None:
    board.http.close()
    board.process.kill(signal.SIGTERM)


@pytest.fixture(scope="module")
def board(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Board]:
    """One server on its development key for the module; each test seeds above the rest."""
    running = start_board(tmp_path_factory.mktemp("browser"), dev_key=True)
    try:
        yield running
    finally:
        stop_board(running)


# -- the browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing (apt install chromium): browser tests must not skip")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


class Watched:
    """A page with everything it complains about collected: console errors (CSP
    violations land there too), uncaught exceptions and dialogs."""

    def __init__(self, context: BrowserContext) -> None:
        self.context = context
        self.page = context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.allowed: list[re.Pattern[str]] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"pageerror: {error}"))
        self.page.on("dialog", self._dialog)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.errors.append(f"{message.text} @ {message.location.get('url', '')}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def allow(self, pattern: str) -> None:
        """Tolerate console errors matching ``pattern`` (a test that breaks the network)."""
        self.allowed.append(re.compile(pattern))

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@contextlib.contextmanager
def watched_page(browser: Browser, **options: Any) -> Iterator[Watched]:
    context = browser.new_context(locale="en-US", **options)
    context.set_default_timeout(5000)
    watched = Watched(context)
    try:
        yield watched
        assert watched.unexpected() == []
        assert watched.dialogs == []
    finally:
        context.close()


@pytest.fixture
def watched(browser: Browser) -> Iterator[Watched]:
    with watched_page(browser, viewport=DESKTOP) as watched:
        yield watched


# -- reading the page -----------------------------------------------------------------


def open_live(page: Page, url: str) -> None:
    page.goto(url)
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")


def rows(page: Page) -> Locator:
    return page.locator("#board-rows tr[data-user-id]")


def row(page: Page, user_id: str) -> Locator:
    return page.locator(f'#board-rows tr[data-user-id="{user_id}"]')


def mark_no_reload(page: Page) -> Callable[[], bool]:
    """A flag that only survives as long as the document does."""
    page.evaluate("window.__sameDocument = true")
    return lambda: bool(page.evaluate("window.__sameDocument === true"))


def session_token(page: Page) -> str | None:
    token: str | None = page.evaluate("sessionStorage.getItem('scoreboard.token')")
    return token


# -- 1. the top 10 ----------------------------------------------------------------------


def test_the_page_shows_the_top_10_in_order(board: Board, watched: Watched) -> None:
    base = board.top_score() + 1000
    seeds = [(f"seed-{i:02d}", f"Seed Player {i}", base + 10 * i) for i in range(1, 13)]
    for user_id, name, score in seeds:
        board.post(user_id, score, name=name)
    expected = sorted(seeds, key=lambda seed: -seed[2])[:10]

    page = watched.page
    open_live(page, board.url)
    expect(rows(page)).to_have_count(10)
    expect(page.locator("#board-rows .badge")).to_have_text([str(r) for r in range(1, 11)])
    expect(page.locator("#board-rows th.name")).to_have_text([name for _, name, _ in expected])
    expect(page.locator("#board-rows td.score")).to_have_text([f"{s:,}" for _, _, s in expected])
    shown = rows(page).evaluate_all("rows => rows.map(r => r.dataset.userId)")
    assert shown == [user_id for user_id, _, _ in expected]
    assert [e["user_id"] for e in board.top()] == shown

    table = page.locator("table#board")
    expect(table.locator("caption")).to_contain_text("Top 10")
    expect(table.locator('thead th[scope="col"]')).to_have_count(4)


# -- 2. live, without a reload ----------------------------------------------------------


def test_a_post_from_outside_changes_the_table_within_a_second(
    board: Board, watched: Watched
) -> None:
    page = watched.page
    open_live(page, board.url)
    same_document = mark_no_reload(page)
    before = board.top()
    assert len(before) >= 3

    started = time.monotonic()
    board.post("rocket", before[0]["score"] + 500, name="Rocket")
    left_ms = max(0.0, 1000 - (time.monotonic() - started) * 1000)
    first = rows(page).first
    expect(first.locator("th.name")).to_have_text("Rocket", timeout=left_ms)
    expect(first.locator("td.score")).to_have_text(f"{before[0]['score'] + 500:,}")
    # A newcomer is marked as such, not silently drawn in.
    expect(first).to_have_class(re.compile(r"\bentered\b"))
    expect(first.locator("td.change")).to_contain_text("New")

    # The user who was third climbs to the top: the row says by how much.
    climber = before[2]
    started = time.monotonic()
    board.post(climber["user_id"], before[0]["score"] + 600 - climber["score"])
    left_ms = max(0.0, 1000 - (time.monotonic() - started) * 1000)
    expect(rows(page).first).to_have_attribute("data-user-id", climber["user_id"], timeout=left_ms)
    moved = row(page, climber["user_id"])
    expect(moved).to_have_class(re.compile(r"\bup\b"))
    expect(moved.locator("td.change")).to_contain_text("▲ 3")  # from 4th (Rocket came in) to 1st
    expect(row(page, "rocket")).to_have_class(re.compile(r"\bdown\b"))
    assert same_document()


# -- 3. names are text --------------------------------------------------------------------


def test_a_name_is_shown_as_text_never_as_markup(board: Board, watched: Watched) -> None:
    page = watched.page
    open_live(page, board.url)
    board.post("mallory", board.top_score() + 100, name=XSS_NAME)

    cell = row(page, "mallory").locator("th.name")
    expect(cell).to_have_count(1)
    assert cell.evaluate("cell => cell.textContent") == XSS_NAME
    assert page.locator("#board img").count() == 0

    # The same name, signed in by pasting a token: shown as text there too.
    page.get_by_label("Paste your token").fill(board.token("mallory", XSS_NAME))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who-name")).to_have_text(XSS_NAME)
    assert page.locator("#who-name").evaluate("node => node.textContent") == XSS_NAME
    assert page.locator("img").count() == 0
    expect(row(page, "mallory")).to_have_class(re.compile(r"\bme\b"))
    page.wait_for_timeout(200)  # a handler that fired would have shown its dialog by now
    assert watched.dialogs == []


# -- 4. a server restart ------------------------------------------------------------------


def test_the_page_reconnects_by_itself_after_a_server_restart(
    browser: Browser, tmp_path: Path
) -> None:
    restarting = start_board(tmp_path / "data", dev_key=False)
    with watched_page(browser, viewport=DESKTOP) as watched:
        # While the server is down the browser logs its failed requests: the stream's, and
        # the board list's that the page asks for when the stream opens again; only those.
        watched.allow(
            r"(net::ERR_\w+|status of 50\d).*@ http://127\.0\.0\.1:\d+/(scores/stream|boards)$")
        try:
            check_reconnect(restarting, watched.page)
        finally:
            stop_board(restarting)


def check_reconnect(restarting: Board, page: Page) -> None:
    restarting.post("before", 10, name="Before")
    open_live(page, restarting.url)
    expect(row(page, "before").locator("td.score")).to_have_text("10")
    # Not on the development key: no token helper.
    expect(page.locator('meta[name="scoreboard-dev-key"]')).to_have_attribute("content", "false")
    expect(page.locator("#dev-helper")).to_be_hidden()
    expect(page.get_by_label("Paste your token")).to_be_visible()
    same_document = mark_no_reload(page)

    restarting.process.kill(signal.SIGKILL)
    connection = page.locator("#connection")
    expect(connection).to_have_attribute("data-state", "reconnecting")
    expect(connection).to_have_text("Reconnecting…")
    expect(row(page, "before")).to_be_visible()  # the last known board stays up

    restarting.process.start()
    expect(connection).to_have_attribute("data-state", "live", timeout=10000)
    expect(connection).to_have_text("Live")
    restarting.post("after", 20, name="After")
    expect(rows(page).first).to_have_attribute("data-user-id", "after", timeout=2000)
    expect(row(page, "before").locator("td.score")).to_have_text("10")
    assert same_document()


# -- 5. the action that scores -----------------------------------------------------------


def test_the_action_button_raises_the_signed_in_users_score(
    board: Board, watched: Watched
) -> None:
    board.post("tess-tester", board.top_score() + 200, name="Tess Tester")
    before = board.user("tess-tester")["score"]

    page = watched.page
    open_live(page, board.url)
    expect(page.locator('meta[name="scoreboard-dev-key"]')).to_have_attribute("content", "true")
    # Keyboard only: Enter in the name field, then Enter on the button that has the focus.
    page.get_by_label("Try it as").fill("Tess Tester")
    page.get_by_label("Try it as").press("Enter")
    expect(page.locator("#who-name")).to_have_text("Tess Tester")
    expect(page.locator("#who-id")).to_have_text("tess-tester")
    token = session_token(page)
    assert token is not None
    assert jwt.decode(token, board.key, algorithms=["HS256"])["sub"] == "tess-tester"

    button = page.get_by_role("button", name="Complete an action")
    expect(button).to_be_focused()
    ring = button.evaluate("b => [getComputedStyle(b).outlineStyle, getComputedStyle(b).outlineWidth]")
    assert ring == ["solid", "3px"]  # the focus is visible
    page.keyboard.press("Enter")
    expect(page.locator("#result")).to_contain_text(f"Your score: {before + 10:,} — rank ")
    after = board.user("tess-tester")
    assert after["score"] == before + 10
    expect(page.locator("#result")).to_have_text(
        f"Your score: {after['score']:,} — rank {after['rank']}")
    mine = row(page, "tess-tester")
    expect(mine.locator("td.score")).to_have_text(f"{before + 10:,}")
    expect(mine).to_have_class(re.compile(r"\bme\b"))

    # A reload keeps the sign-in (sessionStorage); signing out forgets the token.
    page.reload()
    expect(page.locator("#who-id")).to_have_text("tess-tester")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Paste your token")).to_be_visible()
    expect(page.locator("#signed-in")).to_be_hidden()
    assert session_token(page) is None


def test_the_try_it_helper_derives_a_user_id_from_the_name(board: Board, watched: Watched) -> None:
    page = watched.page
    open_live(page, board.url)
    expect(page.get_by_label("Try it as")).to_have_value(re.compile(r"^Guest \d{4}$"))
    derived = page.evaluate(
        "names => names.map(userIdFromName)",
        ["Tess Tester", "  Zoë   O'Brien ", "ada@example.org", "李雷", "--"],
    )
    assert derived[:3] == ["tess-tester", "zoe-obrien", "ada@example.org"]
    assert all(re.fullmatch(r"guest-\d{4}", d) for d in derived[3:]), derived


def test_a_lost_answer_is_retried_with_the_same_key_and_counted_once(
    board: Board, watched: Watched
) -> None:
    board.post("lola", board.top_score() + 50, name="Lola")
    before = board.user("lola")["score"]
    keys: list[str] = []

    def lose_the_first_answer(route: Route) -> None:
        keys.append(route.request.headers["idempotency-key"])
        if len(keys) == 1:
            route.fetch()  # the server applies it, the answer never arrives
            route.abort("connectionreset")
        elif len(keys) == 2:
            route.abort("failed")
        else:
            route.continue_()

    page = watched.page
    watched.allow(r"net::ERR_(CONNECTION_RESET|FAILED) @ http://127\.0\.0\.1:\d+/score$")
    page.route("**/score", lose_the_first_answer)
    open_live(page, board.url)
    page.get_by_label("Paste your token").fill(board.token("lola", "Lola"))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Complete an action").click()

    expect(page.locator("#result")).to_have_text(
        f"Your score: {before + 10:,} — rank 1", timeout=8000)
    assert len(keys) == 3 and len(set(keys)) == 1, keys
    assert board.user("lola")["score"] == before + 10


def test_refusals_are_shown_plainly(board: Board, watched: Watched) -> None:
    answers: list[tuple[int, dict[str, str], str]] = []

    def refuse(route: Route) -> None:
        status, headers, detail = answers.pop(0)
        body = {"type": "about:blank", "title": "refused", "status": status, "detail": detail}
        route.fulfill(status=status, headers=headers, content_type="application/problem+json",
                      body=json.dumps(body))

    page = watched.page
    watched.allow(r"status of 4(22|29|01) .*@ http://127\.0\.0\.1:\d+/score$")
    watched.allow(r"status of 404 .*@ http://127\.0\.0\.1:\d+/boards/default/users/rita$")  # none
    page.route("**/score", refuse)
    open_live(page, board.url)
    page.get_by_label("Paste your token").fill(board.token("rita", "Rita"))
    page.get_by_role("button", name="Sign in").click()
    button = page.get_by_role("button", name="Complete an action")
    result = page.locator("#result")
    expect(result).to_have_text("No score yet — complete an action to get on the board.")

    answers.append((429, {"Retry-After": "2"}, "too many updates"))
    button.click()
    expect(result).to_have_text("Too many actions — try again in 2 s")
    expect(button).to_be_disabled()
    expect(result).to_have_text("Too many actions — try again in 1 s", timeout=2000)
    expect(button).to_be_enabled(timeout=2000)

    answers.append((422, {}, "increment must be at most 5"))
    button.click()
    expect(result).to_have_text("Not counted: increment must be at most 5.")

    answers.append((401, {"WWW-Authenticate": "Bearer"}, "the token has expired"))
    button.click()
    expect(result).to_contain_text("The server refused your token: the token has expired.")
    expect(page.locator("#signed-in")).to_be_hidden()
    assert session_token(page) is None


# -- 6. headers and a clean console ---------------------------------------------------


def test_the_page_has_its_csp_and_a_clean_console(board: Board, watched: Watched) -> None:
    page = watched.page
    response = page.goto(board.url)
    assert response is not None and response.status == 200
    assert response.headers["content-security-policy"] == PAGE_CSP
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(rows(page).first).to_be_visible()
    # Give late stylesheet or script complaints a moment to surface.
    page.wait_for_timeout(300)
    assert watched.unexpected() == []


def test_screenshots_and_no_sideways_scrolling_on_a_phone(board: Board, browser: Browser) -> None:
    if len(board.top()) < 10:
        for i in range(10):
            board.post(f"filler-{i}", 10 + i, name=f"Filler {i}")
    ARTIFACTS.mkdir(exist_ok=True)
    sizes: dict[str, dict[str, Any]] = {
        "page.png": {"viewport": DESKTOP},
        "page-phone.png": {"viewport": PHONE, "device_scale_factor": 2, "is_mobile": True,
                           "has_touch": True},
    }
    for name, options in sizes.items():
        with watched_page(browser, **options) as watched:
            page = watched.page
            open_live(page, board.url)
            expect(rows(page)).to_have_count(10)
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth")
            assert overflow <= 0, f"{name}: the page scrolls sideways by {overflow}px"
            page.screenshot(path=str(ARTIFACTS / name), full_page=True)


# -- 7. the API explorer ------------------------------------------------------------------


def test_the_api_explorer_works_offline_under_its_csp(board: Board, watched: Watched) -> None:
    """/docs draws every operation from the install: no request leaves the server's
    origin (any that tried is aborted and would fail the rendering), and the CSP
    reports nothing."""
    page = watched.page
    elsewhere: list[str] = []

    def only_this_origin(route: Route) -> None:
        if route.request.url.startswith(board.url):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_origin)
    response = page.goto(board.url + "/docs")
    assert response is not None and response.status == 200
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "'unsafe-inline'" not in csp
    expect(page.locator(".opblock-summary-path").first).to_be_visible(timeout=10000)
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert {"/scores", "/score", "/users/{user_id}"} <= {p.replace("\u200b", "") for p in paths}
    page.wait_for_timeout(300)
    assert elsewhere == []
    assert watched.unexpected() == []


# -- 8. boards --------------------------------------------------------------------------


def test_a_person_switches_boards_and_a_link_opens_one(board: Board, watched: Watched) -> None:
    admin = {"Authorization": f"Bearer {admin_token(board)}"}
    made = board.http.put("/admin/boards/laps", headers=admin,
                          json={"title": "Lap times", "sort": "asc", "operator": "best"})
    assert made.status_code in (200, 201), made.text
    for user, ms in (("ann", 61_000), ("ben", 59_500)):
        r = board.http.post("/boards/laps/score", json={"user_id": user, "score": ms},
                            headers={"Authorization": f"Bearer {board.token(user)}"})
        assert r.status_code == 200, r.text

    page = watched.page
    open_live(page, board.url)
    select = page.get_by_label("Board", exact=True)
    expect(select).to_have_value("default")
    select.select_option("laps")
    assert page.url.endswith("/?board=laps")
    expect(page.locator("#board-title")).to_have_text("Top 10 — Lap times")
    expect(page.locator("#board-order")).to_have_text("(lowest first)")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(rows(page)).to_have_count(2)
    assert rows(page).evaluate_all("rows => rows.map(r => r.dataset.userId)") == ["ben", "ann"]

    # Live on the board shown: a better lap moves ann up.
    board.http.post("/boards/laps/score", json={"user_id": "ann", "score": 58_000},
                    headers={"Authorization": f"Bearer {board.token('ann')}"})
    expect(rows(page).first).to_have_attribute("data-user-id", "ann")

    page.go_back()
    expect(select).to_have_value("default")
    expect(page.locator("#board-title")).to_have_text("Top 10 — Scoreboard")

    # A link names the board: opened fresh, it shows that board.
    other = watched.context.new_page()
    other.goto(board.url + "/?board=laps")
    expect(other.locator("#board-title")).to_have_text("Top 10 — Lap times")
    expect(other.locator("#board-rows tr[data-user-id]")).to_have_count(2)
    missing = watched.context.new_page()
    missing.goto(board.url + "/?board=nope")
    expect(missing.locator("#board-empty")).to_have_text("There is no such board.")


def admin_token(board: Board) -> str:
    now = int(time.time())
    return jwt.encode({"sub": "root", "iat": now, "exp": now + 600,
                       "scope": "scoreboard:admin"}, board.key, algorithm="HS256")


# -- 9. seasons ---------------------------------------------------------------------------

COUNTDOWN = re.compile(r"^Next reset in (?:(\d+) d )?(\d\d):(\d\d):(\d\d)$")


def admin_headers(board: Board) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_token(board)}"}


def make_board(board: Board, board_id: str, **definition: str) -> dict[str, Any]:
    made = board.http.put(f"/admin/boards/{board_id}", headers=admin_headers(board),
                          json={"title": board_id.title(), **definition})
    assert made.status_code in (200, 201), made.text
    result: dict[str, Any] = made.json()
    return result


def add(board: Board, board_id: str, user_id: str, increment: int) -> None:
    r = board.http.post(f"/boards/{board_id}/score",
                        json={"user_id": user_id, "increment": increment},
                        headers={"Authorization": f"Bearer {board.token(user_id)}"})
    assert r.status_code == 200, r.text


def reset(board: Board, board_id: str) -> dict[str, Any]:
    r = board.http.post(f"/admin/boards/{board_id}/reset", headers=admin_headers(board))
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def shown_ids(page: Page) -> list[str]:
    ids: list[str] = rows(page).evaluate_all("rows => rows.map(r => r.dataset.userId)")
    return ids


def test_a_board_with_a_schedule_counts_down_to_its_next_reset(
    board: Board, watched: Watched
) -> None:
    due = make_board(board, "weekly-cup", reset="week", timezone="Europe/Berlin")["next_reset_at"]
    assert due is not None
    page = watched.page
    open_live(page, board.url)
    countdown = page.locator("#next-reset")
    expect(countdown).to_be_hidden()  # the default board never resets

    page.get_by_label("Board", exact=True).select_option("weekly-cup")
    expect(countdown).to_have_text(COUNTDOWN)
    expect(page.locator("#board-season")).to_have_text("Season 1")
    first = countdown.inner_text()
    match = COUNTDOWN.match(first)
    assert match is not None, first
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    shown = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    left = datetime.fromisoformat(due.replace("Z", "+00:00")).timestamp() - time.time()
    assert abs(shown - left) <= 5, (first, left)
    expect(countdown).not_to_have_text(first)  # it ticks

    page.go_back()
    expect(page.locator("#board-title")).to_have_text("Top 10 — Scoreboard")
    expect(countdown).to_be_hidden()


def test_a_reset_shows_the_new_season_live_and_the_closed_one_opens(
    board: Board, watched: Watched
) -> None:
    make_board(board, "weekly", reset="week")
    for user, points in (("ida", 30), ("jon", 50), ("kim", 40)):
        add(board, "weekly", user, points)

    page = watched.page
    open_live(page, board.url + "/?board=weekly")
    expect(rows(page)).to_have_count(3)
    seasons = page.get_by_label("Season", exact=True)
    expect(seasons).to_be_hidden()  # nothing closed yet
    same_document = mark_no_reload(page)

    assert reset(board, "weekly")["season"] == 2
    expect(page.locator("#board-season")).to_have_text("Season 2")
    expect(rows(page)).to_have_count(0)
    expect(page.locator("#board-empty")).to_have_text("No scores yet — be the first.")
    expect(page.locator("#next-reset")).to_have_text(COUNTDOWN)
    expect(seasons).to_be_visible()
    expect(seasons).to_have_value("")
    expect(seasons.locator("option")).to_have_text(
        ["Live — season 2", re.compile(r"^Season 1 — ended \S")])
    add(board, "weekly", "lea", 7)  # the new season, live
    expect(rows(page)).to_have_count(1)
    expect(row(page, "lea").locator("td.score")).to_have_text("7")

    seasons.select_option("1")
    assert page.url.endswith("/?board=weekly&season=1")
    expect(page.locator("#board-season")).to_have_text("Season 1 · final standings")
    expect(rows(page)).to_have_count(3)
    expect(page.locator("#board-rows td.score")).to_have_text(["50", "40", "30"])
    assert shown_ids(page) == ["jon", "kim", "ida"]
    expect(page.locator("#next-reset")).to_be_hidden()
    expect(page.locator("#board")).not_to_have_class(re.compile(r"\bstale\b"))

    # News from the live board reaches the page, and leaves the final standings be.
    seen = page.evaluate("live.version")
    add(board, "weekly", "lea", 100)
    page.wait_for_function("seen => live.version > seen", arg=seen)
    assert shown_ids(page) == ["jon", "kim", "ida"]

    page.go_back()
    assert page.url.endswith("/?board=weekly")
    expect(seasons).to_have_value("")
    expect(page.locator("#board-season")).to_have_text("Season 2")
    expect(rows(page)).to_have_count(1)
    expect(row(page, "lea").locator("td.score")).to_have_text("107")
    page.go_forward()
    expect(seasons).to_have_value("1")
    expect(page.locator("#board-rows td.score")).to_have_text(["50", "40", "30"])
    assert same_document()


def test_a_link_opens_a_season(board: Board, watched: Watched) -> None:
    make_board(board, "monthly", reset="month")
    add(board, "monthly", "mo", 3)
    add(board, "monthly", "nia", 9)
    reset(board, "monthly")
    add(board, "monthly", "ola", 1)

    page = watched.page
    watched.allow(r"status of 404 .*@ http://127\.0\.0\.1:\d+/boards/monthly/seasons/9/scores")
    page.goto(board.url + "/?board=monthly&season=1")
    seasons = page.get_by_label("Season", exact=True)
    expect(seasons).to_have_value("1")
    expect(page.locator("#board-title")).to_have_text("Top 10 — Monthly")
    expect(page.locator("#board-season")).to_have_text("Season 1 · final standings")
    expect(page.locator("#board-rows td.score")).to_have_text(["9", "3"])
    assert shown_ids(page) == ["nia", "mo"]

    # The live board is one choice away, in the URL too.
    seasons.select_option("")
    assert page.url.endswith("/?board=monthly")
    expect(page.locator("#board-rows td.score")).to_have_text(["1"])
    expect(row(page, "ola")).to_be_visible()

    # The current season named is the live board; one that has not begun is said so.
    page.goto(board.url + "/?board=monthly&season=2")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    expect(seasons).to_have_value("")
    expect(row(page, "ola")).to_be_visible()
    assert page.url.endswith("/?board=monthly")
    page.goto(board.url + "/?board=monthly&season=9")
    expect(page.locator("#board-empty")).to_have_text("There is no such season.")
    expect(rows(page)).to_have_count(0)


# -- your rank ----------------------------------------------------------------------------


def test_your_rank_card_moves_when_another_user_passes(board: Board, watched: Watched) -> None:
    top = board.top_score()
    board.post("rita-runner", top + 100, name="Rita Runner")
    board.post("ozzie-overtaker", top + 50, name="Ozzie")
    page = watched.page
    open_live(page, board.url)
    page.get_by_label("Paste your token").fill(board.token("rita-runner", "Rita Runner"))
    page.get_by_role("button", name="Sign in").click()
    card = page.locator("#me-card")
    expect(card).to_be_visible()
    expect(page.locator("#me-rank")).to_have_text("#1")
    expect(page.locator("#me-score")).to_have_text(f"{top + 100:,} points")
    expect(page.locator("#me-below")).to_contain_text("#2 Ozzie")
    expect(page.locator("#me-above")).to_be_empty()

    board.post("ozzie-overtaker", 100, name="Ozzie")  # from outside: Ozzie passes Rita
    expect(page.locator("#me-rank")).to_have_text("#2")
    expect(page.locator("#me-news")).to_have_text("Ozzie passed you")
    expect(page.locator("#me-above")).to_contain_text(f"#1 Ozzie{top + 150:,}")
    expect(page.locator("#me-self")).to_contain_text("#2 You")

    board.post("rita-runner", 100, name="Rita Runner")  # and back on top
    expect(page.locator("#me-rank")).to_have_text("#1")
    expect(page.locator("#me-news")).to_have_text("You moved up to #1")

    page.get_by_role("button", name="Sign out").click()
    expect(card).to_be_hidden()
