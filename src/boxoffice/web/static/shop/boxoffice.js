// The shared helpers (static/common.js: JSON API calls, problem+json, money, where tokens are
// kept) as an import. common.js stays a classic script, as the admin and booking pages load
// it; it runs before any module (deferred scripts and modules run in document order).

export const B = window.Boxoffice;
