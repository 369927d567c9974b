// The admin page: sign in with the admin token, create events, see their counts, change
// their on-sale settings (PATCH /events/{id}), watch their waiting rooms, and look after
// their bookings: search, CSV, cancel one; cancel or delete the event.
"use strict";

(() => {
  const B = window.Boxoffice;
  const root = document.getElementById("admin");
  if (!root) return;
  const $ = (id) => document.getElementById(id);

  // Typed in by the organiser and kept in this tab's sessionStorage only; sent solely as
  // `Authorization: Bearer` to the JSON API.
  const TOKEN_KEY = "boxoffice.admin-token";
  let token = null;

  // GET /admin/session answers 200 for the admin token, 401 without one and 403 for another;
  // it reads nothing and changes nothing.
  async function tokenWorks(candidate) {
    const result = await B.api("GET", "/admin/session", { token: candidate });
    if (result.ok && result.data && result.data.role === "admin") return true;
    if (result.status === 401 || result.status === 403) return false;
    throw result;
  }

  function signIn(candidate) {
    token = candidate;
    sessionStorage.setItem(TOKEN_KEY, candidate);
    $("unlock").hidden = true;
    $("admin-area").hidden = false;
    loadEvents();
  }

  function signOut(message) {
    token = null;
    sessionStorage.removeItem(TOKEN_KEY);
    $("events-body").replaceChildren();
    $("admin-area").hidden = true;
    $("unlock").hidden = false;
    $("admin-token").value = "";
    if (message) B.say(message, "error");
  }

  $("token-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const candidate = $("admin-token").value.trim();
    if (!event.currentTarget.reportValidity()) return;
    try {
      if (await tokenWorks(candidate)) {
        B.say("Signed in.", "success");
        signIn(candidate);
      } else {
        B.say("That is not the admin token.", "error");
        $("admin-token").focus();
      }
    } catch (result) {
      B.say(B.describe(result), "error");
    }
  });

  $("forget-token").addEventListener("click", () => {
    signOut(null);
    B.say("The token is forgotten in this tab.", "info");
    $("admin-token").focus();
  });

  // ---- the on-sale settings (the create form and each event's edit form) ----

  const pad = (n) => String(n).padStart(2, "0");

  // A moment as a datetime-local input shows it: this computer's time zone, to the minute.
  function localInput(iso) {
    const at = new Date(iso);
    return (
      `${at.getFullYear()}-${pad(at.getMonth() + 1)}-${pad(at.getDate())}` +
      `T${pad(at.getHours())}:${pad(at.getMinutes())}`
    );
  }

  // The fields, from #sale-template, into `slot`; the waiting room's own only while it is on.
  function addSaleFields(slot) {
    slot.append($("sale-template").content.cloneNode(true));
    const fields = slot.querySelector(".sale-fields");
    const toggle = fields.querySelector('[name="queue_enabled"]');
    const showQueue = () => {
      const queue = fields.querySelector(".queue-fields");
      queue.hidden = !toggle.checked;
      // Hidden fields must not block the form's validation.
      queue.disabled = !toggle.checked;
    };
    toggle.addEventListener("change", showQueue);
    showQueue();
    return fields;
  }

  function field(fields, name) {
    return fields.querySelector(`[name="${name}"]`);
  }

  // Every member as the API takes it; null for an empty field.
  function saleValues(fields) {
    const moment = (name) => {
      const value = field(fields, name).value;
      return value ? new Date(value).toISOString() : null;
    };
    const count = (name) => {
      const value = field(fields, name).value;
      return value === "" ? null : Number(value);
    };
    const minutes = count("queue_pass_minutes");
    return {
      sales_start_at: moment("sales_start_at"),
      sales_end_at: moment("sales_end_at"),
      max_tickets_per_customer: count("max_tickets_per_customer"),
      queue_enabled: field(fields, "queue_enabled").checked,
      queue_admit_per_minute: count("queue_admit_per_minute"),
      queue_max_shoppers: count("queue_max_shoppers"),
      queue_pass_seconds: minutes === null ? null : Math.round(minutes * 60),
    };
  }

  function fillSale(fields, event) {
    field(fields, "sales_start_at").value = event.sales_start_at
      ? localInput(event.sales_start_at)
      : "";
    // Sales end when the event starts unless set otherwise: that default reads as empty.
    field(fields, "sales_end_at").value =
      event.sales_end_at && Date.parse(event.sales_end_at) !== Date.parse(event.starts_at)
        ? localInput(event.sales_end_at)
        : "";
    const number = (value) => (value === null || value === undefined ? "" : String(value));
    field(fields, "max_tickets_per_customer").value = number(event.max_tickets_per_customer);
    field(fields, "queue_enabled").checked = Boolean(event.queue_enabled);
    field(fields, "queue_enabled").dispatchEvent(new Event("change"));
    field(fields, "queue_admit_per_minute").value = number(event.queue_admit_per_minute);
    field(fields, "queue_max_shoppers").value = number(event.queue_max_shoppers);
    field(fields, "queue_pass_minutes").value = event.queue_pass_seconds
      ? String(event.queue_pass_seconds / 60)
      : "";
  }

  // ---- the events table ----

  function cell(content, className) {
    const td = document.createElement("td");
    if (className) td.className = className;
    td.append(content);
    return td;
  }

  async function loadEvents() {
    const events = [];
    let after = null;
    // Keyset pages of 100; an admin page with more than 2,000 events wants a search anyway.
    for (let page = 0; page < 20; page += 1) {
      const query = after ? `?limit=100&after=${after}` : "?limit=100";
      const result = await B.api("GET", `/events${query}`);
      if (!result.ok) {
        B.say(B.describe(result), "error");
        return;
      }
      events.push(...result.data.items);
      after = result.data.next_after;
      if (!after) break;
    }
    if (!token) return;
    $("events-body").replaceChildren(...events.flatMap(eventRows));
    if (!events.length) {
      const row = document.createElement("tr");
      const empty = cell("No events yet.");
      empty.colSpan = 7;
      row.append(empty);
      $("events-body").replaceChildren(row);
    }
  }

  // An event's row, and the row under it with its waiting room's counts and settings form.
  function eventRows(event) {
    const number = (n) => n.toLocaleString("en-US");
    const row = document.createElement("tr");
    const link = document.createElement("a");
    link.href = `/shop/events/${event.id}`;
    link.textContent = event.name;
    const when = document.createElement("time");
    when.dateTime = event.starts_at;
    when.textContent = B.dateFormat.format(Date.parse(event.starts_at));
    const name = cell(link);
    if (event.cancelled_at) {
      const badge = document.createElement("span");
      badge.className = "badge badge-sold";
      badge.textContent = "Cancelled";
      name.append(" ", badge);
    }
    if (event.queue_enabled) {
      const badge = document.createElement("span");
      badge.className = "badge badge-queue";
      badge.textContent = "Waiting room";
      name.append(" ", badge);
    }
    row.append(
      name,
      cell(when),
      cell(event.kind === "seated" ? "Numbered seats" : "General admission"),
      cell(number(event.ticket_count), "num"),
      cell(number(event.counts.available), "num"),
      cell(number(event.counts.reserved), "num"),
      cell(number(event.counts.booked), "num"),
    );
    row.dataset.eventId = event.id;

    const settings = $("settings-template").content.firstElementChild.cloneNode(true);
    settings.dataset.settingsFor = event.id;
    settings.querySelector("summary .visually-hidden").textContent = ` of ${event.name}`;
    const fields = addSaleFields(settings.querySelector(".sale-slot"));
    fillSale(fields, event);
    // What the form showed to begin with: only the members changed since are sent.
    const initial = saleValues(fields);
    const form = settings.querySelector(".settings-form");
    form.addEventListener("submit", (submitted) => {
      submitted.preventDefault();
      saveSettings(event, form, fields, initial);
    });
    const stats = settings.querySelector(".queue-stats");
    stats.hidden = !event.queue_enabled;
    if (event.queue_enabled) {
      settings.querySelector(".queue-stats-title").textContent = `Waiting room of ${event.name}`;
      const refresh = settings.querySelector(".refresh-queue");
      refresh.setAttribute("aria-label", `Refresh the queue counts of ${event.name}`);
      refresh.addEventListener("click", () => loadQueue(event.id, stats));
      loadQueue(event.id, stats);
    }
    organiserPanel(event, settings.querySelector("details.organiser"));
    return [row, settings];
  }

  // The admin's answer to a refused token, or the problem's words.
  function refused(result) {
    if (result.status === 401 || result.status === 403) {
      signOut("The admin token was refused; sign in again.");
    } else {
      B.say(B.describe(result), "error");
    }
  }

  // ---- an event's bookings, and cancelling or deleting it ----

  function organiserPanel(event, panel) {
    panel.querySelector("summary .visually-hidden").textContent = ` of ${event.name}`;
    const body = panel.querySelector(".bookings-body");
    const more = panel.querySelector(".more-bookings");
    const search = panel.querySelector(".bookings-search");
    const query = search.querySelector('[name="booking_q"]');
    const money = B.money(B.currency(event.currency));
    let next = null;
    let loaded = false;

    function bookingRow(booking) {
      const row = document.createElement("tr");
      const checkedIn = booking.tickets.filter((t) => t.checked_in_at).length;
      const actions = document.createElement("td");
      if (booking.status === "confirmed") {
        const cancel = document.createElement("button");
        cancel.type = "button";
        cancel.className = "link-button";
        cancel.textContent = "Cancel";
        cancel.setAttribute("aria-label", `Cancel booking ${booking.code}`);
        cancel.addEventListener("click", () => cancelBooking(booking, cancel));
        actions.append(cancel);
      }
      row.append(
        cell(booking.code),
        cell(booking.customer),
        cell(booking.status === "cancelled" ? "Cancelled" : "Confirmed"),
        cell(String(booking.tickets.length), "num"),
        cell(String(checkedIn), "num"),
        cell(money(booking.total), "num"),
        actions,
      );
      return row;
    }

    // GET /events/{id}/bookings: the first page (again) or the next one.
    async function load(append) {
      const params = new URLSearchParams({ limit: "50" });
      if (query.value.trim()) params.set("q", query.value.trim());
      if (append && next) params.set("after", next);
      const result = await B.api("GET", `/events/${event.id}/bookings?${params}`, { token });
      if (!result.ok) {
        refused(result);
        return;
      }
      const rows = result.data.items.map(bookingRow);
      if (append) body.append(...rows);
      else if (rows.length) body.replaceChildren(...rows);
      else {
        const empty = document.createElement("tr");
        const none = cell(query.value.trim() ? "No booking matches." : "No bookings yet.");
        none.colSpan = 7;
        empty.append(none);
        body.replaceChildren(empty);
      }
      next = result.data.next_after;
      more.hidden = !next;
    }

    async function cancelBooking(booking, button) {
      const release = panel.querySelector('[name="release_seats"]').checked;
      const seats = release ? "its seats go back on sale" : "its seats are withdrawn from sale";
      if (!window.confirm(`Cancel booking ${booking.code} of ${booking.customer}? It is refunded and ${seats}.`)) {
        return;
      }
      button.disabled = true;
      const result = await B.api("POST", `/bookings/${booking.id}/cancel`, {
        body: { release_seats: release },
        token,
      });
      if (result.ok) {
        B.say(`Cancelled booking ${booking.code}; its payment will be refunded.`, "success");
        button.closest("tr").replaceWith(bookingRow(result.data));
      } else {
        button.disabled = false;
        refused(result);
      }
    }

    // The CSV needs the token in a header, so it is fetched and handed over as a file.
    async function downloadCsv() {
      const params = new URLSearchParams();
      if (query.value.trim()) params.set("q", query.value.trim());
      let response;
      try {
        response = await fetch(`/events/${event.id}/bookings.csv?${params}`, {
          headers: { Authorization: `Bearer ${token}` },
          cache: "no-store",
        });
      } catch {
        B.say(B.describe({ status: 0 }), "error");
        return;
      }
      if (!response.ok) {
        const data = await response.json().catch(() => null);
        refused({ status: response.status, data });
        return;
      }
      const url = URL.createObjectURL(await response.blob());
      const anchor = document.createElement("a");
      anchor.href = url;
      anchor.download = `bookings-${event.id}.csv`;
      document.body.append(anchor);
      anchor.click();
      anchor.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    }

    async function cancelEvent() {
      const reason = window.prompt(
        `Cancel “${event.name}”? Every hold is released and every booking cancelled and ` +
          "refunded. Why (optional, kept in the audit log)?",
        "",
      );
      if (reason === null) return;
      const body = reason.trim() ? { reason: reason.trim() } : {};
      const result = await B.api("POST", `/events/${event.id}/cancel`, { body, token });
      if (result.ok) {
        const done = result.data;
        B.say(
          `Cancelled “${event.name}”: ${done.bookings_cancelled} booking(s) cancelled, ` +
            `${done.holds_released} hold(s) released.`,
          "success",
        );
        loadEvents();
      } else {
        refused(result);
      }
    }

    async function deleteEvent() {
      if (!window.confirm(`Delete “${event.name}” and all its tickets? This cannot be undone.`)) {
        return;
      }
      const result = await B.api("DELETE", `/events/${event.id}`, { token });
      if (result.ok) {
        B.say(`Deleted “${event.name}”.`, "success");
        loadEvents();
      } else {
        refused(result);
      }
    }

    panel.addEventListener("toggle", () => {
      if (panel.open && !loaded) {
        loaded = true;
        load(false);
      }
    });
    search.addEventListener("submit", (submitted) => {
      submitted.preventDefault();
      load(false);
    });
    more.addEventListener("click", () => load(true));
    panel.querySelector(".download-csv").addEventListener("click", downloadCsv);
    const cancel = panel.querySelector(".cancel-event");
    cancel.hidden = Boolean(event.cancelled_at);
    cancel.addEventListener("click", cancelEvent);
    panel.querySelector(".delete-event").addEventListener("click", deleteEvent);
  }

  // GET /events/{id}/queue (admin): the waiting room's counts.
  async function loadQueue(eventId, stats) {
    const result = await B.api("GET", `/events/${eventId}/queue`, { token });
    if (result.ok) {
      stats.querySelectorAll("[data-count]").forEach((element) => {
        element.textContent = result.data[element.dataset.count].toLocaleString("en-US");
      });
    } else if (result.status === 401 || result.status === 403) {
      signOut("The admin token was refused; sign in again.");
    } else {
      B.say(B.describe(result), "error");
    }
  }

  // PATCH /events/{id} with the members changed on the form (the others keep their value).
  async function saveSettings(event, form, fields, initial) {
    if (!token || !form.reportValidity()) return;
    const values = saleValues(fields);
    const body = {};
    for (const [name, value] of Object.entries(values)) {
      if (JSON.stringify(value) !== JSON.stringify(initial[name])) body[name] = value;
    }
    if (!Object.keys(body).length) {
      B.say(`Nothing changed for “${event.name}”.`, "info");
      return;
    }
    const button = form.querySelector(".save-settings");
    button.disabled = true;
    button.textContent = "Saving…";
    const result = await B.api("PATCH", `/events/${event.id}`, { body, token });
    button.disabled = false;
    button.textContent = "Save settings";
    if (result.ok) {
      B.say(`Saved the on-sale settings of “${result.data.name}”.`, "success");
      // Redraw this event's rows from the answer, the form open where it was.
      const [row, settings] = eventRows(result.data);
      const oldRow = $("events-body").querySelector(`tr[data-event-id="${event.id}"]`);
      const oldSettings = $("events-body").querySelector(`tr[data-settings-for="${event.id}"]`);
      if (oldRow && oldSettings) {
        oldRow.replaceWith(row);
        oldSettings.replaceWith(settings);
        settings.querySelector("details").open = true;
        settings.querySelector("summary").focus();
      }
    } else if (result.status === 401 || result.status === 403) {
      signOut("The admin token was refused; sign in again.");
    } else {
      B.say(B.describe(result), "error");
    }
  }

  $("refresh-events").addEventListener("click", loadEvents);

  // ---- the create form ----

  const sections = $("sections");

  function addSection(values = {}) {
    const fragment = $("section-template").content.cloneNode(true);
    const row = fragment.querySelector(".section-row");
    for (const [name, value] of Object.entries(values)) {
      row.querySelector(`[name="${name}"]`).value = value;
    }
    sections.append(fragment);
    renumber();
    return row;
  }

  function renumber() {
    sections.querySelectorAll(".section-row").forEach((row, index) => {
      row.querySelector(".remove-section").setAttribute("aria-label", `Remove section ${index + 1}`);
      row.querySelector(".remove-section").hidden = sections.children.length === 1;
    });
    countTickets();
  }

  function layout() {
    return document.querySelector('input[name="layout"]:checked').value;
  }

  function showLayout() {
    const seated = layout() === "seated";
    $("sections-fieldset").hidden = !seated;
    $("ga-fieldset").hidden = seated;
    // Hidden fields must not block the form's validation.
    $("sections-fieldset").disabled = !seated;
    $("ga-fieldset").disabled = seated;
    countTickets();
  }

  function countTickets() {
    let tickets = 0;
    let text;
    if (layout() === "seated") {
      const rows = [...sections.querySelectorAll(".section-row")];
      for (const row of rows) {
        tickets +=
          (Number(row.querySelector('[name="rows"]').value) || 0) *
          (Number(row.querySelector('[name="seats_per_row"]').value) || 0);
      }
      text = `${tickets.toLocaleString("en-US")} seats in ${rows.length} section${rows.length === 1 ? "" : "s"}`;
    } else {
      tickets = Number($("ga-quantity").value) || 0;
      text = `${tickets.toLocaleString("en-US")} general-admission tickets`;
    }
    $("ticket-total").textContent = text;
  }

  function minor(value, currency) {
    return Math.round(Number(value) * 10 ** currency.exponent);
  }

  function eventBody() {
    const currency = B.currency($("event-currency").value.trim().toUpperCase());
    const body = {
      name: $("event-name").value.trim(),
      starts_at: new Date($("event-starts").value).toISOString(),
      currency: currency.code,
    };
    const venue = $("event-venue").value.trim();
    if (venue) body.venue = venue;
    // The on-sale settings: only those set (and the waiting room's only when it is on).
    const sale = saleValues(createSale);
    for (const [name, value] of Object.entries(sale)) {
      const queueOnly = name.startsWith("queue_") && name !== "queue_enabled";
      if (value === null || value === false || (queueOnly && !sale.queue_enabled)) continue;
      body[name] = value;
    }
    if ($("event-hold").value) body.hold_seconds = Number($("event-hold").value);
    if (layout() === "seated") {
      body.sections = [...sections.querySelectorAll(".section-row")].map((row) => ({
        name: row.querySelector('[name="name"]').value.trim(),
        rows: Number(row.querySelector('[name="rows"]').value),
        seats_per_row: Number(row.querySelector('[name="seats_per_row"]').value),
        price: minor(row.querySelector('[name="price"]').value, currency),
      }));
    } else {
      body.general_admission = {
        quantity: Number($("ga-quantity").value),
        price: minor($("ga-price").value, currency),
      };
    }
    return body;
  }

  // One Idempotency-Key per distinct form content: a double click or a retry after a network
  // error creates one event, not two.
  let attempt = null;

  $("event-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    if (!token || !form.reportValidity()) return;
    const body = eventBody();
    const fingerprint = JSON.stringify(body);
    if (!attempt || attempt.fingerprint !== fingerprint) {
      attempt = { fingerprint, key: B.newKey() };
    }
    const button = $("create-button");
    button.disabled = true;
    button.textContent = "Creating…";
    const result = await B.api("POST", "/events", { body, token, idempotencyKey: attempt.key });
    button.disabled = false;
    button.textContent = "Create event";
    if (result.status !== 0 && result.status < 500) attempt = null;
    if (result.ok) {
      const created = result.data;
      B.say(
        `Created “${created.name}” with ${created.ticket_count.toLocaleString("en-US")} tickets.`,
        "success",
        { href: `/shop/events/${created.id}`, text: "Open its shop page" },
      );
      loadEvents();
    } else if (result.status === 401 || result.status === 403) {
      signOut("The admin token was refused; sign in again.");
    } else {
      B.say(B.describe(result), "error");
    }
  });

  $("add-section").addEventListener("click", () => {
    const row = addSection({ rows: 5, seats_per_row: 10, price: "25.00" });
    row.querySelector('[name="name"]').focus();
  });
  sections.addEventListener("click", (event) => {
    const button = event.target.closest(".remove-section");
    if (!button) return;
    button.closest(".section-row").remove();
    renumber();
    $("add-section").focus();
  });
  sections.addEventListener("input", countTickets);
  $("ga-quantity").addEventListener("input", countTickets);
  document.querySelectorAll('input[name="layout"]').forEach((radio) => {
    radio.addEventListener("change", showLayout);
  });

  // A sensible start: one section, next week at eight in the evening.
  addSection({ name: "Stalls", rows: 8, seats_per_row: 16, price: "45.00" });
  const createSale = addSaleFields($("create-sale"));
  field(createSale, "queue_admit_per_minute").value = "60";
  const nextWeek = new Date();
  nextWeek.setDate(nextWeek.getDate() + 7);
  nextWeek.setHours(20, 0, 0, 0);
  $("event-starts").value =
    `${nextWeek.getFullYear()}-${pad(nextWeek.getMonth() + 1)}-${pad(nextWeek.getDate())}` +
    `T${pad(nextWeek.getHours())}:${pad(nextWeek.getMinutes())}`;
  showLayout();

  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    tokenWorks(saved)
      .then((works) => (works ? signIn(saved) : signOut("The saved admin token no longer works.")))
      .catch((result) => B.say(B.describe(result), "error"));
  }
})();
