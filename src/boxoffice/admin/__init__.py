"""The admin's own endpoints (the admin page's sign-in); creating events is boxoffice.events."""
