// The event page's HTTP calls. A hold and a payment always carry an Idempotency-Key: one per
// attempt, so a retry of the same request (a double click, a network error, a 503) reuses it
// and the server makes at most one hold or one payment.

import { B } from "./boxoffice.js";

// An attempt ends only with an answer that may not come out differently next time.
const retryable = (result) =>
  result.status === 0 || result.status >= 500 || result.slug === "conflict";

export function createShopApi(eventId) {
  // The open attempt of each purpose ("hold", "pay <reservation id>"): its body and its key.
  const attempts = new Map();

  function keyFor(purpose, body) {
    const fingerprint = JSON.stringify(body);
    const attempt = attempts.get(purpose);
    if (attempt && attempt.fingerprint === fingerprint) return attempt.key;
    const key = B.newKey();
    attempts.set(purpose, { fingerprint, key });
    return key;
  }

  async function withKey(purpose, body, call) {
    const result = await call(keyFor(purpose, body));
    if (!retryable(result)) attempts.delete(purpose);
    return result;
  }

  return {
    // POST /events/{id}/reservations: body {ticket_ids | quantity [, section], customer}.
    reserve(body) {
      return withKey("hold", body, (idempotencyKey) =>
        B.api("POST", `/events/${eventId}/reservations`, { body, idempotencyKey }),
      );
    },
    // POST /reservations/{id}/checkout with the hold's token: the provider's page to pay
    // on. A second call continues the same payment, so it needs no key.
    checkout(hold) {
      return B.api("POST", `/reservations/${hold.id}/checkout`, { token: hold.token });
    },
    // DELETE /reservations/{id}: a second DELETE changes nothing, so it needs no key.
    release(hold) {
      return B.api("DELETE", `/reservations/${hold.id}`, { token: hold.token });
    },
    // GET /reservations/{id}: the server's word on a hold this tab knows of.
    reservation(known) {
      return B.api("GET", `/reservations/${known.id}`, { token: known.token });
    },
    // POST /events/{id}/queue: a place in the waiting room and its token (shown only here).
    // A second join of one customer is refused (409 already-queued), so no key is needed.
    joinQueue(customer) {
      return B.api("POST", `/events/${eventId}/queue`, { body: { customer } });
    },
    // GET /events/{id}/queue/{place}: the place this tab joined with, by its token.
    queuePlace(record) {
      return B.api("GET", `/events/${eventId}/queue/${record.place_id}`, { token: record.token });
    },
    // DELETE /events/{id}/queue/{place}: give the place up.
    leaveQueue(record) {
      return B.api("DELETE", `/events/${eventId}/queue/${record.place_id}`, {
        token: record.token,
      });
    },
  };
}
