// The event page's one piece of mutable state: what this tab has chosen, the hold it is paying
// for, the request it waits on, and every ticket's status as the stream last told it. The
// transitions below are the only code that changes it; they touch no DOM, so every render
// reads from here and nothing else on the page changes behind their back.
//
//   idle ⇄ selecting ──hold──▶ holding ──placed──▶ held ──pay──▶ confirming ──paid──▶ booked
//     ▲        ▲                  │                 │ ▲ ╲             │
//     │        └─────refused──────┴──▶ failed       │ │  ╲──release──▶ releasing
//     └── restoring ──(a hold still running)──▶ ────┘ │                 │
//                                                     └─ answered ──────┘
//   held | confirming | releasing ──ended──▶ expired | released | booked
//
// failed, expired, released and booked (by another tab) end a hold or an attempt: the buyer
// chooses again from there as from idle. `booked` right after paying keeps the hold while the
// page leaves for the booking page.

export const PHASES = Object.freeze([
  "idle", // nothing chosen, no hold
  "selecting", // seats chosen on the map, not held yet
  "holding", // POST /events/{id}/reservations in flight
  "restoring", // on load: asking the server about a hold this tab made before a reload
  "held", // a hold is running: the countdown ticks, pay or release
  "confirming", // the payment is in flight
  "releasing", // the release is in flight
  "booked", // paid (here: on the way to the booking page; elsewhere: the hold is over)
  "expired", // the hold ran out (or the server no longer knows it)
  "released", // the hold was released
  "failed", // the hold request was refused or did not go through
]);

const CHOOSING = ["idle", "selecting", "failed", "expired", "released", "booked"];
const HOLDING_A_HOLD = ["held", "confirming", "releasing"];

// From each phase, the phases a transition may lead to.
const NEXT = {
  idle: ["selecting", "holding", "restoring", "held"],
  selecting: ["idle", "holding", "held"],
  holding: ["held", "failed"],
  restoring: ["held", "idle"],
  held: ["confirming", "releasing", "expired", "released", "booked"],
  confirming: ["held", "booked", "expired", "released"],
  releasing: ["held", "expired", "released", "booked"],
  booked: ["idle", "selecting", "holding", "held"],
  expired: ["idle", "selecting", "holding", "held"],
  released: ["idle", "selecting", "holding", "held"],
  failed: ["idle", "selecting", "holding", "held"],
};

function move(state, to) {
  if (!NEXT[state.phase].includes(to)) {
    throw new Error(`shop state: no transition from ${state.phase} to ${to}`);
  }
  state.phase = to;
}

// `seats`: the seats drawn on this page, as [id, status] pairs from the server's HTML.
export function createState(seats) {
  return {
    phase: "idle",
    // Seat ids chosen on the map (selecting; kept through a failed attempt).
    selected: new Set(),
    // The request the page waits on: {kind: "hold" | "pay" | "release" | "restore",
    // via: the id of the button that sent it, ticketIds: the seats a hold asks for}.
    request: null,
    // The hold this tab is paying for: {id, token, ticketIds, tickets, total, duration,
    // deadline (on performance.now()'s clock), warned}.
    hold: null,
    // The page's seats by id, and every ticket of the event as the stream said (a snapshot
    // replaces them all); `available` is unknown (null) until the first snapshot.
    seatStatus: new Map(seats),
    statusOf: new Map(),
    available: null,
    // The live feed: "off", "connecting", "on" or "reconnecting".
    live: "off",
  };
}

// ---- what the page may do now ----

export const canChoose = (state) => state.hold === null && CHOOSING.includes(state.phase);
// A hold running in this tab (not yet paid, released or over).
export const holdsSeats = (state) => HOLDING_A_HOLD.includes(state.phase);
// Waiting for an answer: nothing new may start.
export const isBusy = (state) => state.request !== null;
export const busyWith = (state, kind) => state.request !== null && state.request.kind === kind;

// How a seat on the map looks: its status, or this tab's view of it.
export function seatState(state, id) {
  const status = state.seatStatus.get(id);
  if (state.hold && state.hold.ticketIds.has(id) && status === "reserved") return "mine";
  if (status !== "available") return status;
  return state.selected.has(id) ? "selected" : "available";
}

// ---- choosing ----

function afterSelectionChange(state) {
  if (!canChoose(state)) return;
  const to = state.selected.size ? "selecting" : "idle";
  if (state.phase !== to) move(state, to);
}

export function choose(state, id) {
  state.selected.add(id);
  afterSelectionChange(state);
}

export function unchoose(state, id) {
  state.selected.delete(id);
  afterSelectionChange(state);
}

export function clearSelection(state) {
  state.selected.clear();
  afterSelectionChange(state);
}

// ---- the live feed ----

export function setLive(state, live) {
  state.live = live;
}

// Statuses from the stream: a snapshot replaces them all, a `tickets` message some. Returns
// the page's seats that changed, the chosen seats another buyer took meanwhile, and whether
// this tab's hold changed without it (expired, or another tab released or paid).
export function applyStatuses(state, pairs, snapshot) {
  if (snapshot) {
    state.statusOf.clear();
    state.available = 0;
  }
  const changed = [];
  const taken = [];
  let holdTouched = false;
  const asked = state.request && state.request.kind === "hold" ? state.request.ticketIds : null;
  for (const [id, status] of pairs) {
    if (state.statusOf.get(id) === "available") state.available -= 1;
    if (status === "available") state.available += 1;
    state.statusOf.set(id, status);
    if (state.phase === "held" && state.hold.ticketIds.has(id) && status !== "reserved") {
      holdTouched = true;
    }
    if (!state.seatStatus.has(id) || state.seatStatus.get(id) === status) continue;
    state.seatStatus.set(id, status);
    changed.push(id);
    // Our own hold request's seats turn reserved before its answer arrives: not a loss.
    if (status !== "available" && state.selected.has(id) && !(asked && asked.has(id))) {
      state.selected.delete(id);
      taken.push(id);
    }
  }
  if (taken.length) afterSelectionChange(state);
  return { changed, taken, holdTouched };
}

// ---- holding ----

// `body` is the reservation request; `via` the id of the button that sent it.
export function requestHold(state, body, via) {
  move(state, "holding");
  state.request = { kind: "hold", via, ticketIds: new Set(body.ticket_ids || []) };
}

// The server holds `data` (a reservation) for this tab. `serverNow` is the server's time when
// it answered: the countdown runs on this computer's monotonic clock from there, so a wrong
// clock on this computer cannot shorten it.
export function holdPlaced(state, data, token, serverNow, monotonicNow) {
  const remaining = Date.parse(data.expires_at) - serverNow;
  move(state, "held");
  state.request = null;
  state.hold = {
    id: data.id,
    token,
    ticketIds: new Set(data.tickets.map((ticket) => ticket.id)),
    tickets: data.tickets,
    total: data.total,
    duration: Math.max(Date.parse(data.expires_at) - Date.parse(data.created_at), remaining),
    deadline: monotonicNow + remaining,
    warned: false,
  };
  state.selected.clear();
  for (const ticket of data.tickets) {
    if (state.available !== null) {
      if (state.statusOf.get(ticket.id) === "available") state.available -= 1;
      state.statusOf.set(ticket.id, "reserved");
    }
    if (state.seatStatus.has(ticket.id)) state.seatStatus.set(ticket.id, "reserved");
  }
}

// The hold request was refused or failed. `unavailable`: the ids the server says are taken;
// returns those that are seats on this page (no longer chosen, and not free either: sold or
// held, the stream says which in a moment).
export function holdRefused(state, unavailable = []) {
  move(state, "failed");
  state.request = null;
  const onPage = [];
  for (const id of unavailable) {
    if (!state.seatStatus.has(id)) continue;
    state.selected.delete(id);
    if (state.seatStatus.get(id) === "available") state.seatStatus.set(id, "reserved");
    onPage.push(id);
  }
  return onPage;
}

// ---- the countdown ----

export function timeLeft(state, monotonicNow) {
  return Math.max(0, state.hold.deadline - monotonicNow);
}

export function warned(state) {
  state.hold.warned = true;
}

// ---- paying and releasing ----

export function startPaying(state) {
  move(state, "confirming");
  state.request = { kind: "pay" };
}

export function startReleasing(state) {
  move(state, "releasing");
  state.request = { kind: "release" };
}

// Paid: the hold is booked, and kept while the page goes to the booking page (unless the
// stream and the server told of its end meanwhile).
export function paid(state) {
  if (state.phase === "confirming") move(state, "booked");
  state.request = null;
}

// The payment's or release's answer said nothing final: the hold runs on (if it still does).
export function answered(state) {
  if (state.phase === "confirming" || state.phase === "releasing") move(state, "held");
  state.request = null;
}

// The hold is over: `outcome` is "expired", "released" or "booked" (paid in another tab).
// Expired or released, its tickets count as free at once (the database agrees). Returns the
// hold that ended, or null when none was running.
export function holdEnded(state, outcome) {
  const ended = state.hold;
  if (!ended || !holdsSeats(state)) return null;
  move(state, outcome);
  state.hold = null;
  state.request = null;
  if (outcome !== "booked") {
    for (const id of ended.ticketIds) {
      if (state.statusOf.get(id) === "reserved") {
        state.statusOf.set(id, "available");
        state.available += 1;
      }
      if (state.seatStatus.get(id) === "reserved") state.seatStatus.set(id, "available");
    }
  }
  return ended;
}

// ---- a reload with a hold in this tab ----

export function startRestoring(state) {
  move(state, "restoring");
  state.request = { kind: "restore" };
}

export function restored(state) {
  if (state.phase === "restoring") {
    move(state, "idle");
    state.request = null;
  }
}
