// The admin page: sign in with the admin token, create events, see their counts.
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
    const number = (n) => n.toLocaleString("en-US");
    $("events-body").replaceChildren(
      ...events.map((event) => {
        const row = document.createElement("tr");
        const link = document.createElement("a");
        link.href = `/shop/events/${event.id}`;
        link.textContent = event.name;
        const when = document.createElement("time");
        when.dateTime = event.starts_at;
        when.textContent = B.dateFormat.format(Date.parse(event.starts_at));
        row.append(
          cell(link),
          cell(when),
          cell(event.kind === "seated" ? "Numbered seats" : "General admission"),
          cell(number(event.ticket_count), "num"),
          cell(number(event.counts.available), "num"),
          cell(number(event.counts.reserved), "num"),
          cell(number(event.counts.booked), "num"),
        );
        row.dataset.eventId = event.id;
        return row;
      }),
    );
    if (!events.length) {
      const row = document.createElement("tr");
      const empty = cell("No events yet.");
      empty.colSpan = 7;
      row.append(empty);
      $("events-body").replaceChildren(row);
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
  const nextWeek = new Date();
  nextWeek.setDate(nextWeek.getDate() + 7);
  nextWeek.setHours(20, 0, 0, 0);
  const pad = (n) => String(n).padStart(2, "0");
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
