// The event page: pick seats (or a quantity), hold them, pay or release, and watch the other
// buyers' holds arrive live from GET /events/{id}/stream.
"use strict";

(() => {
  const B = window.Boxoffice;
  const root = document.getElementById("shop");
  if (!root) return;
  const $ = (id) => document.getElementById(id);

  const eventId = root.dataset.eventId;
  const seated = root.dataset.kind === "seated";
  const maxPerHold = Number(root.dataset.maxPerHold);
  const unitPrice = Number(root.dataset.unitPrice || 0);
  const money = B.money({
    symbol: root.dataset.currencySymbol,
    exponent: Number(root.dataset.currencyExponent),
  });
  const noun = (n) => (seated ? (n === 1 ? "seat" : "seats") : n === 1 ? "ticket" : "tickets");

  // How a seat reads to a screen reader; the server words the first three the same way.
  const WORDS = {
    available: "available",
    reserved: "held by another buyer",
    booked: "sold",
    selected: "selected",
    mine: "held by you",
  };

  // ---- the seats on this page, and every ticket's status as the stream last told it ----

  const seats = new Map();
  const order = new Map();
  root.querySelectorAll("button.seat").forEach((element, index) => {
    const seat = {
      id: Number(element.dataset.id),
      element,
      status: element.dataset.status,
      section: element.dataset.section,
      row: element.dataset.row,
      number: element.dataset.seat,
      label: element.dataset.label,
      price: Number(element.dataset.price),
      priceText: element.dataset.priceText,
    };
    seats.set(seat.id, seat);
    order.set(seat.id, index);
  });
  const statusOf = new Map();
  let availableCount = null; // unknown until the first snapshot

  const selected = new Set();
  // The hold this tab is paying for: {id, token, ticketIds, tickets, total, deadline, duration}.
  let hold = null;
  let countdownTimer = null;
  // The request in flight ("hold", "pay", "release", "restore"); the page waits for its answer.
  let pending = null;
  let pendingIds = new Set();

  function stateOf(seat) {
    if (hold && hold.ticketIds.has(seat.id) && seat.status === "reserved") return "mine";
    if (seat.status !== "available") return seat.status;
    return selected.has(seat.id) ? "selected" : "available";
  }

  function paint(seat) {
    const state = stateOf(seat);
    const element = seat.element;
    element.dataset.status = seat.status;
    element.dataset.state = state;
    element.setAttribute("aria-pressed", state === "selected" ? "true" : "false");
    if (state === "available" || state === "selected") element.removeAttribute("aria-disabled");
    else element.setAttribute("aria-disabled", "true");
    element.setAttribute(
      "aria-label",
      `Row ${seat.row}, seat ${seat.number}, ${WORDS[state]}, ${seat.priceText}`,
    );
    element.title = `${seat.label} · ${seat.priceText} · ${WORDS[state]}`;
  }

  function paintAll() {
    seats.forEach(paint);
  }

  function updateCounts() {
    if (availableCount === null) return;
    $("available-count").textContent = availableCount.toLocaleString("en-US");
    const meter = $("ga-meter");
    if (meter) meter.value = availableCount;
    const free = new Map();
    seats.forEach((seat) => {
      free.set(seat.section, (free.get(seat.section) || 0) + (seat.status === "available" ? 1 : 0));
    });
    root.querySelectorAll("[data-section-available]").forEach((element) => {
      const count = free.get(element.dataset.sectionAvailable);
      if (count !== undefined) element.textContent = String(count);
    });
  }

  // Statuses from the stream: a snapshot replaces them all, a `tickets` message some.
  function applyStatuses(pairs, snapshot) {
    if (snapshot) {
      statusOf.clear();
      availableCount = 0;
    }
    const taken = [];
    let holdTouched = false;
    for (const [id, status] of pairs) {
      if (statusOf.get(id) === "available") availableCount -= 1;
      if (status === "available") availableCount += 1;
      statusOf.set(id, status);
      if (hold && hold.ticketIds.has(id) && status !== "reserved" && pending === null) {
        holdTouched = true;
      }
      const seat = seats.get(id);
      if (!seat || seat.status === status) continue;
      seat.status = status;
      // Our own hold request's seats turn reserved before its answer arrives: not a loss.
      if (status !== "available" && selected.has(id) && !pendingIds.has(id)) {
        selected.delete(id);
        taken.push(seat.label);
      }
      paint(seat);
    }
    updateCounts();
    if (taken.length) {
      renderSelection();
      const one = taken.length === 1;
      B.say(
        `${B.listOf(taken)} ${one ? "was" : "were"} just taken by another buyer — ` +
          `pick ${one ? "another seat" : "other seats"}.`,
        "error",
      );
    }
    // Our hold's seats freed or sold without us: it expired, or another tab released or paid.
    if (holdTouched) reconcileHold(hold);
  }

  // ---- the live stream ----

  // A snapshot's `runs`: from ticket id `first` on, a status letter and how many ids in a row
  // have it (no number: one); `-` skips ids that are not tickets of this event.
  const RUN_STATUS = { a: "available", r: "reserved", b: "booked" };
  function* snapshotStatuses(snapshot) {
    let id = snapshot.first;
    for (const [, letter, digits] of snapshot.runs.matchAll(/([a-z-])(\d*)/g)) {
      const count = digits ? Number(digits) : 1;
      const status = RUN_STATUS[letter];
      if (status) for (let i = 0; i < count; i += 1) yield [id + i, status];
      id += count;
    }
  }

  function showLive(state) {
    const badge = $("live");
    badge.dataset.state = state;
    badge.textContent = {
      on: "Live",
      connecting: "Connecting…",
      reconnecting: "Reconnecting…",
      off: "Live updates paused",
    }[state];
  }

  function connect() {
    if (!("EventSource" in window)) return;
    showLive("connecting");
    const source = new EventSource(`/events/${eventId}/stream`);
    source.addEventListener("open", () => showLive("on"));
    source.addEventListener("snapshot", (message) => {
      showLive("on");
      applyStatuses(snapshotStatuses(JSON.parse(message.data)), true);
    });
    source.addEventListener("tickets", (message) => {
      applyStatuses(JSON.parse(message.data).tickets, false);
    });
    source.addEventListener("error", () => {
      // The browser retries dropped connections itself; an HTTP error answer ends the stream.
      if (source.readyState === EventSource.CLOSED) {
        showLive("off");
        setTimeout(connect, 5000);
      } else {
        showLive("reconnecting");
      }
    });
  }

  // ---- choosing ----

  function toggle(seat) {
    if (hold) {
      B.say("You already hold seats: pay for them or release them before choosing others.");
      return;
    }
    if (pending) return;
    const state = stateOf(seat);
    if (state === "selected") {
      selected.delete(seat.id);
    } else if (state === "available") {
      if (selected.size >= maxPerHold) {
        B.say(`You can hold up to ${maxPerHold} seats in one order.`, "error");
        return;
      }
      selected.add(seat.id);
    } else {
      B.say(`${seat.label} is ${WORDS[state]}.`);
      return;
    }
    paint(seat);
    renderSelection();
  }

  function listItem(label, priceText, removable) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = label;
    const price = document.createElement("span");
    price.className = "price";
    price.textContent = priceText;
    item.append(name, price);
    if (removable) {
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "remove";
      remove.dataset.id = String(removable.id);
      remove.setAttribute("aria-label", `Remove ${label}`);
      remove.textContent = "✕";
      item.append(remove);
    }
    return item;
  }

  function quantity() {
    const input = $("quantity");
    return Math.max(1, Math.min(maxPerHold, Math.floor(Number(input.value)) || 1));
  }

  function renderSelection() {
    const button = $("hold-button");
    if (seated) {
      const chosen = [...selected].map((id) => seats.get(id));
      chosen.sort((a, b) => order.get(a.id) - order.get(b.id));
      $("selection").replaceChildren(...chosen.map((s) => listItem(s.label, s.priceText, s)));
      $("selection-empty").hidden = chosen.length > 0;
      const total = chosen.reduce((sum, seat) => sum + seat.price, 0);
      $("selection-total").textContent = money(total);
      button.disabled = chosen.length === 0 || pending !== null;
      button.textContent = chosen.length
        ? `Hold ${chosen.length} ${noun(chosen.length)} · ${money(total)}`
        : "Hold seats";
    } else {
      const count = quantity();
      $("selection-total").textContent = money(count * unitPrice);
      button.disabled = pending !== null;
      button.textContent = `Hold ${count} ${noun(count)} · ${money(count * unitPrice)}`;
    }
  }

  // ---- keyboard: one Tab stop for the whole map, arrow keys between seats ----

  const rows = [...root.querySelectorAll(".seat-row")].map((row) => [
    ...row.querySelectorAll("button.seat"),
  ]);
  const position = new Map();
  rows.forEach((row, r) => row.forEach((element, c) => position.set(element, [r, c])));

  function makeTabStop(element) {
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

  function onKey(event) {
    const element = event.target.closest("button.seat");
    if (!element || !position.has(element)) return;
    const [r, c] = position.get(element);
    let next = null;
    if (event.key === "ArrowLeft") next = rows[r][c - 1];
    else if (event.key === "ArrowRight") next = rows[r][c + 1];
    else if (event.key === "ArrowUp" && r > 0) next = nearestIn(rows[r - 1], element);
    else if (event.key === "ArrowDown" && r < rows.length - 1) next = nearestIn(rows[r + 1], element);
    else if (event.key === "Home") next = rows[r][0];
    else if (event.key === "End") next = rows[r][rows[r].length - 1];
    else return;
    event.preventDefault();
    if (next) {
      makeTabStop(next);
      next.focus();
    }
  }

  // ---- holding ----

  // An Idempotency-Key per attempt: a retry of the same request (a double click, a network
  // error, a 503) reuses it, so the server makes at most one hold or one payment.
  const attempts = {};
  function attemptKey(purpose, body) {
    const fingerprint = JSON.stringify(body);
    const attempt = attempts[purpose];
    if (attempt && attempt.fingerprint === fingerprint) return attempt.key;
    const key = B.newKey();
    attempts[purpose] = { fingerprint, key };
    return key;
  }
  function settle(purpose, result) {
    // Only an answer that may not come out differently next time ends the attempt.
    const retryable = result.status === 0 || result.status >= 500 || result.slug === "conflict";
    if (!retryable) delete attempts[purpose];
  }

  function busy(button, text) {
    button.dataset.idleText = button.textContent;
    button.textContent = text;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
  }
  function idle(button) {
    button.textContent = button.dataset.idleText || button.textContent;
    button.disabled = false;
    button.removeAttribute("aria-busy");
  }

  function customer() {
    const input = $("customer");
    if (!input.reportValidity()) return null;
    const value = input.value.trim();
    try {
      localStorage.setItem("boxoffice.customer", value);
    } catch {
      // Storage may be off; the buyer just types it again next time.
    }
    return value;
  }

  async function placeHold(body, button) {
    const key = attemptKey("hold", body);
    pending = "hold";
    pendingIds = new Set(body.ticket_ids || []);
    busy(button, "Holding…");
    const result = await B.api("POST", `/events/${eventId}/reservations`, {
      body,
      idempotencyKey: key,
    });
    pending = null;
    pendingIds = new Set();
    idle(button);
    settle("hold", result);
    if (result.ok) {
      startHold(result.data, result.data.token, Date.parse(result.data.created_at));
      const count = result.data.tickets.length;
      B.say(
        `${count} ${noun(count)} held for you. Pay before the countdown ends to book them.`,
        "success",
      );
      $("held-title").focus();
      return;
    }
    if (result.slug === "tickets-unavailable") refused(result.data || {}, body);
    else B.say(B.describe(result), "error");
    renderSelection();
  }

  function refused(problem, body) {
    const ids = problem.ticket_ids || [];
    if (ids.length) {
      const labels = [];
      for (const id of ids) {
        const seat = seats.get(id);
        if (!seat) continue;
        selected.delete(id);
        // Sold or held, the stream says which in a moment; either way it is not free.
        if (seat.status === "available") seat.status = "reserved";
        paint(seat);
        labels.push(seat.label);
      }
      updateCounts();
      const one = labels.length === 1;
      B.say(
        labels.length
          ? `${B.listOf(labels)} ${one ? "was" : "were"} just taken by someone faster — ` +
              `pick ${one ? "another seat" : "other seats"}.`
          : "Some of those seats were just taken by someone faster — pick others.",
        "error",
      );
      return;
    }
    const where = body.section ? ` in ${body.section}` : "";
    B.say(
      problem.free
        ? `Only ${problem.free} ${noun(problem.free)} left${where} right now — try fewer.`
        : `Sorry, nothing is left${where} right now. Holds that lapse come back on sale.`,
      "error",
    );
  }

  // `serverNow` is the server's time when it answered: the countdown runs on this computer's
  // monotonic clock from there, so a wrong clock on this computer cannot shorten it.
  function startHold(data, token, serverNow) {
    const remaining = Date.parse(data.expires_at) - serverNow;
    hold = {
      id: data.id,
      token,
      ticketIds: new Set(data.tickets.map((ticket) => ticket.id)),
      tickets: data.tickets,
      total: data.total,
      duration: Math.max(Date.parse(data.expires_at) - Date.parse(data.created_at), remaining),
      deadline: performance.now() + remaining,
      warned: false,
    };
    B.holds.save(hold.id, { token, eventId, active: true });
    selected.clear();
    for (const ticket of data.tickets) {
      if (availableCount !== null) {
        if (statusOf.get(ticket.id) === "available") availableCount -= 1;
        statusOf.set(ticket.id, "reserved");
      }
      const seat = seats.get(ticket.id);
      if (seat) seat.status = "reserved";
    }
    paintAll();
    updateCounts();
    renderSelection();
    $("held-list").replaceChildren(
      ...data.tickets.map((ticket) => listItem(ticket.label, money(ticket.price), null)),
    );
    $("held-total").textContent = money(data.total);
    $("pay-button").textContent = `Pay ${money(data.total)}`;
    $("choose").hidden = true;
    $("held").hidden = false;
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 250);
    tick();
  }

  function tick() {
    if (!hold) return;
    const left = Math.max(0, hold.deadline - performance.now());
    const seconds = Math.ceil(left / 1000);
    $("countdown").textContent =
      `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
    $("countdown-bar").value = hold.duration > 0 ? left / hold.duration : 0;
    $("held").dataset.urgent = String(seconds <= 60);
    if (seconds <= 60 && seconds > 0 && !hold.warned && hold.duration > 90_000) {
      hold.warned = true;
      B.say("One minute left to pay for your hold.");
    }
    // A payment in flight decides for itself: the server answers whether it made it in time.
    if (left <= 0 && pending === null) {
      endHold(
        `Your hold expired, so the ${noun(2)} went back on sale. Pick again to book.`,
        "error",
      );
    }
  }

  function endHold(message, kind) {
    const ended = hold;
    if (!ended) return;
    hold = null;
    clearInterval(countdownTimer);
    B.holds.forget(ended.id);
    // Expired or released, its tickets count as free at once (the database agrees).
    for (const id of ended.ticketIds) {
      if (statusOf.has(id) && statusOf.get(id) === "reserved") {
        statusOf.set(id, "available");
        availableCount += 1;
      }
      const seat = seats.get(id);
      if (seat && seat.status === "reserved") seat.status = "available";
    }
    paintAll();
    updateCounts();
    $("held").hidden = true;
    $("choose").hidden = false;
    renderSelection();
    B.say(message, kind);
  }

  // The server's word on a hold we know (or knew) of: resume it, or say how it ended.
  async function reconcileHold(known, restoring = false) {
    if (!known) return;
    const result = await B.api("GET", `/reservations/${known.id}`, { token: known.token });
    if (!result.ok) {
      if (result.status === 404 || result.status === 401) {
        B.holds.forget(known.id);
        if (hold && hold.id === known.id) endHold("Your hold has ended.", "info");
      }
      return;
    }
    const reservation = result.data;
    const current = hold && hold.id === known.id;
    if (reservation.status === "active") {
      if (!current) {
        startHold(reservation, known.token, result.date || Date.now());
        if (restoring) B.say("Welcome back: your hold is still running.", "info");
      }
      return;
    }
    if (reservation.status === "confirmed") {
      B.holds.save(known.id, { active: false });
      if (current) {
        hold = null;
        clearInterval(countdownTimer);
        $("held").hidden = true;
        $("choose").hidden = false;
        paintAll();
      }
      B.say("These tickets are paid for.", "success", {
        href: `/shop/reservations/${known.id}`,
        text: "See your booking",
      });
      return;
    }
    B.holds.forget(known.id);
    const how = reservation.status === "released" ? "was released" : "expired";
    if (current) endHold(`Your hold ${how}, so its ${noun(2)} went back on sale.`, "info");
    else if (restoring) B.say(`Your earlier hold ${how}; its ${noun(2)} went back on sale.`);
  }

  async function pay(event) {
    event.preventDefault();
    if (!hold || pending) return;
    if (!event.currentTarget.reportValidity()) return;
    const current = hold;
    const body = { payment_reference: $("payment-reference").value.trim() };
    const purpose = `pay ${current.id}`;
    const key = attemptKey(purpose, body);
    const button = $("pay-button");
    pending = "pay";
    busy(button, "Paying…");
    const result = await B.api("POST", `/reservations/${current.id}/confirm`, {
      body,
      token: current.token,
      idempotencyKey: key,
    });
    pending = null;
    settle(purpose, result);
    if (result.ok) {
      clearInterval(countdownTimer);
      B.holds.save(current.id, { active: false, booking: result.data });
      window.location.assign(`/shop/reservations/${current.id}`);
      return;
    }
    idle(button);
    if (result.slug === "reservation-expired") {
      endHold(
        `Your hold expired before the payment went through, so nothing was charged and the ` +
          `${noun(2)} went back on sale. Pick again to book.`,
        "error",
      );
    } else if (result.slug === "reservation-not-active" || result.status === 404) {
      await reconcileHold(current);
    } else {
      B.say(B.describe(result), "error");
      tick();
    }
  }

  async function release() {
    if (!hold || pending) return;
    const current = hold;
    const button = $("release-button");
    pending = "release";
    busy(button, "Releasing…");
    const result = await B.api("DELETE", `/reservations/${current.id}`, { token: current.token });
    pending = null;
    idle(button);
    if (result.ok) {
      endHold(`Released. The ${noun(2)} are back on sale for everyone.`, "success");
      $("choose-title").focus();
    } else if (result.slug === "reservation-expired") {
      endHold(`Your hold had already expired; its ${noun(2)} are back on sale.`, "info");
    } else if (result.slug === "reservation-not-active" || result.status === 404) {
      await reconcileHold(current);
    } else {
      B.say(B.describe(result), "error");
      tick();
    }
  }

  // ---- wiring ----

  const venue = root.querySelector(".venue");
  if (venue) {
    venue.addEventListener("click", (event) => {
      const element = event.target.closest("button.seat");
      if (!element) return;
      makeTabStop(element);
      toggle(seats.get(Number(element.dataset.id)));
    });
    venue.addEventListener("keydown", onKey);
    venue.addEventListener("focusin", (event) => {
      if (event.target.matches("button.seat")) makeTabStop(event.target);
    });
    const first = [...seats.values()].find((seat) => seat.status === "available");
    root.querySelectorAll("button.seat").forEach((element) => {
      element.tabIndex = -1;
    });
    if (first || seats.size) makeTabStop((first || seats.values().next().value).element);
  }

  const selection = $("selection");
  if (selection) {
    selection.addEventListener("click", (event) => {
      const button = event.target.closest("button.remove");
      if (!button) return;
      const seat = seats.get(Number(button.dataset.id));
      selected.delete(seat.id);
      paint(seat);
      renderSelection();
      seat.element.focus();
    });
  }

  $("hold-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (hold || pending) return;
    const buyer = customer();
    if (buyer === null) return;
    if (seated) {
      if (!selected.size) {
        B.say("Pick at least one seat on the map first.", "error");
        return;
      }
      const ids = [...selected].sort((a, b) => a - b);
      placeHold({ ticket_ids: ids, customer: buyer }, $("hold-button"));
    } else {
      placeHold({ quantity: quantity(), customer: buyer }, $("hold-button"));
    }
  });

  const bestForm = $("best-form");
  if (bestForm) {
    bestForm.addEventListener("submit", (event) => {
      event.preventDefault();
      if (hold || pending || !bestForm.reportValidity()) return;
      const buyer = customer();
      if (buyer === null) return;
      const count = Number($("best-quantity").value);
      if (count > maxPerHold) {
        B.say(`You can hold up to ${maxPerHold} seats in one order.`, "error");
        return;
      }
      const body = { quantity: count, customer: buyer };
      const section = $("best-section").value;
      if (section) body.section = section;
      for (const id of selected) {
        selected.delete(id);
        paint(seats.get(id));
      }
      placeHold(body, $("best-button"));
    });
  }

  if (!seated) {
    const input = $("quantity");
    const step = (delta) => {
      input.value = String(Math.max(1, Math.min(maxPerHold, quantity() + delta)));
      renderSelection();
    };
    $("quantity-down").addEventListener("click", () => step(-1));
    $("quantity-up").addEventListener("click", () => step(1));
    input.addEventListener("input", renderSelection);
  }

  $("pay-form").addEventListener("submit", pay);
  $("release-button").addEventListener("click", release);
  // Back to this page from the booking page: the cached copy shows a hold that has ended.
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) window.location.reload();
  });

  try {
    $("customer").value = localStorage.getItem("boxoffice.customer") || "";
  } catch {
    // No storage: the field starts empty.
  }
  renderSelection();
  connect();

  // A hold made in this tab before a reload: pick up where the buyer left off.
  const saved = B.holds.activeFor(eventId);
  if (saved) {
    pending = "restore";
    reconcileHold({ id: saved.id, token: saved.token }, true).finally(() => {
      pending = null;
      renderSelection();
    });
  }
})();
