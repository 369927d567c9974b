// The event page: pick seats (or a quantity), hold them, pay or release, and watch the other
// buyers' holds arrive live from GET /events/{id}/stream. This module wires the page: the
// events it hears move the state (state.js) through its transitions, then the views draw it.
// An event with a waiting room (queue.js) opens the map and the hold controls only in the
// buyer's turn, and each hold carries the turn's pass.

import { createShopApi } from "./api.js";
import { B } from "./boxoffice.js";
import { quantity, renderCountdown, renderHold, renderSelection } from "./panel.js";
import {
  WORDS,
  paintSeat,
  paintSeats,
  readSeats,
  renderCounts,
  renderLive,
  wireSeatMap,
} from "./seatmap.js";
import * as S from "./state.js";
import { connect } from "./feed.js";
import { createWaitingRoom } from "./queue.js";

const root = document.getElementById("shop");
if (root) start(root);

function start(root) {
  const $ = (id) => document.getElementById(id);
  const eventId = root.dataset.eventId;
  const seated = root.dataset.kind === "seated";
  const config = {
    seated,
    maxPerHold: Number(root.dataset.maxPerHold),
    unitPrice: Number(root.dataset.unitPrice || 0),
    money: B.money({
      symbol: root.dataset.currencySymbol,
      exponent: Number(root.dataset.currencyExponent),
    }),
    noun: (n) => (seated ? (n === 1 ? "seat" : "seats") : n === 1 ? "ticket" : "tickets"),
  };
  const { money, noun, maxPerHold } = config;
  const seats = readSeats(root);
  const api = createShopApi(eventId);
  const state = S.createState([...seats.values()].map((seat) => [seat.id, seat.initialStatus]));
  const idleText = {
    best: $("best-button") ? $("best-button").textContent : "",
    release: $("release-button").textContent,
  };
  const view = { config, seats, idleText };
  const room =
    root.dataset.queue === "true"
      ? createWaitingRoom({ root, eventId, api, onChange: () => renderPanel() })
      : null;

  // ---- drawing the state ----

  function renderPanel() {
    root.dataset.phase = state.phase;
    renderSelection(state, view);
    renderHold(state, view);
    if (room) room.render(state);
  }

  function renderAll() {
    paintSeats(state, seats);
    renderCounts(state, root, seats);
    renderPanel();
  }

  const labelsOf = (ids) => ids.map((id) => seats.get(id).label);

  // ---- the live stream ----

  function onStatuses(pairs, snapshot) {
    const { changed, taken, holdTouched } = S.applyStatuses(state, pairs, snapshot);
    paintSeats(state, seats, changed);
    renderCounts(state, root, seats);
    if (taken.length) {
      renderPanel();
      const one = taken.length === 1;
      B.say(
        `${B.listOf(labelsOf(taken))} ${one ? "was" : "were"} just taken by another buyer — ` +
          `pick ${one ? "another seat" : "other seats"}.`,
        "error",
      );
    }
    if (holdTouched) reconcileHold(state.hold);
  }

  function onLive(live) {
    S.setLive(state, live);
    renderLive(state);
  }

  // ---- choosing ----

  function toggle(seat) {
    if (state.hold) {
      B.say("You already hold seats: pay for them or release them before choosing others.");
      return;
    }
    if (S.isBusy(state)) return;
    const shown = S.seatState(state, seat.id);
    if (shown === "selected") {
      S.unchoose(state, seat.id);
    } else if (shown === "available") {
      if (state.selected.size >= maxPerHold) {
        B.say(`You can hold up to ${maxPerHold} seats in one order.`, "error");
        return;
      }
      S.choose(state, seat.id);
    } else {
      B.say(`${seat.label} is ${WORDS[shown]}.`);
      return;
    }
    paintSeat(state, seat);
    renderPanel();
  }

  // ---- holding ----

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

  // A hold on an event with a waiting room: with the turn's pass, for the customer who queued.
  function withPass(body) {
    if (!room) return body;
    const pass = room.pass();
    if (!pass) {
      B.say("Wait for your turn in the waiting room before holding tickets.", "error");
      return null;
    }
    return { ...body, customer: pass.customer, queue_pass: pass.token };
  }

  async function placeHold(request, via) {
    const body = withPass(request);
    if (body === null) return;
    S.requestHold(state, body, via);
    renderPanel();
    const result = await api.reserve(body);
    if (result.ok) {
      placed(result.data, result.data.token, Date.parse(result.data.created_at));
      if (room) room.passUsed(result.data.id);
      const count = result.data.tickets.length;
      B.say(
        `${count} ${noun(count)} held for you. Pay before the countdown ends to book them.`,
        "success",
      );
      $("held-title").focus();
      return;
    }
    const problem = (result.slug === "tickets-unavailable" && result.data) || {};
    const taken = S.holdRefused(state, problem.ticket_ids || []);
    paintSeats(state, seats, taken);
    renderCounts(state, root, seats);
    renderPanel();
    if (result.slug === "tickets-unavailable") refused(problem, taken, body);
    else if (room && result.slug === "queue-pass-required") {
      room.passRefused(result);
      B.say(`${B.describe(result)} Join the queue again to choose.`, "error");
    } else B.say(B.describe(result), "error");
  }

  function refused(problem, taken, body) {
    if ((problem.ticket_ids || []).length) {
      const labels = labelsOf(taken);
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

  // A hold the server made (or still has) for this tab: show it and start its countdown.
  function placed(data, token, serverNow) {
    S.holdPlaced(state, data, token, serverNow, performance.now());
    B.holds.save(state.hold.id, { token, eventId, active: true });
    renderAll();
    keepTicking(state.hold);
  }

  // ---- the countdown ----

  // Ticks while this hold runs in this tab, and stops by itself once it does not.
  function keepTicking(hold) {
    if (state.hold !== hold || !S.holdsSeats(state)) return;
    tick();
    setTimeout(() => keepTicking(hold), 250);
  }

  function tick() {
    if (!state.hold || !S.holdsSeats(state)) return;
    const hold = state.hold;
    const left = S.timeLeft(state, performance.now());
    renderCountdown(hold, left);
    const seconds = Math.ceil(left / 1000);
    if (seconds <= 60 && seconds > 0 && !hold.warned && hold.duration > 90_000) {
      S.warned(state);
      B.say("One minute left to pay for your hold.");
    }
    // A payment in flight decides for itself: the server answers whether it made it in time.
    if (left <= 0 && state.phase === "held") {
      endHold(
        "expired",
        `Your hold expired, so the ${noun(2)} went back on sale. Pick again to book.`,
        "error",
      );
    }
  }

  function endHold(outcome, message, kind) {
    const ended = S.holdEnded(state, outcome);
    if (!ended) return;
    B.holds.forget(ended.id);
    renderAll();
    B.say(message, kind);
  }

  // The server's word on a hold we know (or knew) of: resume it, or say how it ended.
  async function reconcileHold(known, restoring = false) {
    if (!known) return;
    const result = await api.reservation(known);
    const current = state.hold !== null && state.hold.id === known.id && S.holdsSeats(state);
    if (!result.ok) {
      if (result.status === 404 || result.status === 401) {
        B.holds.forget(known.id);
        if (current) endHold("expired", "Your hold has ended.", "info");
      }
      return;
    }
    const reservation = result.data;
    if (reservation.status === "active") {
      // Not while another hold or request is under way: that one is this tab's business now.
      if (!current && (state.phase === "restoring" || (!state.hold && !S.isBusy(state)))) {
        placed(reservation, known.token, result.date || Date.now());
        if (restoring) B.say("Welcome back: your hold is still running.", "info");
      }
      return;
    }
    if (reservation.status === "confirmed") {
      B.holds.save(known.id, { active: false });
      if (current) {
        S.holdEnded(state, "booked");
        renderAll();
      }
      B.say("These tickets are paid for.", "success", {
        href: `/shop/reservations/${known.id}`,
        text: "See your booking",
      });
      return;
    }
    B.holds.forget(known.id);
    const how = reservation.status === "released" ? "was released" : "expired";
    const outcome = reservation.status === "released" ? "released" : "expired";
    if (current) endHold(outcome, `Your hold ${how}, so its ${noun(2)} went back on sale.`, "info");
    else if (restoring) B.say(`Your earlier hold ${how}; its ${noun(2)} went back on sale.`);
  }

  // ---- paying and releasing ----

  async function pay(event) {
    event.preventDefault();
    if (state.phase !== "held") return;
    const current = state.hold;
    S.startPaying(state);
    renderPanel();
    const result = await api.checkout(current);
    if (result.ok) {
      // The provider's page takes over; it sends the buyer back to the booking's page,
      // which waits for the provider's word that the hold is paid.
      window.location.assign(result.data.checkout_url);
      return;
    }
    S.answered(state);
    renderPanel();
    if (result.slug === "reservation-expired") {
      endHold(
        "expired",
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
    if (state.phase !== "held") return;
    const current = state.hold;
    S.startReleasing(state);
    renderPanel();
    const result = await api.release(current);
    S.answered(state);
    renderPanel();
    if (result.ok) {
      endHold("released", `Released. The ${noun(2)} are back on sale for everyone.`, "success");
      $("choose-title").focus();
    } else if (result.slug === "reservation-expired") {
      endHold("expired", `Your hold had already expired; its ${noun(2)} are back on sale.`, "info");
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
    const all = [...seats.values()];
    const first = all.find((seat) => seat.initialStatus === "available") || all[0];
    wireSeatMap(root, venue, first, (id) => toggle(seats.get(id)));
  }

  const selection = $("selection");
  if (selection) {
    selection.addEventListener("click", (event) => {
      const button = event.target.closest("button.remove");
      if (!button) return;
      const seat = seats.get(Number(button.dataset.id));
      S.unchoose(state, seat.id);
      paintSeat(state, seat);
      renderPanel();
      seat.element.focus();
    });
  }

  $("hold-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.hold || S.isBusy(state)) return;
    const buyer = customer();
    if (buyer === null) return;
    if (seated) {
      if (!state.selected.size) {
        B.say("Pick at least one seat on the map first.", "error");
        return;
      }
      const ids = [...state.selected].sort((a, b) => a - b);
      placeHold({ ticket_ids: ids, customer: buyer }, "hold-button");
    } else {
      placeHold({ quantity: quantity(config), customer: buyer }, "hold-button");
    }
  });

  const bestForm = $("best-form");
  if (bestForm) {
    bestForm.addEventListener("submit", (event) => {
      event.preventDefault();
      if (state.hold || S.isBusy(state) || !bestForm.reportValidity()) return;
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
      const chosen = [...state.selected];
      S.clearSelection(state);
      paintSeats(state, seats, chosen);
      placeHold(body, "best-button");
    });
  }

  if (!seated) {
    const input = $("quantity");
    const step = (delta) => {
      input.value = String(Math.max(1, Math.min(maxPerHold, quantity(config) + delta)));
      renderPanel();
    };
    $("quantity-down").addEventListener("click", () => step(-1));
    $("quantity-up").addEventListener("click", () => step(1));
    input.addEventListener("input", renderPanel);
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
  if (room) room.start();
  renderPanel();
  connect(eventId, { onLive, onStatuses });

  // A hold made in this tab before a reload: pick up where the buyer left off.
  const saved = B.holds.activeFor(eventId);
  if (saved) {
    S.startRestoring(state);
    renderPanel();
    reconcileHold({ id: saved.id, token: saved.token }, true).finally(() => {
      S.restored(state);
      renderPanel();
    });
  }
}
