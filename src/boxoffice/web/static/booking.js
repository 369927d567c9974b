// The confirmation page: the booking as the server has it, read with the hold's token that
// this tab kept when it made the hold (the page itself carries no secret).
"use strict";

(() => {
  const B = window.Boxoffice;
  const root = document.getElementById("booking");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const reservationId = root.dataset.reservationId;

  const STATUS = {
    confirmed: { badge: "✓ Confirmed", title: "You're going!" },
    active: { badge: "Not paid yet", title: "Your hold" },
    released: { badge: "Released", title: "This hold was released" },
    expired: { badge: "Expired", title: "This hold expired" },
  };

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  function render(reservation, event) {
    const money = B.money(B.currency(reservation.currency));
    const status = STATUS[reservation.status] || { badge: reservation.status, title: "Your booking" };
    $("booking-title").textContent = status.title;
    $("booking-status").textContent = status.badge;
    $("booking-status").dataset.status = reservation.status;
    document.title = `${status.title} · boxoffice`;
    if (event) {
      $("booking-event").textContent = event.name;
      $("booking-when").setAttribute("datetime", event.starts_at);
      $("booking-venue").textContent = event.venue ? `· ${event.venue}` : "";
      B.localiseTimes(root);
    }
    $("booking-code").textContent = reservation.booking_code || "—";
    if (reservation.booking_url) {
      // The booking page's own link (its secret after `#`): it works in any browser.
      const link = new URL(reservation.booking_url);
      $("booking-link").href = `/booking${link.hash}`;
      $("booking-link").hidden = false;
    }
    $("booking-customer").textContent = reservation.customer;
    $("booking-total").textContent = money(reservation.total);
    $("booking-tickets").replaceChildren(
      ...reservation.tickets.map((ticket) => {
        const row = document.createElement("tr");
        const word = ticket.status === "booked" ? "✓ Booked" : ticket.status;
        row.append(
          cell(ticket.label),
          cell(ticket.section || "General admission"),
          cell(ticket.row || "—"),
          cell(ticket.seat === null ? "—" : String(ticket.seat)),
          cell(money(ticket.price)),
          cell(reservation.status === "confirmed" ? word : "—"),
        );
        row.dataset.status = ticket.status;
        return row;
      }),
    );
    $("back-to-event").href = `/shop/events/${reservation.event_id}`;
    $("booking-loading").hidden = true;
    $("booking-details").hidden = false;
    if (reservation.status === "confirmed") {
      const count = reservation.tickets.length;
      B.say(`Payment received: ${count} ticket${count === 1 ? " is" : "s are"} booked for you.`, "success");
    } else if (reservation.status === "active") {
      B.say("Waiting for the payment provider to confirm your payment…", "info", {
        href: `/shop/events/${reservation.event_id}`,
        text: "Back to the event",
      });
      // The provider's notification books the hold; until then, ask again.
      setTimeout(load, 1000);
    }
  }

  async function load() {
    const record = B.holds.get(reservationId);
    if (!record || !record.token) {
      $("booking-loading").hidden = true;
      B.say(
        "This booking can be shown only in the browser tab that made it: its secret never " +
          "leaves that tab.",
        "info",
        { href: "/", text: "See all events" },
      );
      return;
    }
    const result = await B.api("GET", `/reservations/${reservationId}`, { token: record.token });
    if (!result.ok) {
      $("booking-loading").hidden = true;
      B.say(
        result.status === 404 ? "We could not find this booking." : B.describe(result),
        "error",
      );
      return;
    }
    const event = await B.api("GET", `/events/${result.data.event_id}`);
    render(result.data, event.ok ? event.data : null);
  }

  $("print-button").addEventListener("click", () => window.print());
  load();
})();
