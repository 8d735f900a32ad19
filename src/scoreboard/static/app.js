"use strict";

// The scoreboard page: the live top 10 from /scores/stream, a board's past seasons and
// the time to its next reset, and, signed in, the action that scores and the user's own
// rank, live from /scores/ws. Everything the server sends is data: the DOM is built
// with textContent only, never from markup.

const DEFAULT_BOARD = "default";
const BOARD_ID = /^[a-z0-9_-]{1,64}$/;
const SEASON_NUMBER = /^[1-9][0-9]{0,8}$/;
const TOKEN_KEY = "scoreboard.token";
const ACTION_KIND = "demo";
const MAX_ACTION_WAIT_MS = 10000;
const NETWORK_RETRIES = 3;
const REQUEST_TIMEOUT_MS = 10000;
const HIGHLIGHT_MS = 5000;
const MAX_BACKOFF_MS = 30000;
const USER_ID = /^[A-Za-z0-9_.:@|-]{1,128}$/;
// An hourly board closes 8,760 seasons a year: the picker lists the newest only (a link
// still opens any of them).
const MAX_SEASONS_LISTED = 100;
// At a scheduled reset every page open on the board hears of it at once; their asks for
// the board's new schedule are spread over this long.
const RESET_SPREAD_MS = 3000;
// The server resets within 2 s of the scheduled time; a page that did not hear of it by
// then asks, backing off up to MAX_BACKOFF_MS.
const RESET_CHECK_MS = 3000;

const numbers = new Intl.NumberFormat();
const moments = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
const dates = new Intl.DateTimeFormat(undefined, { dateStyle: "medium" });
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");
const el = (id) => document.getElementById(id);

// The table as drawn: the live board's top 10, or a closed season's final standings.
const board = { rows: new Map(), painted: false, empty: null };
// What is shown: the URL names the board and, for a closed season, the season
// (?board=id&season=n), so a link opens it. `season` is null for the live board.
const view = { ...viewInUrl(), boards: new Map(), seasons: [], shows: 0, boardLoads: 0,
  seasonLoads: 0 };
// The board's stream, kept open while a closed season is shown: its newest snapshot
// waits in `entries` until the live board is chosen again.
const live = { source: null, timer: 0, failures: 0, opened: false, version: -1, entries: null };
const countdown = { timer: 0, refresh: 0, checks: 0 };
const session = {
  token: null,
  userId: null,
  busy: false,
  waitUntil: 0,
  tick: 0,
  expiry: 0,
  showsStanding: false, // the message line shows the user's score, so the board may refresh it
};
// The signed-in user's own rank on the board shown, pushed over a WebSocket of its own.
const me = { socket: null, board: null, last: null, timer: 0, failures: 0 };
let messages = 0; // counts say() calls, so a slow answer cannot overwrite a newer message

/* ---------------------------------------------------------------- connection */

const CONNECTION_TEXT = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
};

function setConnection(state) {
  const box = el("connection");
  if (box.dataset.state === state) return;
  box.dataset.state = state;
  el("connection-text").textContent = CONNECTION_TEXT[state];
  markStale();
}

// While cut off, the live rows stay but are marked as possibly out of date; a closed
// season's standings are final, so never stale.
function markStale() {
  const cutOff = el("connection").dataset.state !== "live";
  const stale = cutOff && board.painted && view.season === null;
  el("board").classList.toggle("stale", stale);
  el("board-note").textContent = stale ? "(last known — reconnecting)" : "";
}

function viewInUrl() {
  const params = new URLSearchParams(window.location.search);
  const id = params.get("board");
  const season = params.get("season");
  return {
    id: id && BOARD_ID.test(id) ? id : DEFAULT_BOARD,
    season: season && SEASON_NUMBER.test(season) ? Number(season) : null,
  };
}

function viewUrl(id, season) {
  const params = new URLSearchParams();
  if (id !== DEFAULT_BOARD) params.set("board", id);
  if (season !== null) params.set("season", String(season));
  const query = params.toString();
  return query ? `/?${query}` : "/";
}

function streamUrl() {
  return view.id === DEFAULT_BOARD ? "/scores/stream" : `/boards/${view.id}/stream`;
}

function connect() {
  clearTimeout(live.timer);
  if (live.source) live.source.close();
  const source = new EventSource(streamUrl());
  live.source = source;
  source.addEventListener("open", () => {
    live.failures = 0;
    setConnection("live");
    // A reset may have passed while cut off, and a stream that opens does not announce
    // the season it starts in: ask for the board again.
    if (live.opened) loadBoards();
    live.opened = true;
  });
  source.addEventListener("scores", onScores);
  source.addEventListener("season", onSeason);
  source.addEventListener("error", () => onStreamError(source));
}

function onStreamError(source) {
  if (source !== live.source) return;
  setConnection("reconnecting");
  // The browser retries a dropped stream by itself, but gives up for good on an HTTP
  // error answer (a 503 while the server starts, a 429 when it is full): then we retry,
  // backing off with jitter so that a crowd of pages does not come back all at once.
  if (source.readyState === EventSource.CLOSED) {
    live.failures += 1;
    const ceiling = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** live.failures);
    live.timer = setTimeout(connect, ceiling / 2 + Math.random() * (ceiling / 2));
  }
}

function onScores(event) {
  const version = Number(event.lastEventId);
  // Versions only grow: an older snapshot would undo newer news.
  if (Number.isFinite(version) && version < live.version) return;
  let entries;
  try {
    entries = JSON.parse(event.data);
  } catch {
    console.warn("scoreboard: an unreadable snapshot was skipped");
    return;
  }
  if (!Array.isArray(entries)) return;
  if (Number.isFinite(version)) live.version = version;
  live.entries = entries;
  setConnection("live");
  if (view.season === null) renderBoard(entries);
}

// A reset: the board's new, empty standings follow this event on the stream.
function onSeason(event) {
  let news;
  try {
    news = JSON.parse(event.data);
  } catch {
    return;
  }
  if (news === null || typeof news !== "object" || news.board !== view.id) return;
  if (!Number.isInteger(news.season)) return;
  const shown = view.boards.get(view.id);
  if (shown && news.season <= shown.season) return; // heard already
  if (shown) closeSeason(shown, news);
  live.entries = null; // the last season's: the new one's come next
  if (view.season === null) {
    clearBoard(); // the new season's first snapshot is a baseline, not rows that all left
    if (session.userId && session.showsStanding) showStanding();
  }
  showBoardTitle();
  showSeasonPicker();
  el("announce").textContent = `Season ${news.season} has begun.`;
  // The board's next reset comes with the board.
  clearTimeout(countdown.refresh);
  countdown.refresh = setTimeout(loadBoards, Math.random() * RESET_SPREAD_MS);
}

// The season that ended joins the picker at once, from what the page knows, so that a
// crowd of pages does not ask at the same moment; when that does not add up, the list
// is asked for.
function closeSeason(shown, news) {
  const [newest, ...older] = view.seasons;
  const current = newest || { season: shown.season, started_at: shown.season_started_at };
  const known = newest ? newest.ended_at === null : shown.season === 1;
  const follows = current.season === shown.season && news.season === shown.season + 1;
  shown.season = news.season;
  shown.season_started_at = news.started_at;
  if (!known || !follows) {
    loadSeasons();
    return;
  }
  view.seasons = [
    { season: news.season, started_at: news.started_at, ended_at: null },
    { ...current, ended_at: news.started_at },
    ...older,
  ];
}

/* -------------------------------------------------------------------- boards */

async function loadBoards() {
  const asked = ++view.boardLoads;
  let listed;
  try {
    const response = await fetch("/boards", { cache: "no-cache" });
    if (!response.ok) return;
    listed = await response.json();
  } catch {
    return; // the default board still works; the list comes with the next visit
  }
  if (asked !== view.boardLoads || !Array.isArray(listed)) return; // a newer ask is out
  const before = view.boards.get(view.id);
  view.boards = new Map(listed.map((b) => [b.id, b]));
  const after = view.boards.get(view.id);
  if (before && after && after.season < before.season) {
    // Asked before the reset this page heard of: the season it knows is the newer.
    after.season = before.season;
    after.season_started_at = before.season_started_at;
  }
  const select = el("board-select");
  select.replaceChildren(...[...view.boards.values()].map((b) => option(b.id, b.title)));
  if (!after) select.append(option(view.id, `${view.id} (no such board)`));
  select.value = view.id;
  if (before && after && after.season > before.season) {
    // A reset this page did not hear of (it was cut off): the live rows are the new
    // season's, drawn afresh.
    loadSeasons();
    if (view.season === null) {
      clearBoard();
      if (live.entries) renderBoard(live.entries);
    }
  }
  showBoardTitle();
  showSeasonPicker();
  showCountdown();
}

function option(value, text) {
  const node = document.createElement("option");
  node.value = value;
  node.textContent = text;
  return node;
}

function showBoardTitle() {
  const shown = view.boards.get(view.id);
  el("board-title").textContent = shown ? `Top 10 — ${shown.title}` : "Top 10";
  el("board-order").textContent = shown && shown.sort === "asc" ? "(lowest first)" : "";
  const past = view.season !== null;
  const season = el("board-season");
  season.dataset.past = String(past);
  if (past) season.textContent = `Season ${view.season} · final standings`;
  else if (shown && (shown.season > 1 || shown.reset !== "never")) {
    season.textContent = `Season ${shown.season}`;
  } else season.textContent = "";
  if (!shown) document.title = "Scoreboard — live top 10";
  else if (past) document.title = `${shown.title}, season ${view.season} — final standings`;
  else document.title = `${shown.title} — live top 10`;
  if (view.boards.size && !shown) {
    live.source?.close();
    clearBoard();
    board.empty.firstElementChild.textContent = "There is no such board.";
  }
}

function switchView(id, season, remember) {
  if (id === view.id && season === view.season) return;
  const otherBoard = id !== view.id;
  view.id = id;
  view.season = season;
  if (remember) window.history.pushState(null, "", viewUrl(id, season));
  el("board-select").value = id;
  if (otherBoard) {
    view.seasons = [];
    live.version = -1;
    live.entries = null;
    live.opened = false;
    setConnection("connecting");
    if (view.boards.has(id) || !view.boards.size) connect();
    loadSeasons();
  }
  showView();
  if (session.userId && season === null) showStanding();
  if (otherBoard) followMe();
}

// Draws what the view names: the live board from the stream's newest snapshot, or a
// closed season's final standings, asked for.
function showView() {
  const shown = view.boards.get(view.id);
  if (view.season !== null && shown && view.season === shown.season) {
    view.season = null; // the season named is still the current one: the live board
    window.history.replaceState(null, "", viewUrl(view.id, null));
  }
  const shows = ++view.shows;
  clearBoard();
  showBoardTitle();
  showSeasonPicker();
  showCountdown();
  if (view.boards.size && !shown) return; // there is no such board
  if (view.season === null) {
    if (live.entries) renderBoard(live.entries);
    markStale();
  } else {
    loadFinal(view.id, view.season, shows);
  }
}

function clearBoard() {
  for (const row of board.rows.values()) {
    clearTimeout(row.timer);
    row.tr.remove();
  }
  board.rows.clear();
  board.painted = false;
  showEmpty(true);
  board.empty.firstElementChild.textContent = "Waiting for scores…";
  markStale();
}

/* ------------------------------------------------------------------- seasons */

async function loadSeasons() {
  const id = view.id;
  const asked = ++view.seasonLoads;
  const shown = view.boards.get(id);
  if (!shown || shown.season === 1) {
    view.seasons = []; // nothing closed yet: nothing to ask
    return;
  }
  let listed;
  try {
    const response = await fetch(`/boards/${id}/seasons`, { cache: "no-cache" });
    if (!response.ok) return;
    listed = await response.json();
  } catch {
    return; // the live board works without; the picker waits for the next reset
  }
  if (asked !== view.seasonLoads || id !== view.id || !Array.isArray(listed)) return;
  view.seasons = listed;
  showSeasonPicker();
}

function showSeasonPicker() {
  const shown = view.boards.get(view.id);
  const current = shown ? shown.season : null;
  const closed = view.seasons
    .filter((s) => s.ended_at !== null && (current === null || s.season < current))
    .slice(0, MAX_SEASONS_LISTED);
  const choices = [option("", current === null ? "Live" : `Live — season ${current}`)];
  // The day a season ended tells seasons apart, unless the board resets every hour.
  const format = shown && shown.reset === "hour" ? moments : dates;
  for (const s of closed) {
    const ended = moment(s.ended_at, format);
    choices.push(option(String(s.season), `Season ${s.season} — ended ${ended}`));
  }
  if (view.season !== null && !closed.some((s) => s.season === view.season)) {
    choices.push(option(String(view.season), `Season ${view.season}`));
  }
  const select = el("season-select");
  select.replaceChildren(...choices);
  select.value = view.season === null ? "" : String(view.season);
  // A board that never closed a season has nothing to pick.
  el("season-picker").hidden = choices.length === 1;
}

function moment(text, format) {
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? format.format(ms) : String(text);
}

// A closed season's standings never change; the browser may keep them.
async function loadFinal(id, season, shows) {
  board.empty.firstElementChild.textContent = `Loading season ${season}…`;
  let entries = null;
  let failure;
  try {
    const response = await fetch(`/boards/${id}/seasons/${season}/scores?limit=10`,
      { signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
    if (response.ok) entries = await response.json();
    else if (response.status === 404) failure = "There is no such season.";
    else failure = `Season ${season} could not be read: ${(await readProblem(response)).detail}`;
  } catch {
    failure = `Could not reach the server for season ${season}. Choose it again in a moment.`;
  }
  if (shows !== view.shows) return; // another view was chosen meanwhile
  if (Array.isArray(entries)) renderBoard(entries);
  else board.empty.firstElementChild.textContent = failure || "That season could not be read.";
}

/* ----------------------------------------------------------------- countdown */

function showCountdown() {
  clearTimeout(countdown.timer);
  const shown = view.boards.get(view.id);
  const due = shown && shown.next_reset_at ? Date.parse(shown.next_reset_at) : NaN;
  const box = el("next-reset");
  // The next reset is the live board's news; a closed season's standings are final.
  box.hidden = !Number.isFinite(due) || view.season !== null;
  if (box.hidden) return;
  box.title = `The board resets ${moments.format(due)}`;
  tickCountdown(due);
}

function tickCountdown(due) {
  const left = due - Date.now();
  if (left <= 0) {
    el("next-reset").textContent = "Resetting now…";
    // The season event brings the news; this is for a page that missed it.
    countdown.checks += 1;
    const wait = Math.min(MAX_BACKOFF_MS, RESET_CHECK_MS * 2 ** (countdown.checks - 1));
    countdown.timer = setTimeout(loadBoards, wait + Math.random() * RESET_SPREAD_MS);
    return;
  }
  countdown.checks = 0;
  el("next-reset").textContent = `Next reset in ${duration(left)}`;
  countdown.timer = setTimeout(() => tickCountdown(due), left % 1000 || 1000);
}

// "2 d 03:14:07", or "03:14:07" within a day.
function duration(ms) {
  const total = Math.ceil(ms / 1000);
  const days = Math.floor(total / 86400);
  const clock = [Math.floor(total / 3600) % 24, Math.floor(total / 60) % 60, total % 60]
    .map((n) => String(n).padStart(2, "0"))
    .join(":");
  return days ? `${days} d ${clock}` : clock;
}

/* --------------------------------------------------------------------- board */

function renderBoard(entries) {
  const body = el("board-rows");
  const before = rowTops();
  const keep = new Set();

  showEmpty(entries.length === 0);
  entries.forEach((entry, index) => {
    keep.add(entry.user_id);
    let row = board.rows.get(entry.user_id);
    if (!row) {
      row = createRow(entry.user_id);
      board.rows.set(entry.user_id, row);
    }
    updateRow(row, entry);
    const current = body.children[index];
    if (current !== row.tr) body.insertBefore(row.tr, current || null);
  });
  // Rows that left the top 10 were pushed past the end by the loop above.
  for (const [userId, row] of board.rows) {
    if (keep.has(userId)) continue;
    clearTimeout(row.timer);
    row.tr.remove();
    board.rows.delete(userId);
  }
  slideRows(before);
  board.painted = true;
  refreshStanding();
}

function showEmpty(empty) {
  // Kept by reference: once out of the table, it cannot be found by id.
  board.empty ||= el("board-empty");
  board.empty.firstElementChild.textContent =
    view.season === null ? "No scores yet — be the first." : "Nobody scored in this season.";
  if (empty) el("board-rows").append(board.empty);
  else board.empty.remove();
}

function createRow(userId) {
  const tr = document.createElement("tr");
  tr.dataset.userId = userId;
  const rank = cell("td", "rank");
  const badge = document.createElement("span");
  badge.className = "badge";
  const you = document.createElement("span");
  you.className = "visually-hidden";
  rank.append(badge, you);
  const name = cell("th", "name");
  name.scope = "row";
  const score = cell("td", "score");
  const change = cell("td", "change");
  tr.append(rank, name, score, change);
  return { tr, badge, you, name, score, change, entry: null, timer: 0 };
}

function cell(tag, className) {
  const node = document.createElement(tag);
  node.className = className;
  return node;
}

function updateRow(row, entry) {
  const previous = row.entry;
  row.entry = entry;
  row.tr.dataset.rank = String(entry.rank);
  row.badge.textContent = String(entry.rank);
  row.name.textContent = entry.name || entry.user_id;
  row.score.textContent = numbers.format(entry.score);
  markMine(row);
  if (!board.painted) return; // the first snapshot is the baseline, not news
  if (!previous) {
    showMove(row, "entered", "New", "new in the top 10");
  } else if (entry.rank !== previous.rank) {
    const up = entry.rank < previous.rank;
    const places = Math.abs(entry.rank - previous.rank);
    const spoken = `${up ? "up" : "down"} ${places} ${places === 1 ? "place" : "places"}`;
    showMove(row, up ? "up" : "down", `${up ? "▲" : "▼"} ${places}`, spoken);
  }
  // Only rows that scored flash; rows merely pushed down keep their arrow, so the
  // event itself stands out.
  if (!previous || entry.score !== previous.score) {
    restartAnimation(row.tr, "flash");
    fadeLater(row);
  }
}

function markMine(row) {
  const mine = row.entry !== null && row.entry.user_id === session.userId;
  row.tr.classList.toggle("me", mine);
  row.you.textContent = mine ? " (you)" : "";
}

function showMove(row, kind, symbol, spoken) {
  const shown = document.createElement("span");
  shown.setAttribute("aria-hidden", "true");
  shown.textContent = symbol;
  const said = document.createElement("span");
  said.className = "visually-hidden";
  said.textContent = spoken;
  row.change.replaceChildren(shown, said);
  row.tr.classList.remove("up", "down", "entered");
  row.tr.classList.add(kind);
  fadeLater(row);
}

function fadeLater(row) {
  clearTimeout(row.timer);
  row.timer = setTimeout(() => fadeHighlight(row), HIGHLIGHT_MS);
}

function fadeHighlight(row) {
  row.tr.classList.remove("up", "down", "entered", "flash");
  row.change.replaceChildren();
}

function restartAnimation(node, className) {
  node.classList.remove(className);
  void node.offsetWidth; // a reflow, so that the same animation plays again
  node.classList.add(className);
}

function rowTops() {
  const tops = new Map();
  for (const [userId, row] of board.rows) tops.set(userId, row.tr.getBoundingClientRect().top);
  return tops;
}

// Rows glide from their old place to the new one, so a move can be followed by eye.
function slideRows(before) {
  if (!board.painted || reducedMotion.matches) return;
  for (const [userId, row] of board.rows) {
    const top = before.get(userId);
    if (top === undefined) continue;
    const distance = top - row.tr.getBoundingClientRect().top;
    if (Math.abs(distance) < 1) continue;
    row.tr.animate(
      [{ transform: `translateY(${distance}px)` }, { transform: "translateY(0)" }],
      { duration: 450, easing: "cubic-bezier(0.2, 0.7, 0.3, 1)" },
    );
  }
}

/* ------------------------------------------------------------------- tokens */

function base64UrlDecode(text) {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64.padEnd(Math.ceil(base64.length / 4) * 4, "=");
  const bytes = Uint8Array.from(atob(padded), (ch) => ch.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
}

// Only to show who is signed in and which user_id to post: the server checks the token.
function readToken(token) {
  const parts = token.split(".");
  if (parts.length !== 3) {
    throw new Error("That is not a token: a JWT has three parts separated by dots.");
  }
  let claims;
  try {
    claims = JSON.parse(base64UrlDecode(parts[1]));
  } catch {
    throw new Error("That token could not be read.");
  }
  if (claims === null || typeof claims !== "object") {
    throw new Error("That token could not be read.");
  }
  if (typeof claims.sub !== "string" || !USER_ID.test(claims.sub)) {
    throw new Error("That token does not name a valid user.");
  }
  // The server allows 30 s of clock difference; so do we.
  if (typeof claims.exp === "number" && (claims.exp + 30) * 1000 < Date.now()) {
    throw new Error("That token has expired.");
  }
  const named = typeof claims.name === "string" && claims.name.trim();
  return {
    sub: claims.sub,
    name: named ? claims.name.trim() : claims.sub,
    exp: typeof claims.exp === "number" ? claims.exp : null,
  };
}

function signIn(token) {
  const who = readToken(token); // throws a message meant for the user
  session.token = token;
  session.userId = who.sub;
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // Storage is off: the sign-in lasts as long as this page.
  }
  el("who-name").textContent = who.name;
  el("who-id").textContent = who.sub;
  el("signed-out").hidden = true;
  el("signed-in").hidden = false;
  watchExpiry(who.exp);
  for (const row of board.rows.values()) markMine(row);
  updateActButton();
  showStanding();
  openMe();
}

function signOut(message) {
  session.token = null;
  session.userId = null;
  clearTimeout(session.expiry);
  stopCooldown();
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // Nothing was stored.
  }
  el("signed-in").hidden = true;
  el("signed-out").hidden = false;
  for (const row of board.rows.values()) markMine(row);
  closeMe();
  say(message || "Signed out.", "info");
}

function watchExpiry(exp) {
  clearTimeout(session.expiry);
  if (exp === null) return;
  const left = (exp + 30) * 1000 - Date.now();
  if (left < 2 ** 31) {
    session.expiry = setTimeout(() => signOut("Your token expired — sign in again."), left);
  }
}

// The signed-in user's standing on the live board: from its rows when they are shown
// and the user is on them, else asked for.
async function showStanding() {
  const userId = session.userId;
  const row = view.season === null && board.rows.get(userId);
  if (row) {
    sayStanding(row.entry, "info");
    return;
  }
  const asked = messages;
  const path = `/boards/${view.id}/users/${encodeURIComponent(userId)}`;
  try {
    const response = await fetch(path, { cache: "no-store" });
    if (session.userId !== userId || messages !== asked) return;
    if (response.status === 404) {
      say("No score yet — complete an action to get on the board.", "info");
    } else if (response.ok) {
      sayStanding(await response.json(), "info");
    }
  } catch {
    // Only a courtesy: the action works without it.
  }
}

function standing(score, rank) {
  return `Your score: ${numbers.format(score)} — rank ${numbers.format(rank)}`;
}

function sayStanding(user, tone, announce = true) {
  say(standing(user.score, user.rank), tone, announce);
  session.showsStanding = true;
}

// Others' scores move the user's rank too; keep the line true, without announcing it.
function refreshStanding() {
  const row = session.showsStanding && view.season === null && board.rows.get(session.userId);
  if (!row) return;
  const text = standing(row.entry.score, row.entry.rank);
  if (el("result").textContent !== text) sayStanding(row.entry, el("result").dataset.tone, false);
}

/* ------------------------------------------------------------------ your rank */

function openMe() {
  closeMe();
  if (!session.token) return;
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(
    `${scheme}//${window.location.host}/scores/ws?boards=${encodeURIComponent(view.id)}`);
  me.socket = socket;
  me.board = view.id;
  const token = session.token;
  socket.addEventListener("open", () => {
    me.failures = 0;
    socket.send(JSON.stringify({ type: "auth", token }));
  });
  socket.addEventListener("message", (event) => {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return;
    }
    if (message.type === "me" && message.board === me.board) showMe(message);
  });
  socket.addEventListener("close", (event) => {
    if (me.socket !== socket) return; // replaced or closed on purpose
    me.socket = null;
    if (event.code === 4401 || !session.token) return; // the token is refused: no retry
    me.failures += 1;
    const wait = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(me.failures, 6));
    me.timer = setTimeout(openMe, wait * (0.5 + Math.random() / 2));
  });
}

function closeMe() {
  clearTimeout(me.timer);
  const socket = me.socket;
  me.socket = null;
  me.last = null;
  if (socket) socket.close();
  el("me-card").hidden = true;
  el("me-news").textContent = "";
}

// Another board shown: follow the user there (the same socket, a new subscription).
function followMe() {
  if (!me.socket || me.socket.readyState !== WebSocket.OPEN) {
    if (session.token) openMe();
    return;
  }
  me.board = view.id;
  me.last = null;
  el("me-news").textContent = "";
  me.socket.send(JSON.stringify({ type: "subscribe", boards: [view.id] }));
}

function showMe(message) {
  const before = me.last;
  me.last = message;
  el("me-card").hidden = false;
  const shown = view.boards.get(message.board);
  el("me-board").textContent = shown ? `on ${shown.title}` : "";
  if (message.rank === null) {
    el("me-rank").textContent = "Not on this board yet";
    el("me-score").textContent = "";
  } else {
    el("me-rank").textContent = `#${numbers.format(message.rank)}`;
    el("me-score").textContent = `${numbers.format(message.score)} points`;
  }
  neighbour("me-above", message.above);
  neighbour("me-self", message.rank === null ? null
    : { rank: message.rank, name: "You", score: message.score });
  neighbour("me-below", message.below);
  const news = el("me-news");
  if (before && before.rank !== null && message.rank !== null && message.rank !== before.rank) {
    const passedBy = message.rank > before.rank && message.above;
    news.textContent = passedBy ? `${message.above.name} passed you`
      : `You moved ${message.rank < before.rank ? "up" : "down"} to #${numbers.format(message.rank)}`;
    news.dataset.tone = message.rank < before.rank ? "up" : "down";
  }
}

function neighbour(id, entry) {
  const item = el(id);
  item.replaceChildren();
  if (!entry) return;
  const who = document.createElement("span");
  who.textContent = `#${numbers.format(entry.rank)} ${entry.name}`;
  const score = document.createElement("span");
  score.textContent = numbers.format(entry.score);
  item.append(who, score);
}

function onTokenSubmit(event) {
  event.preventDefault();
  const input = el("token-input");
  const token = input.value.trim().replace(/^bearer\s+/i, "");
  try {
    signIn(token);
  } catch (error) {
    input.setAttribute("aria-invalid", "true");
    say(error.message, "error");
    input.focus();
    return;
  }
  input.value = "";
  input.removeAttribute("aria-invalid");
  el("act").focus();
}

/* ------------------------------------------------------------- dev helper */

function randomDigits() {
  return String(1000 + (crypto.getRandomValues(new Uint16Array(1))[0] % 9000));
}

function userIdFromName(name) {
  const id = name
    .normalize("NFKD")
    .replace(/[\u0300-\u036f]/g, "") // "Zoë" becomes "zoe", not "zo"
    .toLowerCase()
    .trim()
    .replace(/\s+/g, "-")
    .replace(/[^a-z0-9_.:@|-]/g, "")
    .replace(/-{2,}/g, "-")
    .replace(/^-|-$/g, "")
    .slice(0, 128);
  return id || `guest-${randomDigits()}`;
}

async function onDevSubmit(event) {
  event.preventDefault();
  const input = el("dev-name");
  const name = Array.from(input.value.trim()).slice(0, 64).join("") || `Guest ${randomDigits()}`;
  const button = el("dev-go");
  button.disabled = true;
  say("Getting a token…", "info");
  try {
    const response = await fetch("/dev/token", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user_id: userIdFromName(name), name }),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    if (!response.ok) {
      say(`No token: ${(await readProblem(response)).detail}`, "error");
      return;
    }
    signIn((await response.json()).token);
    el("act").focus();
  } catch {
    say("Could not reach the server for a token. Try again in a moment.", "error");
  } finally {
    button.disabled = false;
  }
}

/* ------------------------------------------------------------------ scoring */

function newKey() {
  if (typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID needs a secure context; plain HTTP on a LAN address still has this.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
  const hex = Array.from(bytes, (x) => x.toString(16).padStart(2, "0")).join("");
  return hex.replace(/^(.{8})(.{4})(.{4})(.{4})(.{12})$/, "$1-$2-$3-$4-$5");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// A lost answer leaves the outcome unknown; resending the same key and body is safe,
// as the server replays its first answer instead of counting twice. After such a loss
// a 409 most likely means the first attempt is still in flight, so that waits too.
async function postScore(token, body, key) {
  for (let attempt = 0; ; attempt += 1) {
    let response = null;
    try {
      response = await fetch("/score", {
        method: "POST",
        headers: {
          Authorization: `Bearer ${token}`,
          "Content-Type": "application/json",
          "Idempotency-Key": key,
        },
        body,
        cache: "no-store",
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (error) {
      if (attempt >= NETWORK_RETRIES) throw error;
    }
    const lost = response === null;
    const retryable = lost || response.status === 503 || (response.status === 409 && attempt > 0);
    if (!retryable || attempt >= NETWORK_RETRIES) return response;
    await sleep(400 * 2 ** attempt);
  }
}

// The server decides what an action is worth: it hands out a single-use ticket, and
// counts it once the action's minimum time has passed.
async function startAction(token) {
  return fetch("/actions", {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ kind: ACTION_KIND }),
    cache: "no-store",
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
}

async function act() {
  const token = session.token;
  if (session.busy || !token || session.waitUntil) return;
  setBusy(true);
  say("Working on the action…", "info", false);
  try {
    const started = await startAction(token);
    if (!started.ok) {
      if (session.token === token) await showAnswer(started);
      return;
    }
    const ticket = await started.json();
    const wait = Date.parse(ticket.not_before) - Date.now();
    if (wait > 0) await sleep(Math.min(wait + 100, MAX_ACTION_WAIT_MS));
    const body = JSON.stringify({ user_id: session.userId, action_id: ticket.action_id });
    const response = await postScore(token, body, newKey());
    if (session.token === token) await showAnswer(response); // else: signed out meanwhile
  } catch {
    say("Could not reach the server, so the action was not confirmed. Try again.", "error");
  } finally {
    setBusy(false);
  }
}

async function showAnswer(response) {
  if (response.ok) {
    sayStanding(await response.json(), "ok");
    return;
  }
  const problem = await readProblem(response);
  if (response.status === 401) {
    signOut(`The server refused your token: ${sentence(problem.detail)} You have been signed out.`);
    focusSignIn();
  } else if (response.status === 429) {
    startCooldown(retryAfter(response));
  } else {
    say(`Not counted: ${sentence(problem.detail)}`, "error");
  }
}

async function readProblem(response) {
  try {
    const problem = await response.json();
    const detail = problem.detail || problem.title;
    if (typeof detail === "string" && detail) return { detail };
  } catch {
    // Not problem+json (a proxy's error page, say): fall through to the status line.
  }
  return { detail: `the server answered ${response.status} ${response.statusText}`.trim() };
}

function sentence(text) {
  const clean = text.trim();
  return /[.!?]$/.test(clean) ? clean : `${clean}.`;
}

function retryAfter(response) {
  const header = response.headers.get("Retry-After") || "";
  // Seconds, or an HTTP date.
  const value = header.trim();
  let seconds = /^\d+$/.test(value) ? Number(value) : (Date.parse(value) - Date.now()) / 1000;
  if (!Number.isFinite(seconds)) seconds = 5;
  return Math.min(3600, Math.max(1, Math.ceil(seconds)));
}

function startCooldown(seconds) {
  session.waitUntil = Date.now() + seconds * 1000;
  // Announced once; the ticking below is for the eye only.
  say(cooldownText(seconds), "error");
  tickCooldown();
}

function tickCooldown() {
  clearTimeout(session.tick);
  const leftMs = session.waitUntil - Date.now();
  if (leftMs <= 0) {
    session.waitUntil = 0;
    updateActButton();
    say("Ready — you can act again.", "info");
    return;
  }
  say(cooldownText(Math.ceil(leftMs / 1000)), "error", false);
  updateActButton();
  session.tick = setTimeout(tickCooldown, leftMs % 1000 || 1000);
}

function stopCooldown() {
  clearTimeout(session.tick);
  session.waitUntil = 0;
  updateActButton();
}

function cooldownText(seconds) {
  return `Too many actions — try again in ${seconds} s`;
}

function setBusy(busy) {
  session.busy = busy;
  el("signed-in").setAttribute("aria-busy", String(busy));
  updateActButton();
}

function updateActButton() {
  el("act").disabled = session.busy || session.waitUntil > 0 || !session.token;
}

/* ---------------------------------------------------------------- messages */

// The visible line, and (unless told not to) the same words for screen readers.
function say(text, tone, announce = true) {
  messages += 1;
  session.showsStanding = false;
  const result = el("result");
  result.textContent = text;
  result.dataset.tone = tone;
  if (announce) el("announce").textContent = text;
}

/* -------------------------------------------------------------------- start */

function focusSignIn() {
  el(el("dev-helper").hidden ? "token-input" : "dev-name").focus();
}

// A token kept from earlier in this tab signs in again after a reload.
function restoreSession() {
  let saved = null;
  try {
    saved = sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return; // storage is off
  }
  if (!saved) return;
  try {
    signIn(saved);
  } catch {
    sessionStorage.removeItem(TOKEN_KEY);
  }
}

function start() {
  const devKey = document.querySelector('meta[name="scoreboard-dev-key"]');
  if (devKey && devKey.content === "true") {
    el("dev-helper").hidden = false;
    el("dev-name").value = `Guest ${randomDigits()}`;
    el("dev-form").addEventListener("submit", onDevSubmit);
  }
  el("token-form").addEventListener("submit", onTokenSubmit);
  el("act").addEventListener("click", act);
  el("sign-out").addEventListener("click", () => {
    signOut();
    focusSignIn();
  });
  restoreSession();

  el("board-select").addEventListener("change", (event) => {
    switchView(event.target.value, null, true);
  });
  el("season-select").addEventListener("change", (event) => {
    const season = event.target.value;
    switchView(view.id, season === "" ? null : Number(season), true);
  });
  window.addEventListener("popstate", () => {
    const named = viewInUrl();
    switchView(named.id, named.season, false);
  });
  // The default board always exists: its stream opens at once; another's once the list
  // says it is there. A closed season named in the URL is drawn once the list says
  // which season is current.
  if (view.id === DEFAULT_BOARD) connect();
  loadBoards().then(() => {
    if (view.id !== DEFAULT_BOARD && view.boards.has(view.id)) connect();
    loadSeasons();
    if (view.season !== null) showView();
  });
  // Back online: do not wait for the next retry.
  window.addEventListener("online", () => {
    if (live.source && live.source.readyState !== EventSource.OPEN) connect();
  });
}

start();
