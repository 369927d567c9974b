// The door's page: scan (or type) a ticket code, see at once whether to let its holder in.
// Scans that cannot reach the box office are queued in localStorage and sent, in order,
// once it answers again; a reload keeps them.
"use strict";

(() => {
  const B = window.Boxoffice;
  const root = document.getElementById("scanner");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const eventId = root.dataset.eventId;

  // Per event: a phone may work several doors, one token each.
  const TOKEN_KEY = `boxoffice.scanner-token.${eventId}`;
  const QUEUE_KEY = `boxoffice.scan-queue.${eventId}`;
  const EARLIER_KEY = `boxoffice.scan-earlier.${eventId}`;
  const EARLIER_KEPT = 50;
  const RETRY_MS = 3000;
  const ANSWER_MS = 8000;
  // The server's own rule (boxoffice.checkin.schemas): 16 of A–Z and 2–9; case, spaces and
  // dashes do not matter.
  const CODE = /^[A-Z2-9]{16}$/;

  const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  const dayFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });

  function normalise(text) {
    return text.replace(/[\s-]+/g, "").toUpperCase();
  }

  function when(moment) {
    const date = new Date(moment);
    if (Number.isNaN(date.getTime())) return "";
    const today = new Date().toDateString() === date.toDateString();
    return today ? timeFormat.format(date) : `${dayFormat.format(date)} ${timeFormat.format(date)}`;
  }

  function readJson(key) {
    try {
      const value = JSON.parse(localStorage.getItem(key) || "[]");
      return Array.isArray(value) ? value : [];
    } catch {
      return [];
    }
  }

  // ---- the token ----

  function token() {
    return localStorage.getItem(TOKEN_KEY) || "";
  }

  function showToken() {
    const saved = token();
    $("token-state").textContent = saved ? "Scanner token: saved" : "Scanner token: not set";
    $("token-box").open = !saved;
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const candidate = $("scanner-token").value.trim();
    if (!candidate) return;
    localStorage.setItem(TOKEN_KEY, candidate);
    $("scanner-token").value = "";
    showToken();
    B.say("Scanner token saved.", "success");
    $("ticket-code").focus();
    flush();
  });

  // ---- verdicts ----

  function seatOf(ticket) {
    if (ticket.row && ticket.seat !== null) {
      const where = `Row ${ticket.row} · Seat ${ticket.seat}`;
      return ticket.section ? `${ticket.section} · ${where}` : where;
    }
    return ticket.label;
  }

  // What an answer means at the door; `final` is false for answers worth retrying.
  function verdictOf(result) {
    const data = result.data || {};
    if (result.ok) {
      return {
        final: true, kind: "admitted", word: "ADMITTED",
        detail: `${seatOf(data)} — booking ${data.booking_code}`,
      };
    }
    switch (result.slug) {
      case "already-checked-in":
        return {
          final: true, kind: "already", word: "ALREADY IN",
          detail: `Admitted ${when(data.checked_in_at)} by ${data.checked_in_by}`,
        };
      case "ticket-not-found":
        return { final: true, kind: "refused", word: "UNKNOWN TICKET", detail: "No ticket has this code." };
      case "wrong-event":
        return {
          final: true, kind: "refused", word: "WRONG EVENT",
          detail: `This ticket is for ${data.event_name || "another event"}.`,
        };
      case "booking-cancelled":
        return { final: true, kind: "refused", word: "CANCELLED", detail: "This ticket's booking was cancelled." };
      case "invalid-request":
        return { final: true, kind: "refused", word: "NOT A TICKET CODE", detail: "Check the code and scan again." };
      default:
        break;
    }
    if (result.status === 401 || result.status === 403) {
      return {
        final: false, kind: "trouble", word: "TOKEN REFUSED", token: true,
        detail: "Save this door's scanner token (above), then scan again.",
      };
    }
    if (result.slug === "conflict") {
      return { final: false, kind: "trouble", word: "BUSY", detail: "Other doors are scanning this ticket: scan again." };
    }
    return { final: false, kind: "trouble", word: "TRY AGAIN", detail: B.describe(result) };
  }

  function show(kind, word, detail) {
    const box = $("verdict");
    box.dataset.verdict = kind;
    $("verdict-word").textContent = word;
    $("verdict-detail").textContent = detail;
  }

  // No answer at all, or the box office (or a proxy before it) is down: keep the scan.
  function unreachable(result) {
    return result.status === 0 || result.status === 502 || result.status === 503 || result.status === 504;
  }

  // Like Boxoffice.api, but a door cannot wait long: no answer within ANSWER_MS counts as
  // no connection (status 0), and the scan is queued.
  async function send(code) {
    let response;
    try {
      response = await fetch(`/events/${eventId}/checkins`, {
        method: "POST",
        headers: {
          Accept: "application/json, application/problem+json",
          "Content-Type": "application/json",
          Authorization: `Bearer ${token()}`,
        },
        body: JSON.stringify({ ticket_code: code }),
        cache: "no-store",
        credentials: "same-origin",
        signal: AbortSignal.timeout(ANSWER_MS),
      });
    } catch {
      return { ok: false, status: 0, data: null, slug: "network", retryAfter: null };
    }
    const data = await response.json().catch(() => null);
    const slug = !response.ok && data && typeof data.type === "string" ? data.type.split("/").pop() : null;
    return {
      ok: response.ok,
      status: response.status,
      data,
      slug,
      retryAfter: Number(response.headers.get("Retry-After")) || null,
    };
  }

  // ---- the offline queue ----

  function queue() {
    return readJson(QUEUE_KEY);
  }

  function enqueue(code) {
    const id = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
    localStorage.setItem(QUEUE_KEY, JSON.stringify([...queue(), { id, code, scannedAt: Date.now() }]));
    showQueue();
  }

  // By id, re-read: another tab of this door may have changed the queue meanwhile.
  function dequeue(id) {
    localStorage.setItem(QUEUE_KEY, JSON.stringify(queue().filter((item) => item.id !== id)));
    showQueue();
  }

  function showQueue() {
    const count = queue().length;
    $("queue-count").textContent = String(count);
    $("queue-line").dataset.empty = String(count === 0);
  }

  function remember(item, verdict) {
    const entry = { code: item.code, scannedAt: item.scannedAt, answeredAt: Date.now(), ...verdict };
    const kept = [entry, ...readJson(EARLIER_KEY)].slice(0, EARLIER_KEPT);
    localStorage.setItem(EARLIER_KEY, JSON.stringify(kept));
    showEarlier();
  }

  function showEarlier() {
    $("earlier").replaceChildren(
      ...readJson(EARLIER_KEY).map((entry) => {
        const item = document.createElement("li");
        item.dataset.verdict = entry.kind;
        const word = document.createElement("strong");
        word.textContent = entry.word;
        const code = document.createElement("code");
        code.textContent = entry.code;
        const detail = document.createElement("span");
        detail.textContent = `${entry.detail} (scanned ${when(entry.scannedAt)}, answered ${when(entry.answeredAt)})`;
        item.append(word, " ", code, " ", detail);
        return item;
      }),
    );
  }

  // Sends the queued scans oldest first; stops at the first that gets no definite answer
  // (still offline, busy, or the token refused) and leaves it for the next try.
  let flushing = false;

  async function drain() {
    for (;;) {
      const [item] = queue();
      if (!item || !token()) return;
      const result = await send(item.code);
      const verdict = verdictOf(result);
      if (!verdict.final) {
        if (verdict.token) B.say("The scanner token was refused: queued scans wait for a valid one.", "error");
        return;
      }
      dequeue(item.id);
      remember(item, verdict);
    }
  }

  async function flush() {
    if (flushing || queue().length === 0) return;
    flushing = true;
    try {
      // One tab of this door at a time sends the queue (where the browser can say so).
      if (navigator.locks) await navigator.locks.request(QUEUE_KEY, drain);
      else await drain();
    } finally {
      flushing = false;
      showQueue();
    }
  }

  // ---- scanning ----

  const inFlight = new Set();

  async function scan(raw) {
    const code = normalise(raw);
    if (!code) return;
    if (!CODE.test(code)) {
      show("refused", "NOT A TICKET CODE", "A ticket code is 16 letters and digits; scan again.");
      return;
    }
    if (!token()) {
      show("trouble", "NO TOKEN", "Save this door's scanner token first.");
      $("token-box").open = true;
      $("scanner-token").focus();
      return;
    }
    // A scanner that beeps twice sends one request, not a second that says ALREADY IN.
    if (inFlight.has(code)) return;
    inFlight.add(code);
    show("checking", "CHECKING…", code);
    try {
      const result = await send(code);
      if (unreachable(result)) {
        enqueue(code);
        show("queued", "QUEUED (offline)", `${code} is kept and sent once the box office answers.`);
        return;
      }
      const verdict = verdictOf(result);
      show(verdict.kind, verdict.word, verdict.detail);
      flush(); // the box office answers: whatever waits in the queue can go now
    } finally {
      inFlight.delete(code);
    }
  }

  $("scan-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("ticket-code");
    const raw = input.value;
    input.value = "";
    input.focus();
    scan(raw);
  });

  // ---- the camera, where the browser can read barcodes ----

  // One code per start: the camera stops at the first code it reads (or when asked to).
  async function startCamera() {
    const button = $("camera-button");
    const video = $("camera");
    const formats = await window.BarcodeDetector.getSupportedFormats().catch(() => []);
    if (!formats.includes("qr_code")) {
      B.say("This browser cannot read QR codes: type the code instead.", "error");
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    } catch {
      B.say("The camera is not available (it needs permission, and HTTPS).", "error");
      return;
    }
    const detector = new window.BarcodeDetector({ formats: ["qr_code"] });
    const stop = () => {
      stream.getTracks().forEach((track) => track.stop());
      video.hidden = true;
      button.textContent = "Scan with the camera";
      button.onclick = startCamera;
    };
    button.textContent = "Stop the camera";
    button.onclick = stop;
    video.srcObject = stream;
    video.hidden = false;
    await video.play();
    const look = async () => {
      if (video.hidden) return;
      const found = await detector.detect(video).catch(() => []);
      if (found.length) {
        stop();
        scan(found[0].rawValue);
      } else {
        requestAnimationFrame(look);
      }
    };
    look();
  }

  if ("BarcodeDetector" in window && navigator.mediaDevices) {
    $("camera-button").hidden = false;
    $("camera-button").onclick = startCamera;
  }

  // ---- start ----

  window.addEventListener("online", flush);
  window.addEventListener("storage", (event) => {
    if (event.key === QUEUE_KEY) showQueue();
    if (event.key === EARLIER_KEY) showEarlier();
    if (event.key === TOKEN_KEY) showToken();
  });
  setInterval(flush, RETRY_MS);
  showToken();
  showQueue();
  showEarlier();
  $("ticket-code").focus();
  flush();
})();
