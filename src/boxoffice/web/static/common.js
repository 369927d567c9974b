// Shared by the pages: JSON API calls, problem+json, money, where tokens are kept.
"use strict";

window.Boxoffice = (() => {
  // A hold's token is kept in this tab's sessionStorage only: never in a URL, a cookie or a
  // log line, and gone when the tab closes. It is sent solely as `Authorization: Bearer`.
  const HOLDS = "boxoffice.holds";

  function readHolds() {
    try {
      return JSON.parse(sessionStorage.getItem(HOLDS) || "{}");
    } catch {
      return {};
    }
  }

  const holds = {
    save(reservationId, record) {
      const all = readHolds();
      all[reservationId] = { ...all[reservationId], ...record };
      sessionStorage.setItem(HOLDS, JSON.stringify(all));
    },
    get(reservationId) {
      return readHolds()[reservationId] || null;
    },
    forget(reservationId) {
      const all = readHolds();
      delete all[reservationId];
      sessionStorage.setItem(HOLDS, JSON.stringify(all));
    },
    // The hold this tab is paying for on an event's page, if any.
    activeFor(eventId) {
      const all = readHolds();
      const id = Object.keys(all).find((key) => all[key].eventId === eventId && all[key].active);
      return id ? { id, ...all[id] } : null;
    },
  };

  // crypto.randomUUID needs a secure context; a LAN address over plain HTTP is not one.
  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  // One JSON API call. Never throws: a network failure comes back as status 0.
  async function api(method, path, { body, token, idempotencyKey } = {}) {
    const headers = { Accept: "application/json, application/problem+json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = `Bearer ${token}`;
    if (idempotencyKey) headers["Idempotency-Key"] = idempotencyKey;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "same-origin",
      });
    } catch {
      return { ok: false, status: 0, data: null, slug: "network", retryAfter: null, date: null };
    }
    let data = null;
    if (response.status !== 204) {
      data = await response.json().catch(() => null);
    }
    const slug = !response.ok && data && typeof data.type === "string"
      ? data.type.split("/").pop()
      : null;
    return {
      ok: response.ok,
      status: response.status,
      data,
      slug,
      retryAfter: Number(response.headers.get("Retry-After")) || null,
      // The server's clock, to count down a hold without trusting this computer's clock.
      date: Date.parse(response.headers.get("Date") || "") || null,
    };
  }

  // The sentence to show for an answer the page has no better words for.
  function describe(result) {
    if (result.status === 0) return "No connection to the box office. Check your network and try again.";
    if (result.slug === "service-unavailable" || result.status === 503) {
      const wait = result.retryAfter || 2;
      return `The box office is very busy right now. Please try again in ${wait} second${wait === 1 ? "" : "s"}.`;
    }
    if (result.data && result.data.detail) return capitalise(result.data.detail) + ".";
    return `Something went wrong (HTTP ${result.status}). Please try again.`;
  }

  function capitalise(text) {
    return text.charAt(0).toUpperCase() + text.slice(1).replace(/\.$/, "");
  }

  // Money as the server writes it (boxoffice.web.views.Currency.format).
  function money(currency) {
    return (minor) => {
      const scale = 10 ** currency.exponent;
      const whole = Math.floor(minor / scale);
      const fraction = String(minor % scale).padStart(currency.exponent, "0");
      const grouped = whole.toLocaleString("en-US");
      return currency.symbol + grouped + (currency.exponent ? "." + fraction : "");
    };
  }

  // A currency by its code, by the rules the server renders in #currency-rules.
  function currency(code) {
    const element = document.getElementById("currency-rules");
    const rules = element ? JSON.parse(element.textContent) : {};
    const exponent = (rules.noMinorUnits || []).includes(code)
      ? 0
      : (rules.threeMinorDigits || []).includes(code) ? 3 : 2;
    return { code, exponent, symbol: (rules.symbols || {})[code] || `${code}\u00a0` };
  }

  // A message in the page's live region: read out by screen readers, shown to everyone.
  function say(text, kind = "info", link = null) {
    const box = document.getElementById("message");
    if (!box) return;
    box.dataset.kind = kind;
    box.textContent = text;
    if (link) {
      const anchor = document.createElement("a");
      anchor.href = link.href;
      anchor.textContent = link.text;
      box.append(" ", anchor);
    }
  }

  function listOf(words) {
    if (words.length <= 1) return words.join("");
    return `${words.slice(0, -1).join(", ")} and ${words[words.length - 1]}`;
  }

  // Start times in the buyer's own time zone (the server writes UTC).
  const dateFormat = new Intl.DateTimeFormat(undefined, {
    weekday: "short", day: "numeric", month: "short", year: "numeric",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  });

  function localiseTimes(root = document) {
    root.querySelectorAll("time[data-local]").forEach((element) => {
      const moment = Date.parse(element.getAttribute("datetime") || "");
      if (!Number.isNaN(moment)) element.textContent = dateFormat.format(moment);
    });
  }

  document.addEventListener("DOMContentLoaded", () => localiseTimes());

  return { holds, newKey, api, describe, money, currency, say, listOf, localiseTimes, dateFormat };
})();
