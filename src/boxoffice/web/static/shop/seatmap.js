// The seat map and the event's availability, drawn from the state; and the keyboard on the
// map: one Tab stop for the whole map, arrow keys between seats.

import { seatState } from "./state.js";

// How a seat reads to a screen reader; the server words the first three the same way
// (boxoffice.web.views).
export const WORDS = {
  available: "available",
  reserved: "held by another buyer",
  booked: "sold",
  selected: "selected",
  mine: "held by you",
};

// The seats the server drew, by id, in page order: what never changes about them.
export function readSeats(root) {
  const seats = new Map();
  root.querySelectorAll("button.seat").forEach((element, index) => {
    const id = Number(element.dataset.id);
    seats.set(id, {
      id,
      index,
      element,
      initialStatus: element.dataset.status,
      section: element.dataset.section,
      row: element.dataset.row,
      number: element.dataset.seat,
      label: element.dataset.label,
      price: Number(element.dataset.price),
      priceText: element.dataset.priceText,
    });
  });
  return seats;
}

export function paintSeat(state, seat) {
  const shown = seatState(state, seat.id);
  const element = seat.element;
  element.dataset.status = state.seatStatus.get(seat.id);
  element.dataset.state = shown;
  element.setAttribute("aria-pressed", shown === "selected" ? "true" : "false");
  if (shown === "available" || shown === "selected") element.removeAttribute("aria-disabled");
  else element.setAttribute("aria-disabled", "true");
  element.setAttribute(
    "aria-label",
    `Row ${seat.row}, seat ${seat.number}, ${WORDS[shown]}, ${seat.priceText}`,
  );
  element.title = `${seat.label} · ${seat.priceText} · ${WORDS[shown]}`;
}

export function paintSeats(state, seats, ids = seats.keys()) {
  for (const id of ids) {
    const seat = seats.get(id);
    if (seat) paintSeat(state, seat);
  }
}

export function renderCounts(state, root, seats) {
  if (state.available === null) return;
  document.getElementById("available-count").textContent =
    state.available.toLocaleString("en-US");
  const meter = document.getElementById("ga-meter");
  if (meter) meter.value = state.available;
  // Nothing free is not "sold out" while some tickets are only held: say they may come back.
  const heldNote = document.getElementById("held-note");
  if (heldNote) {
    let held = 0;
    if (state.available === 0) {
      state.statusOf.forEach((status) => {
        if (status === "reserved") held += 1;
      });
    }
    heldNote.hidden = held === 0;
    heldNote.textContent = held ? `${held.toLocaleString("en-US")} on hold — may come back` : "";
  }
  const free = new Map();
  seats.forEach((seat) => {
    const available = state.seatStatus.get(seat.id) === "available" ? 1 : 0;
    free.set(seat.section, (free.get(seat.section) || 0) + available);
  });
  root.querySelectorAll("[data-section-available]").forEach((element) => {
    const count = free.get(element.dataset.sectionAvailable);
    if (count !== undefined) element.textContent = String(count);
  });
}

const LIVE_TEXT = {
  on: "Live",
  connecting: "Connecting…",
  reconnecting: "Reconnecting…",
  off: "Live updates paused",
};

export function renderLive(state) {
  const badge = document.getElementById("live");
  badge.dataset.state = state.live;
  badge.textContent = LIVE_TEXT[state.live];
}

// ---- the keyboard ----

function makeTabStop(root, element) {
  root.querySelectorAll('button.seat[tabindex="0"]').forEach((other) => {
    other.tabIndex = -1;
  });
  element.tabIndex = 0;
}

function nearestIn(row, element) {
  const box = element.getBoundingClientRect();
  const middle = box.left + box.width / 2;
  let best = row[0];
  let distance = Infinity;
  for (const candidate of row) {
    const rect = candidate.getBoundingClientRect();
    const d = Math.abs(rect.left + rect.width / 2 - middle);
    if (d < distance) {
      best = candidate;
      distance = d;
    }
  }
  return best;
}

// Wires the map's clicks and keys; `onSeat(id)` is a click (or Space, Enter) on a seat.
// `first`: the seat that takes the map's one Tab stop to begin with.
export function wireSeatMap(root, venue, first, onSeat) {
  const rows = [...root.querySelectorAll(".seat-row")].map((row) => [
    ...row.querySelectorAll("button.seat"),
  ]);
  const position = new Map();
  rows.forEach((row, r) => row.forEach((element, c) => position.set(element, [r, c])));

  venue.addEventListener("click", (event) => {
    const element = event.target.closest("button.seat");
    if (!element) return;
    makeTabStop(root, element);
    onSeat(Number(element.dataset.id));
  });
  venue.addEventListener("keydown", (event) => {
    const element = event.target.closest("button.seat");
    if (!element || !position.has(element)) return;
    const [r, c] = position.get(element);
    let next = null;
    if (event.key === "ArrowLeft") next = rows[r][c - 1];
    else if (event.key === "ArrowRight") next = rows[r][c + 1];
    else if (event.key === "ArrowUp" && r > 0) next = nearestIn(rows[r - 1], element);
    else if (event.key === "ArrowDown" && r < rows.length - 1) {
      next = nearestIn(rows[r + 1], element);
    }
    else if (event.key === "Home") next = rows[r][0];
    else if (event.key === "End") next = rows[r][rows[r].length - 1];
    else return;
    event.preventDefault();
    if (next) {
      makeTabStop(root, next);
      next.focus();
    }
  });
  venue.addEventListener("focusin", (event) => {
    if (event.target.matches("button.seat")) makeTabStop(root, event.target);
  });
  root.querySelectorAll("button.seat").forEach((element) => {
    element.tabIndex = -1;
  });
  if (first) makeTabStop(root, first.element);
}
