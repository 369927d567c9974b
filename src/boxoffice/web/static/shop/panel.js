// The order panel, drawn from the state: the seats (or number of tickets) chosen, the buttons
// and what they are busy with, and the hold with its countdown.

import { busyWith, isBusy } from "./state.js";

const $ = (id) => document.getElementById(id);

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

// The number of tickets asked for (general admission), within 1 and the most per hold.
export function quantity(config) {
  const input = $("quantity");
  return Math.max(1, Math.min(config.maxPerHold, Math.floor(Number(input.value)) || 1));
}

// A button as the request it sent leaves it: busy with its own words, or as `idle` says.
function button(element, busyText, idle) {
  if (!element) return;
  if (busyText) {
    element.textContent = busyText;
    element.disabled = true;
    element.setAttribute("aria-busy", "true");
  } else {
    element.textContent = idle.text;
    element.disabled = idle.disabled;
    element.removeAttribute("aria-busy");
  }
}

function holdingVia(state, id) {
  return busyWith(state, "hold") && state.request.via === id;
}

// `view`: {config, seats, idleText} (idleText: the buttons' words as the server wrote them).
export function renderSelection(state, { config, seats, idleText }) {
  const { money, noun } = config;
  let idle;
  if (config.seated) {
    const chosen = [...state.selected].map((id) => seats.get(id));
    chosen.sort((a, b) => a.index - b.index);
    $("selection").replaceChildren(...chosen.map((s) => listItem(s.label, s.priceText, s)));
    $("selection-empty").hidden = chosen.length > 0;
    const total = chosen.reduce((sum, seat) => sum + seat.price, 0);
    $("selection-total").textContent = money(total);
    idle = {
      disabled: chosen.length === 0 || isBusy(state),
      text: chosen.length
        ? `Hold ${chosen.length} ${noun(chosen.length)} · ${money(total)}`
        : "Hold seats",
    };
  } else {
    const count = quantity(config);
    $("selection-total").textContent = money(count * config.unitPrice);
    idle = {
      disabled: isBusy(state),
      text: `Hold ${count} ${noun(count)} · ${money(count * config.unitPrice)}`,
    };
  }
  button($("hold-button"), holdingVia(state, "hold-button") && "Holding…", idle);
  button($("best-button"), holdingVia(state, "best-button") && "Holding…", {
    disabled: false,
    text: idleText.best,
  });
}

export function renderHold(state, { config, idleText }) {
  const hold = state.hold;
  $("choose").hidden = hold !== null;
  $("held").hidden = hold === null;
  if (!hold) return;
  const { money } = config;
  $("held-list").replaceChildren(
    ...hold.tickets.map((ticket) => listItem(ticket.label, money(ticket.price), null)),
  );
  $("held-total").textContent = money(hold.total);
  // Paid, the page is on its way to the booking page: the button stays busy until it leaves.
  const paying = busyWith(state, "pay") || state.phase === "booked";
  button($("pay-button"), paying && "Paying…", {
    disabled: false,
    text: `Pay ${money(hold.total)}`,
  });
  button($("release-button"), busyWith(state, "release") && "Releasing…", {
    disabled: false,
    text: idleText.release,
  });
}

export function renderCountdown(hold, left) {
  const seconds = Math.ceil(left / 1000);
  $("countdown").textContent =
    `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
  $("countdown-bar").value = hold.duration > 0 ? left / hold.duration : 0;
  $("held").dataset.urgent = String(seconds <= 60);
}
