// The booking page: the secret is in the URL's fragment (after `#`), which the browser never
// sends to a server; it travels only in the Authorization header of the API calls.
"use strict";

(() => {
  const B = window.Boxoffice;
  const root = document.getElementById("tickets-page");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const secret = decodeURIComponent(window.location.hash.slice(1));
  const idHex = secret.split(".")[0] || "";
  const bookingId = idHex.length === 32
    ? `${idHex.slice(0, 8)}-${idHex.slice(8, 12)}-${idHex.slice(12, 16)}-${idHex.slice(16, 20)}-${idHex.slice(20)}`
    : null;

  function card(ticket, cancelled) {
    const item = document.createElement("li");
    item.className = "ticket-card";
    item.dataset.code = ticket.code;
    const title = document.createElement("p");
    title.className = "ticket-label";
    title.textContent = ticket.label;
    const qr = document.createElement("img");
    qr.src = ticket.qr;
    qr.alt = `QR code of ticket ${ticket.code}`;
    qr.className = "ticket-qr";
    const code = document.createElement("p");
    code.className = "ticket-code";
    code.textContent = ticket.code.replace(/(.{4})(?=.)/g, "$1 ");
    const state = document.createElement("p");
    state.className = "ticket-state";
    state.textContent = cancelled
      ? "Not valid: the booking was cancelled"
      : ticket.checked_in_at
        ? `Checked in ${new Date(ticket.checked_in_at).toLocaleString()}`
        : "Valid";
    item.append(title, qr, code, state);
    return item;
  }

  function render(booking) {
    const money = B.money(B.currency(booking.currency));
    const cancelled = booking.status === "cancelled";
    $("tickets-status").textContent = cancelled ? "Cancelled" : "✓ Confirmed";
    $("tickets-status").dataset.status = booking.status;
    $("tickets-event").textContent = booking.event_name;
    $("tickets-when").setAttribute("datetime", booking.starts_at);
    $("tickets-venue").textContent = booking.venue ? `· ${booking.venue}` : "";
    $("tickets-code").textContent = booking.code;
    $("tickets-customer").textContent = booking.customer;
    $("tickets-total").textContent = money(booking.total);
    $("ticket-cards").replaceChildren(...booking.tickets.map((t) => card(t, cancelled)));
    B.localiseTimes(root);
    $("tickets-loading").hidden = true;
    $("tickets-details").hidden = false;
    if (cancelled) B.say("This booking was cancelled; its tickets are no longer valid.", "error");
  }

  async function downloadCalendar() {
    const response = await fetch(`/bookings/${bookingId}/calendar.ics`, {
      headers: { Authorization: `Bearer ${secret}` },
    });
    if (!response.ok) {
      B.say("The calendar entry could not be made; try again.", "error");
      return;
    }
    const url = URL.createObjectURL(await response.blob());
    const link = document.createElement("a");
    link.href = url;
    link.download = `${$("tickets-code").textContent}.ics`;
    link.click();
    URL.revokeObjectURL(url);
  }

  async function load() {
    if (!bookingId) {
      $("tickets-loading").hidden = true;
      B.say("This link is incomplete: open the whole link from your e-mail.", "error");
      return;
    }
    const result = await B.api("GET", `/bookings/${bookingId}`, { token: secret });
    if (!result.ok) {
      $("tickets-loading").hidden = true;
      B.say(result.status === 404 ? "We could not find this booking." : B.describe(result), "error");
      return;
    }
    render(result.data);
  }

  $("calendar-button").addEventListener("click", downloadCalendar);
  $("tickets-print").addEventListener("click", () => window.print());
  load();
})();
