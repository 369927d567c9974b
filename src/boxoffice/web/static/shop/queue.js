// The event's waiting room, on an event that sells through one: join the queue, follow the
// place live (GET /events/{id}/queue/{place}/stream, server-sent events), and once admitted
// open the seat map and the hold controls; the hold then carries the place's token as its
// `queue_pass`. The place's token is kept in this tab's sessionStorage only (as a hold's is)
// and travels solely in an `Authorization` header or a request body, never in a URL.
//
//   restoring ─▶ join ──join──▶ waiting (pre-queue, then a position) ──▶ admitted ──hold──▶ used
//                  ▲                                                       │               │
//                  └──── left, expired (the pass ran out), used and the hold is over ◀─────┘

import { B } from "./boxoffice.js";

const PLACES = "boxoffice.queue";
// A place in one of these has stopped moving: its stream ends.
const FINAL = ["admitted", "used", "expired", "left"];

const saved = {
  all() {
    try {
      return JSON.parse(sessionStorage.getItem(PLACES) || "{}");
    } catch {
      return {};
    }
  },
  get(eventId) {
    return this.all()[eventId] || null;
  },
  set(eventId, record) {
    const all = this.all();
    if (record) all[eventId] = record;
    else delete all[eventId];
    try {
      sessionStorage.setItem(PLACES, JSON.stringify(all));
    } catch {
      // No storage: a reload loses the place (the buyer is told it is one per customer).
    }
  },
};

const clockFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit",
  minute: "2-digit",
  hourCycle: "h23",
});

const pad = (n) => String(n).padStart(2, "0");

// "02:14:05", or "3 days 02:14:05".
export function untilText(ms) {
  const total = Math.max(0, Math.ceil(ms / 1000));
  const days = Math.floor(total / 86_400);
  const clock = `${pad(Math.floor((total % 86_400) / 3600))}:${pad(Math.floor((total % 3600) / 60))}:${pad(total % 60)}`;
  return days ? `${days} day${days === 1 ? "" : "s"} ${clock}` : clock;
}

// "about 3 min", from the server's estimate in seconds.
export function waitText(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 60) return "less than a minute";
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `about ${minutes} min`;
  return `about ${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

// `onChange()`: the room changed what the page may do (main.js redraws the panel).
export function createWaitingRoom({ root, eventId, api, onChange }) {
  const $ = (id) => document.getElementById(id);
  const box = $("queue");
  const venue = root.querySelector(".venue");
  const joinButton = $("queue-join");
  const joinText = joinButton.textContent;

  // The server's clock, as far as this page knows it: the offset from this computer's clock,
  // first from the page (drawn just now), then from the database's own time at the join.
  let offset = (Date.parse(root.dataset.serverNow) || Date.now()) - Date.now();
  const serverTime = () => Date.now() + offset;
  let salesStart = Date.parse(root.dataset.salesStartAt || "") || null;

  const room = {
    // join | restoring | waiting | admitted | used
    step: "join",
    // The place as the server last told it: {id, status, position, …}.
    place: null,
    // {place_id, token, customer}: what sessionStorage keeps.
    record: null,
    // When the pass runs out, on performance.now()'s clock.
    passDeadline: null,
    source: null,
    busy: false,
  };

  // ---- drawing ----

  function show(id, visible) {
    const element = $(id);
    if (element) element.hidden = !visible;
  }

  function setStatus(text) {
    // The live region speaks only when the words change (a countdown tick is no news).
    if ($("queue-status").textContent !== text) $("queue-status").textContent = text;
  }

  function statusText(place) {
    if (place.status === "pre-queue") {
      return salesStart !== null && salesStart > serverTime()
        ? "You're in the pre-queue: your place is drawn when sales open."
        : "Sales are opening: your place in the queue is being drawn…";
    }
    if (place.status === "waiting") {
      if (place.position === null || place.position === undefined) return "You are in the queue.";
      const wait = waitText(place.estimated_wait_seconds);
      return `You are number ${place.position} in the queue${wait ? ` · ${wait}` : ""}`;
    }
    return "";
  }

  function draw() {
    box.dataset.step = room.step;
    show("queue-form", room.step === "join");
    show("queue-intro", room.step === "join");
    show("queue-place", room.step !== "join");
    show("queue-leave", room.step === "waiting" || room.step === "admitted");
    show("queue-keep-open", room.step === "waiting");
    if (room.step === "restoring") setStatus("Checking your place in the queue…");
    else if (room.step === "waiting") setStatus(statusText(room.place));
    else if (room.step === "admitted") {
      const until = clockFormat.format(Date.now() + passLeft());
      setStatus(`It's your turn — you have until ${until} to choose.`);
    }
    box.dataset.status = room.place ? room.place.status : "";
    joinButton.disabled = room.busy;
    joinButton.textContent = room.busy ? "Joining…" : joinText;
    if (room.busy) joinButton.setAttribute("aria-busy", "true");
    else joinButton.removeAttribute("aria-busy");
    tick();
  }

  // Each second: the countdown to the on-sale, and the pass running out.
  function tick() {
    const opensIn = salesStart === null ? 0 : salesStart - serverTime();
    const counting =
      opensIn > 0 &&
      (room.step === "join" || (room.step === "waiting" && room.place.status === "pre-queue"));
    show("queue-countdown", counting);
    if (counting) {
      const text = untilText(opensIn);
      if ($("queue-countdown-time").textContent !== text) {
        $("queue-countdown-time").textContent = text;
      }
    }
    const intro =
      opensIn > 0
        ? "Everyone who joins before sales open gets a random place in the queue when they " +
          "open: there is no need to rush."
        : "Sales are open. Join the queue: when it's your turn, choose and hold your " +
          "tickets here.";
    if ($("queue-intro").textContent !== intro) $("queue-intro").textContent = intro;
    if (room.step === "waiting") setStatus(statusText(room.place));
    if (room.step === "admitted" && passLeft() <= 0) {
      forget("Your turn ended before you held any tickets. Join the queue again to choose.");
    }
  }

  function passLeft() {
    return room.passDeadline === null ? 0 : room.passDeadline - performance.now();
  }

  // ---- the place ----

  function close() {
    if (room.source) room.source.close();
    room.source = null;
  }

  // Back to the join form, with `note` saying why (the place is over, or never was).
  function forget(note = "") {
    close();
    saved.set(eventId, null);
    room.step = "join";
    room.place = null;
    room.record = null;
    room.passDeadline = null;
    $("queue-note").textContent = note;
    show("queue-note", note !== "");
    unlockCustomer();
    draw();
    onChange();
  }

  function unlockCustomer() {
    const input = $("customer");
    input.readOnly = false;
    input.removeAttribute("aria-describedby");
  }

  // A place as the server tells it (the join's answer, a GET, or a stream message).
  function update(place) {
    const wasAdmitted = room.step === "admitted";
    room.place = { ...room.place, ...place };
    if ("sales_start_at" in place) {
      salesStart = place.sales_start_at ? Date.parse(place.sales_start_at) : null;
    }
    switch (place.status) {
      case "pre-queue":
      case "waiting":
        room.step = "waiting";
        break;
      case "admitted":
        if (!wasAdmitted) {
          room.passDeadline = performance.now() + (Date.parse(place.pass_expires_at) - serverTime());
          const input = $("customer");
          input.value = room.record.customer;
          input.readOnly = true;
          input.setAttribute("aria-describedby", "customer-queued");
        }
        room.step = "admitted";
        close();
        break;
      case "used":
        room.step = "used";
        close();
        break;
      case "expired":
        forget("Your turn ended before you held any tickets. Join the queue again to choose.");
        return;
      default:
        forget("You are no longer in the queue. Join it again to choose.");
        return;
    }
    $("queue-note").textContent = "";
    show("queue-note", false);
    draw();
    onChange();
    if (room.step === "admitted" && !wasAdmitted) {
      B.say("It's your turn: choose your tickets and hold them before your turn ends.", "success");
    }
  }

  function follow() {
    close();
    if (!("EventSource" in window) || !room.place || FINAL.includes(room.place.status)) return;
    // The place id is unguessable and the stream carries no token.
    const source = new EventSource(room.place.stream);
    room.source = source;
    source.addEventListener("place", (message) => {
      if (room.source !== source) return;
      update(JSON.parse(message.data));
    });
    source.addEventListener("error", () => {
      // The browser retries a dropped connection itself; an HTTP error answer ends it.
      if (room.source === source && source.readyState === EventSource.CLOSED) {
        close();
        setTimeout(refresh, 3000);
      }
    });
  }

  // The server's word on the saved place (a reload, or the stream gave up).
  async function refresh() {
    const record = room.record;
    if (!record) return;
    const result = await api.queuePlace(record);
    if (room.record !== record) return;
    if (result.ok) {
      update(result.data);
      follow();
    } else if (result.status === 401 || result.status === 404) {
      forget("Your place in the queue is no longer known. Join the queue again to choose.");
    } else {
      setTimeout(refresh, 5000);
    }
  }

  async function join(event) {
    event.preventDefault();
    if (room.busy || room.step !== "join") return;
    const input = $("queue-customer");
    if (!input.reportValidity()) return;
    const customer = input.value.trim();
    try {
      localStorage.setItem("boxoffice.customer", customer);
    } catch {
      // Storage may be off; the buyer just types it again next time.
    }
    room.busy = true;
    draw();
    const sent = Date.now();
    const result = await api.joinQueue(customer);
    const answered = Date.now();
    room.busy = false;
    if (!result.ok) {
      draw();
      B.say(B.describe(result), "error");
      return;
    }
    const place = result.data;
    // The database's clock at the join, against ours halfway through the request.
    offset = Date.parse(place.joined_at) - (sent + answered) / 2;
    room.record = { place_id: place.id, token: place.token, customer: place.customer };
    saved.set(eventId, room.record);
    delete place.token;
    update(place);
    follow();
    B.say(
      place.status === "pre-queue"
        ? "You're in the queue. Your place is drawn when sales open."
        : "You're in the queue. Keep this tab open: it moves on by itself when it's your turn.",
      "success",
    );
  }

  async function leave() {
    const record = room.record;
    if (!record) return;
    const result = await api.leaveQueue(record);
    if (result.ok || result.status === 404 || result.status === 401) {
      forget("");
      B.say("You left the queue.", "info");
      $("queue-customer").focus();
    } else {
      B.say(B.describe(result), "error");
    }
  }

  // ---- wiring ----

  $("queue-form").addEventListener("submit", join);
  $("queue-leave").addEventListener("click", leave);
  try {
    $("queue-customer").value = localStorage.getItem("boxoffice.customer") || "";
  } catch {
    // No storage: the field starts empty.
  }
  setInterval(tick, 250);

  return {
    // The pass a hold request carries: {token, customer}, while admitted.
    pass() {
      if (room.step !== "admitted" || passLeft() <= 0) return null;
      return { token: room.record.token, customer: room.record.customer };
    },
    // A hold was made with the pass: it is spent.
    passUsed(reservationId) {
      if (room.place) update({ status: "used", reservation_id: reservationId });
    },
    // A hold was refused for the pass (403 queue-pass-required): its detail says why.
    passRefused(result) {
      forget(B.describe(result));
      $("queue-customer").focus();
    },
    // Draws what the page may do, after main.js drew the panel from `state`.
    render(state) {
      const holding = state.hold !== null;
      // A reload's look at a hold this tab made: its answer decides what shows.
      const restoring = state.phase === "restoring";
      // The pass went into a hold that is over now: a new turn starts with a new place.
      if (room.step === "used" && !holding && !restoring && state.phase !== "holding") {
        forget("Your turn's pass was used for a hold. To choose again, join the queue again.");
        return;
      }
      box.hidden = holding || restoring;
      const open = holding || room.step === "admitted";
      if (!holding) $("choose").hidden = room.step !== "admitted";
      if (venue) venue.inert = !open;
      show("map-locked", !open);
    },
    // On load: pick up a place this tab joined before a reload.
    start() {
      room.record = saved.get(eventId);
      if (room.record) {
        room.step = "restoring";
        room.place = { id: room.record.place_id, status: "restoring" };
        refresh();
      }
      draw();
    },
  };
}
