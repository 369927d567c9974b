// The live feed: GET /events/{id}/stream (server-sent events). A `snapshot` gives every
// ticket's status, a `tickets` message the ones that changed since.
// (Not named stream.js: tests/test_browser.py slows a buyer's live updates by blocking
// "*/stream", and a blocked module would stop the whole page.)

// A snapshot's `runs`: from ticket id `first` on, a status letter and how many ids in a row
// have it (no number: one); `-` skips ids that are not tickets of this event.
const RUN_STATUS = { a: "available", r: "reserved", b: "booked" };

export function* snapshotStatuses(snapshot) {
  let id = snapshot.first;
  for (const [, letter, digits] of snapshot.runs.matchAll(/([a-z-])(\d*)/g)) {
    const count = digits ? Number(digits) : 1;
    const status = RUN_STATUS[letter];
    if (status) for (let i = 0; i < count; i += 1) yield [id + i, status];
    id += count;
  }
}

// Calls `onLive(state)` as the connection comes and goes ("connecting", "on",
// "reconnecting", "off") and `onStatuses(pairs, snapshot)` with [ticket id, status] pairs.
export function connect(eventId, { onLive, onStatuses }) {
  if (!("EventSource" in window)) return;
  onLive("connecting");
  const source = new EventSource(`/events/${eventId}/stream`);
  source.addEventListener("open", () => onLive("on"));
  source.addEventListener("snapshot", (message) => {
    onLive("on");
    onStatuses(snapshotStatuses(JSON.parse(message.data)), true);
  });
  source.addEventListener("tickets", (message) => {
    onStatuses(JSON.parse(message.data).tickets, false);
  });
  source.addEventListener("error", () => {
    // The browser retries dropped connections itself; an HTTP error answer ends the stream.
    if (source.readyState === EventSource.CLOSED) {
      onLive("off");
      setTimeout(() => connect(eventId, { onLive, onStatuses }), 5000);
    } else {
      onLive("reconnecting");
    }
  });
}
